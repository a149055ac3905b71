"""The MLC export of tiny Qwen2 models: names, shapes and dtypes read back by tvm's reader, the q/k/v and
gate/up concatenation order, a model whose weights are exactly on the 4-bit grid (so the export is
lossless and the forward passes must agree exactly), a trained model's top-1 agreement, mlc-chat-config.json,
the model library plan, and the verifier catching wrong codes, corrupted and truncated shards."""
import hashlib
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from export.mlc import export_mlc
from export.mlc_cache import CacheError
from export.mlc_config import mlc_model_config, stock_library
from taid.vocab import load_tokenizer
from export.mlc_format import INDEX_FILES, QUANTIZATIONS
from export.mlc_quant import dequantize, error_bound
from export.mlc_verify import failed_checks, verify_mlc
from stages.tokenizer import train_sentencepiece

TEXTS = ["今日は良い天気です。", "東京から大阪まで新幹線で行きます。", "猫が庭で寝ています。", "明日は雨が降るでしょう。",
         "図書館で本を三冊借りました。", "駅の前に新しい店ができました。"] * 20
CHATML = ("{%- if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nあなたは親切なアシスタントです。"
          "<|im_end|>\\n' }}{%- endif %}{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + "
          "m['content'] + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{%- endif %}")
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = 64, 96, 4, 2


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer = train_sentencepiece(TEXTS, 400, out, threads=1)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(out)
    return out


def save_model(model, tokenizer_dir, out, generation=None):
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    if generation:
        path = out / "generation_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **generation}))
    return out


def tiny_qwen2(vocab_size, tie=True, layers=1, seed=0, std=0.02):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         max_position_embeddings=256, rope_theta=1000000.0, tie_word_embeddings=tie, initializer_range=std,
                         eos_token_id=3, bos_token_id=2, pad_token_id=0)
    return Qwen2ForCausalLM(config).eval()


