"""The GGUF converter read back with gguf's own reader: metadata equals the Hugging Face config, tensors hold
the model's weights under llama.cpp's names (a table written out here), both vocabularies as their tokenizers
define them, and clear refusals of what it cannot convert."""
import json

import gguf
import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from export.gguf import ConversionError, convert
from export.gguf_verify import metadata
from export.gguf_vocab import VocabError
from tests.test_export_gguf_support import (CHAT_TEMPLATE, bpe_tokenizer_dir, model_dir, sample_texts,
                                            sentencepiece_tokenizer_dir)

# transformers name → llama.cpp name, per layer (llama.cpp's src/llama-arch.cpp names)
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def gguf_name(hf_name):
    if hf_name in TOP_NAMES:
        return TOP_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{LAYER_NAMES[rest]}"


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def sp_dir():
    return sentencepiece_tokenizer_dir()


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_metadata_read_back_equals_the_hf_config(tmp_path, sp_dir, arch):
    folder, model, _ = model_dir(tmp_path, sp_dir, arch=arch, hidden=64, intermediate=96, layers=3, heads=4,
                                 kv_heads=2, rope_theta=500000.0, rms_norm_eps=1e-5)
    keys = metadata(convert(folder, tmp_path / "m.gguf").path)
    assert keys["general.architecture"] == arch
    assert keys["general.file_type"] == 1   # llama_ftype MOSTLY_F16
    assert keys[f"{arch}.context_length"] == 256
    assert keys[f"{arch}.embedding_length"] == 64
    assert keys[f"{arch}.block_count"] == 3
    assert keys[f"{arch}.feed_forward_length"] == 96
    assert keys[f"{arch}.attention.head_count"] == 4
    assert keys[f"{arch}.attention.head_count_kv"] == 2
    assert keys[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert keys[f"{arch}.rope.freq_base"] == 500000.0
    assert model.config.rope_parameters["rope_theta"] == 500000.0   # the config really says so
    if arch == "llama":
        assert keys["llama.rope.dimension_count"] == 16
        assert keys["llama.vocab_size"] == model.config.vocab_size


def test_f32_tensors_equal_the_weights_under_llama_cpp_names(tmp_path, sp_dir):
    folder, model, _ = model_dir(tmp_path, sp_dir, tie=False)
    written = tensors(convert(folder, tmp_path / "m.gguf", "f32").path)
    state = model.state_dict()
    assert sorted(written) == sorted(gguf_name(name) for name in state)
    for name, weight in state.items():
        tensor = written[gguf_name(name)]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(tensor.data, weight.numpy(), err_msg=name)


def test_f16_rounds_matrices_and_keeps_norms_and_biases_in_f32(tmp_path, sp_dir):
    folder, model, _ = model_dir(tmp_path, sp_dir)
    written = tensors(convert(folder, tmp_path / "m.gguf", "f16").path)
    for name, weight in model.state_dict().items():
        if name == "lm_head.weight":
            continue   # tied: no output tensor (checked below)
        tensor = written[gguf_name(name)]
        if weight.dim() == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32, name
            np.testing.assert_array_equal(tensor.data, weight.numpy())
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16, name
            np.testing.assert_array_equal(tensor.data, weight.numpy().astype(np.float16))
    assert "output.weight" not in written
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= set(written)


def test_bf16_holds_the_weights_rounded_as_torch_rounds_them(tmp_path, sp_dir):
    folder, model, _ = model_dir(tmp_path, sp_dir)
    written = tensors(convert(folder, tmp_path / "m.gguf", "bf16").path)
    weight = model.state_dict()["model.layers.1.mlp.up_proj.weight"]
    tensor = written["blk.1.ffn_up.weight"]
    assert tensor.tensor_type == gguf.GGMLQuantizationType.BF16
    np.testing.assert_array_equal(gguf.dequantize(tensor.data, tensor.tensor_type).reshape(weight.shape),
                                  weight.bfloat16().float().numpy())


def test_llama_q_and_k_rows_are_interleaved_for_llama_cpp_rope(tmp_path, sp_dir):
    folder, model, _ = model_dir(tmp_path, sp_dir, arch="llama", hidden=32, heads=4, kv_heads=2)
    written = tensors(convert(folder, tmp_path / "m.gguf", "f32").path)
    for projection, heads in (("q", 4), ("k", 2)):
        hf = model.state_dict()[f"model.layers.0.self_attn.{projection}_proj.weight"].numpy()
        got = written[f"blk.0.attn_{projection}.weight"].data
        half = 32 // 4 // 2   # head_dim / 2
        for head in range(heads):
            for i in range(half):   # transformers rotates halves (x_i, x_{i+d/2}); llama.cpp adjacent pairs
                np.testing.assert_array_equal(got[head * 2 * half + 2 * i], hf[head * 2 * half + i])
                np.testing.assert_array_equal(got[head * 2 * half + 2 * i + 1], hf[head * 2 * half + half + i])


def test_sentencepiece_vocabulary_keeps_pieces_scores_and_types(tmp_path, sp_dir):
    folder, model, tokenizer = model_dir(tmp_path, sp_dir, extra_rows=5)
    reader = gguf.GGUFReader(convert(folder, tmp_path / "m.gguf").path)
    field = lambda key: reader.get_field(key).contents()   # noqa: E731
    processor = spm.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))
    n = processor.vocab_size()
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    scores = field("tokenizer.ggml.scores")
    assert field("tokenizer.ggml.model") == "llama"
    assert len(tokens) == len(types) == len(scores) == model.config.vocab_size == n + 5
    assert tokens[:n] == [processor.id_to_piece(i) for i in range(n)]
    assert scores[:n] == pytest.approx([processor.get_score(i) for i in range(n)])
    by_piece = dict(zip(tokens, types))
    assert by_piece["<unk>"] == gguf.TokenType.UNKNOWN
    assert by_piece["<s>"] == by_piece["</s>"] == by_piece["<pad>"] == gguf.TokenType.CONTROL
    assert by_piece["<|im_start|>"] == by_piece["<|im_end|>"] == gguf.TokenType.USER_DEFINED
    assert by_piece["<0x41>"] == by_piece["<0xE3>"] == gguf.TokenType.BYTE
    assert by_piece[processor.id_to_piece(processor.piece_to_id("の"))] == gguf.TokenType.NORMAL
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, n + 5)] and set(types[n:]) == {gguf.TokenType.UNUSED}
    assert [field(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")] == [2, 3, 1, 0]
    assert field("tokenizer.ggml.add_bos_token") is False and field("tokenizer.ggml.add_eos_token") is False
    assert field("tokenizer.ggml.add_space_prefix") is False
    assert field("tokenizer.chat_template") == CHAT_TEMPLATE


def test_bpe_vocabulary_keeps_byte_level_tokens_merges_and_added_specials(tmp_path):
    bpe = bpe_tokenizer_dir()
    folder, model, tokenizer = model_dir(tmp_path, bpe, extra_rows=3, tie=False)
    reader = gguf.GGUFReader(convert(folder, tmp_path / "m.gguf").path)
    field = lambda key: reader.get_field(key).contents()   # noqa: E731
    saved = json.loads((bpe / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = saved["model"]["vocab"]
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert (field("tokenizer.ggml.model"), field("tokenizer.ggml.pre")) == ("gpt2", "qwen2")
    assert tokens[: len(vocab)] == sorted(vocab, key=vocab.get)   # byte-level spelling, e.g. "ãģ"
    assert field("tokenizer.ggml.merges") == [" ".join(pair) for pair in saved["model"]["merges"]]
    added = {t["content"]: t["id"] for t in saved["added_tokens"]}
    assert {tokens[i]: types[i] for i in added.values()} == dict.fromkeys(added, gguf.TokenType.CONTROL)
    assert tokens[len(tokenizer):] == [f"[PAD{i}]" for i in range(len(tokenizer), len(tokenizer) + 3)]
    assert field("tokenizer.ggml.eos_token_id") == added["<|im_end|>"]
    assert field("tokenizer.ggml.padding_token_id") == added["<|endoftext|>"]
    assert reader.get_field("tokenizer.ggml.bos_token_id") is None
    assert reader.get_field("tokenizer.ggml.scores") is None
    assert reader.get_field("tokenizer.ggml.add_space_prefix") is None


def test_an_unsupported_architecture_is_refused_naming_the_supported_ones(tmp_path, sp_dir):
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=1200)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConversionError, match=r"GPT2LMHeadModel is not supported; supported: LlamaForCausalLM, "
                                              r"Qwen2ForCausalLM"):
        convert(tmp_path / "gpt2", tmp_path / "m.gguf", tokenizer_dir=sp_dir)


def test_rope_scaling_and_unknown_types_are_refused(tmp_path, sp_dir):
    folder, _, _ = model_dir(tmp_path, sp_dir, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                "rope_theta": 10000.0})
    with pytest.raises(ConversionError, match="RoPE scaling 'linear' is not supported"):
        convert(folder, tmp_path / "m.gguf")
    with pytest.raises(ConversionError, match="unknown GGUF type 'q4_0'; supported: bf16, f16, f32"):
        convert(folder, tmp_path / "m.gguf", "q4_0")


def test_a_tokenizer_model_of_another_tokenizer_is_refused(tmp_path, sp_dir):
    folder, _, _ = model_dir(tmp_path, sp_dir)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    proto.pieces[300].piece = "別物"
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    with pytest.raises(VocabError, match=r"tokenizer.model does not belong to this tokenizer: id 300 is '別物'"):
        convert(folder, tmp_path / "m.gguf")


def test_a_bpe_with_a_pre_tokenizer_llama_cpp_is_not_told_about_is_refused(tmp_path, sp_dir):
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)   # GPT-2's own regex inside
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(sample_texts()[:50], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>").save_pretrained(tmp_path / "tok")
    folder, _, _ = model_dir(tmp_path, tmp_path / "tok")
    with pytest.raises(VocabError, match="unknown BPE pre-tokenizer .* known here: llama-bpe, qwen2"):
        convert(folder, tmp_path / "m.gguf")


def test_missing_weights_are_a_clear_error(tmp_path, sp_dir):
    folder, _, _ = model_dir(tmp_path, sp_dir)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="no model.safetensors"):
        convert(folder, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_a_sentencepiece_tokenizer_saved_without_its_model_file_needs_the_tokenizer_folder(tmp_path, sp_dir):
    """The training stages save the tokenizer with save_pretrained, which leaves tokenizer.model out."""
    folder, _, _ = model_dir(tmp_path, sp_dir)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(VocabError, match="no tokenizer.model was found beside it"):
        convert(folder, tmp_path / "m.gguf")
    with_folder = gguf.GGUFReader(convert(folder, tmp_path / "m.gguf", tokenizer_dir=sp_dir).path)
    assert with_folder.get_field("tokenizer.ggml.model").contents() == "llama"