def on_the_grid(model, seed=0):
    """Give every weight matrix values (q − 7)·s with a power-of-two s per group of 32 and a ±7 in every
    group, norms 1 + k/8 and biases k/64: all exact in float16 and bfloat16, so q4 export loses nothing."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = tuple(parameter.shape)
            if len(shape) == 2:
                codes = rng.integers(-7, 8, size=shape)
                codes[:, ::32] = rng.choice([-7, 7], size=codes[:, ::32].shape)
                scales = np.repeat(2.0 ** -rng.integers(3, 7, size=(shape[0], shape[1] // 32)), 32, axis=1)
                parameter.copy_(torch.from_numpy(codes * scales))
            elif "norm" in name:
                parameter.copy_(torch.from_numpy(1 + rng.integers(-4, 5, size=shape) / 8))
            else:
                parameter.copy_(torch.from_numpy(rng.integers(-8, 9, size=shape) / 64))
    return model


def token_rows(model_dir):
    tokenizer = load_tokenizer(model_dir)
    return [np.array(tokenizer(text)["input_ids"]) for text in ["猫が庭で寝ています。今日は良い天気です。",
                                                               "東京から大阪まで新幹線で行きます。明日は雨が降るでしょう。"]]


@pytest.fixture(scope="module")
def grid_model(tokenizer_dir, tmp_path_factory):
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    root = tmp_path_factory.mktemp("grid")
    return save_model(on_the_grid(tiny_qwen2(vocab, tie=False)), tokenizer_dir, root / "model",
                      generation={"temperature": 0.7, "top_p": 0.8})


def read_with_tvm(out_dir):
    import tvm
    from tvm.contrib import tvmjs
    loaded, _ = tvmjs.load_tensor_cache(str(out_dir / "tensor-cache.json"), tvm.cpu())
    return {name: array.numpy() for name, array in loaded.items()}


def test_names_shapes_and_dtypes_are_mlc_qwen2s(grid_model, tmp_path):
    export_mlc(grid_model, tmp_path / "out", "q4f16_1")
    tensors = read_with_tvm(tmp_path / "out")
    vocab, qkv = len(load_tokenizer(grid_model)), (HEADS + 2 * KV_HEADS) * HIDDEN // HEADS
    expected = {   # written from mlc_llm's qwen2 model and group quantization: [N, K] → [N, K/8], [N, K/32]
        "model.embed_tokens.q_weight": ("uint32", (vocab, 8)), "model.embed_tokens.q_scale": ("float16", (vocab, 2)),
        "model.layers.0.self_attn.c_attn.q_weight": ("uint32", (qkv, 8)),
        "model.layers.0.self_attn.c_attn.q_scale": ("float16", (qkv, 2)),
        "model.layers.0.self_attn.c_attn.bias": ("float16", (qkv,)),
        "model.layers.0.self_attn.o_proj.q_weight": ("uint32", (64, 8)),
        "model.layers.0.self_attn.o_proj.q_scale": ("float16", (64, 2)),
        "model.layers.0.mlp.gate_up_proj.q_weight": ("uint32", (192, 8)),
        "model.layers.0.mlp.gate_up_proj.q_scale": ("float16", (192, 2)),
        "model.layers.0.mlp.down_proj.q_weight": ("uint32", (64, 12)),
        "model.layers.0.mlp.down_proj.q_scale": ("float16", (64, 3)),
        "model.layers.0.input_layernorm.weight": ("float16", (64,)),
        "model.layers.0.post_attention_layernorm.weight": ("float16", (64,)),
        "model.norm.weight": ("float16", (64,)),
        "lm_head.q_weight": ("uint32", (vocab, 8)), "lm_head.q_scale": ("float16", (vocab, 2)),
    }
    assert {name: (a.dtype.name, a.shape) for name, a in tensors.items()} == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "mlc-chat-config.json", "ndarray-cache.json", "params_shard_0.bin", "tensor-cache.json",
        "tokenizer.json", "tokenizer_config.json", "webllm.json"]


def test_qkv_and_gate_up_are_concatenated_in_mlc_order(grid_model, tmp_path):
    export_mlc(grid_model, tmp_path / "out", "q4f32_1", f32_format="raw")
    tensors, spec = read_with_tvm(tmp_path / "out"), QUANTIZATIONS["q4f32_1"]
    hf = {n: p.detach().numpy() for n, p in Qwen2ForCausalLM.from_pretrained(grid_model).named_parameters()}
    c_attn = dequantize(tensors["model.layers.0.self_attn.c_attn.q_weight"],
                        tensors["model.layers.0.self_attn.c_attn.q_scale"], HIDDEN, spec)
    attn = "model.layers.0.self_attn."
    assert np.array_equal(c_attn, np.concatenate([hf[attn + f"{x}_proj.weight"] for x in "qkv"]))   # on the grid
    assert np.array_equal(tensors[attn + "c_attn.bias"], np.concatenate([hf[attn + f"{x}_proj.bias"] for x in "qkv"]))
    gate_up = dequantize(tensors["model.layers.0.mlp.gate_up_proj.q_weight"],
                         tensors["model.layers.0.mlp.gate_up_proj.q_scale"], HIDDEN, spec)
    assert np.array_equal(gate_up[:INTERMEDIATE], hf["model.layers.0.mlp.gate_proj.weight"])
    assert np.array_equal(gate_up[INTERMEDIATE:], hf["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("quant", ["q4f16_1", "q4f32_1"])
def test_a_model_on_the_grid_exports_losslessly_and_every_check_passes(grid_model, tmp_path, quant):
    export_mlc(grid_model, tmp_path / "out", quant)
    results = verify_mlc(grid_model, tmp_path / "out", quant, token_rows(grid_model))
    assert failed_checks(results) == []
    assert results["weights"]["mean_abs_error"] == 0 and results["weights"]["clipped_elements"] == 0
    forward = results["forward"]
    assert forward["top1_agreement"] == 1.0 and forward["max_abs_logit_diff"] == 0.0
    assert forward["perplexity"] == forward["perplexity_reference"]
    assert results["chat_template"] == {"passed": True, "compared": True}
    assert results["tvm_reader"]["passed"]


def trained_model(tokenizer_dir, out, steps=60):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_qwen2(len(tokenizer), tie=True, seed=1).train()
    rows = [torch.tensor(tokenizer("".join(TEXTS[i:i + 6]))["input_ids"][:48]) for i in range(6)]
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_model(model.eval(), tokenizer_dir, out)


def test_a_trained_model_keeps_its_top1_predictions(tokenizer_dir, tmp_path):
    model_dir = trained_model(tokenizer_dir, tmp_path / "model")
    export_mlc(model_dir, tmp_path / "out", "q4f32_1")
    tokenizer = load_tokenizer(model_dir)
    rows = [np.array(tokenizer("".join(TEXTS[i::5][:5]))["input_ids"]) for i in range(5)]
    results = verify_mlc(model_dir, tmp_path / "out", "q4f32_1", rows, min_top1_agreement=0.9)
    print("trained tiny model, q4f32_1:", results["forward"])
    assert failed_checks(results) == []
    assert results["weights"]["max_error_in_scales"] <= 0.5


def test_chat_config_fields(grid_model, tmp_path):
    summary = export_mlc(grid_model, tmp_path / "out", "q4f16_1", generation={"repetition_penalty": 1.1})
    chat = json.loads((tmp_path / "out" / "mlc-chat-config.json").read_text())
    tokenizer = load_tokenizer(grid_model)
    im_end, eos = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("</s>")
    assert (chat["model_type"], chat["quantization"], chat["context_window_size"]) == ("qwen2", "q4f16_1", 256)
    assert chat["model_config"]["rope_theta"] == 1000000.0 and chat["model_config"]["tie_word_embeddings"] is False
    assert chat["model_config"]["head_dim"] == 16 and chat["prefill_chunk_size"] == 256
    assert chat["tokenizer_files"] == ["tokenizer.json", "tokenizer_config.json"]
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (grid_model / "tokenizer.json").read_bytes()
    # generation_config.json's temperature and top_p, params' repetition penalty, mlc_llm's defaults
    assert (chat["temperature"], chat["top_p"], chat["repetition_penalty"], chat["presence_penalty"]) == (0.7, 0.8, 1.1, 0.0)
    template = chat["conv_template"]
    assert template["system_message"] == "あなたは親切なアシスタントです。"   # the HF template's default
    assert template["stop_token_ids"] == [im_end, eos] and template["stop_str"] == ["<|im_end|>", "</s>"]
    assert summary["conv_template"]["stop_token_ids"] == [im_end, eos]
    assert chat["tokenizer_info"]["token_postproc_method"] == "byte_fallback"


def test_a_chat_template_that_renders_otherwise_fails_the_check(grid_model, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for path in grid_model.iterdir():
        (model_dir / path.name).write_bytes(path.read_bytes())
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = CHATML.replace("'\\n' + m['content']", "': ' + m['content']")
    tokenizer.save_pretrained(model_dir)
    export_mlc(model_dir, tmp_path / "out", "q4f16_1")
    results = verify_mlc(model_dir, tmp_path / "out", "q4f16_1", token_rows(model_dir), tvm_reader=False)
    assert failed_checks(results) == ["chat_template"]
    assert "<|im_start|>user: " in results["chat_template"]["hf"]


def test_stock_library_for_qwen2_1_5b_shapes_and_a_compile_command_otherwise(grid_model, tmp_path):
    qwen2_1_5b = {"hidden_act": "silu", "hidden_size": 1536, "intermediate_size": 8960, "num_attention_heads": 12,
                  "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                  "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "vocab_size": 151936,
                  "tie_word_embeddings": True, "max_position_embeddings": 32768}
    config = mlc_model_config(qwen2_1_5b)
    assert stock_library(config, "q4f32_1") == "Qwen2-1.5B-Instruct-q4f32_1_cs1k-webgpu.wasm"
    assert stock_library(dict(config, num_hidden_layers=27), "q4f32_1") is None
    summary = export_mlc(grid_model, tmp_path / "out", "q4f32_1", final_dir=tmp_path / "published")
    assert summary["library"] == {
        "file": "tsubame-q4f32_1-webgpu.wasm",
        "compile_command": f"mlc_llm compile {tmp_path}/published/mlc-chat-config.json --device webgpu "
                           f"-o {tmp_path}/published/tsubame-q4f32_1-webgpu.wasm"}
    descriptor = json.loads((tmp_path / "out" / "webllm.json").read_text())
    assert descriptor == {"model_id": "tsubame-q4f32_1", "model_lib": {"file": "tsubame-q4f32_1-webgpu.wasm"},
                          "overrides": {"context_window_size": 256}, "required_features": []}


def test_unsupported_models_are_refused_clearly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"model_type 'llama' has no MLC export here; supported: qwen2"):
        export_mlc(tmp_path, tmp_path / "out", "q4f16_1")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "rope_parameters": {"rope_type": "yarn"}}))
    with pytest.raises(ValueError, match="rope type 'yarn'"):
        export_mlc(tmp_path, tmp_path / "out", "q4f16_1")
    with pytest.raises(ValueError, match="unknown MLC quantization 'q3f16_1'"):
        export_mlc(tmp_path, tmp_path / "out", "q3f16_1")


# -- the verifier against damaged exports

def rewrite_index_md5(out_dir, shard_name):
    digest = hashlib.md5((out_dir / shard_name).read_bytes()).hexdigest()
    for name in INDEX_FILES:
        index = json.loads((out_dir / name).read_text())
        for shard in index["records"]:
            if shard["dataPath"] == shard_name:
                shard["md5sum"] = digest
        (out_dir / name).write_text(json.dumps(index))


def flip_code(out_dir, tensor):
    index = json.loads((out_dir / "tensor-cache.json").read_text())
    for shard in index["records"]:
        for record in shard["records"]:
            if record["name"] == tensor:
                path = out_dir / shard["dataPath"]
                data = bytearray(path.read_bytes())
                data[record["byteOffset"]] ^= 0x01
                path.write_bytes(bytes(data))
                return shard["dataPath"]


def test_a_wrong_code_under_a_valid_md5_fails_the_weights_check(grid_model, tmp_path):
    out = tmp_path / "out"
    export_mlc(grid_model, out, "q4f16_1")
    rewrite_index_md5(out, flip_code(out, "model.layers.0.mlp.down_proj.q_weight"))
    results = verify_mlc(grid_model, out, "q4f16_1", token_rows(grid_model), tvm_reader=False)
    assert results["weights"]["mismatched"] == ["model.layers.0.mlp.down_proj"]
    assert "weights" in failed_checks(results)


def test_corrupted_and_truncated_shards_are_detected(grid_model, tmp_path):
    out = tmp_path / "out"
    export_mlc(grid_model, out, "q4f16_1")
    flip_code(out, "model.norm.weight")
    with pytest.raises(CacheError, match=r"params_shard_0\.bin: md5 .* \(corrupted\)"):
        verify_mlc(grid_model, out, "q4f16_1", token_rows(grid_model))
    export_mlc(grid_model, out, "q4f16_1")
    shard = out / "params_shard_0.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CacheError, match=r"params_shard_0\.bin: \d+ bytes, the index says \d+ \(truncated"):
        verify_mlc(grid_model, out, "q4f16_1", token_rows(grid_model))


def test_bound_of_every_stored_weight(grid_model, tmp_path):
    """On a model off the grid (random weights) every element is within the stated bound."""
    vocab = len(load_tokenizer(grid_model))
    model_dir = save_model(tiny_qwen2(vocab, tie=True, seed=3, std=0.3), grid_model, tmp_path / "model")
    export_mlc(model_dir, tmp_path / "out", "q4f16_1")
    tensors, spec = read_with_tvm(tmp_path / "out"), QUANTIZATIONS["q4f16_1"]
    original = Qwen2ForCausalLM.from_pretrained(model_dir).model.embed_tokens.weight.detach().numpy()
    q_weight, q_scale = tensors["model.embed_tokens.q_weight"], tensors["model.embed_tokens.q_scale"]
    error = np.abs(original - dequantize(q_weight, q_scale, HIDDEN, spec))
    assert np.all(error <= error_bound(original, q_scale, spec)) and error.max() > 0
    assert np.all(q_scale == (np.abs(original).reshape(vocab, 2, 32).max(-1) / 7).astype(np.float16))


def test_a_tensor_missing_from_the_index_fails_the_index_check(grid_model, tmp_path):
    out = tmp_path / "out"
    export_mlc(grid_model, out, "q4f16_1")
    for name in INDEX_FILES:
        index = json.loads((out / name).read_text())
        records = index["records"][0]["records"]
        index["records"][0]["records"] = [r for r in records if r["name"] != "model.norm.weight"]
        (out / name).write_text(json.dumps(index))
    results = verify_mlc(grid_model, out, "q4f16_1", token_rows(grid_model))
    assert failed_checks(results) == ["index"] and results["index"]["missing"] == ["model.norm.weight"]
