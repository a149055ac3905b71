"""Exported files in llama.cpp itself: token ids equal the Hugging Face tokenizer's for Japanese text (both
tokenizer kinds, chat template and special tokens included), logits equal the model's, quantized files
follow llama.cpp's row-size rules and stay close to the weights, and damaged files are caught."""
import shutil

import gguf
import numpy as np
import pytest
import torch
from llama_cpp import Llama

from export.gguf import convert, quantize, tensor_types
from export.gguf_pipeline import heldout_rows
from export.gguf_verify import (VerificationError, check_checksums, check_structure, open_llama, score_rows,
                                write_checksums)
from tests.test_export_gguf_support import (JAPANESE, SAMPLE, bpe_tokenizer_dir, model_dir,
                                            sentencepiece_tokenizer_dir)

K_TYPES = {"Q4_K", "Q5_K", "Q6_K"}
BLOCK_32_TYPES = {"Q5_0", "Q5_1", "Q8_0"}   # where llama.cpp puts a tensor a K-quant cannot hold


def texts_for(tokenizer):
    chat = [{"role": "system", "content": "丁寧に答えてください。"},
            {"role": "user", "content": "富士山の高さは？"}]
    return JAPANESE + [
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False),
        tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": "3776メートルです。"}],
                                      tokenize=False),
        f"前{tokenizer.eos_token}後", "<|im_start|>user\n  空白<|im_end|>\n",
    ]


def llama_tokens(path, text):
    llama = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    finally:
        llama.close()


@pytest.mark.parametrize("kind", ["sentencepiece", "bpe"])
def test_token_ids_in_llama_cpp_equal_the_hf_tokenizers(tmp_path, kind):
    tokenizer_dir = sentencepiece_tokenizer_dir() if kind == "sentencepiece" else bpe_tokenizer_dir()
    folder, _, tokenizer = model_dir(tmp_path, tokenizer_dir)
    path = convert(folder, tmp_path / "m.gguf").path
    for text in texts_for(tokenizer):
        assert llama_tokens(path, text) == tokenizer(text)["input_ids"], text


def test_the_tokenizer_stages_first_only_prefix_cannot_be_matched_and_is_noted(tmp_path):
    """transformers prefixes "▁" to the start of the input only; the file prefixes nothing, so it
    tokenizes exactly as the same SentencePiece saved with add_prefix_space=False does."""
    folder, _, first_only = model_dir(tmp_path, sentencepiece_tokenizer_dir(prefix_space=True))
    conversion = convert(folder, tmp_path / "m.gguf")
    assert any("prepend_scheme 'first'" in note for note in conversion.notes)
    _, _, no_prefix = model_dir(tmp_path / "never", sentencepiece_tokenizer_dir(prefix_space=False))
    chat_prompt = texts_for(first_only)[len(JAPANESE)]
    assert llama_tokens(conversion.path, chat_prompt) == first_only(chat_prompt)["input_ids"]
    for text in JAPANESE:
        assert llama_tokens(conversion.path, text) == no_prefix(text)["input_ids"]
        if not text[0].isspace():   # a text that opens with a space gets no "▁" more from transformers either
            assert no_prefix(text)["input_ids"] != first_only(text)["input_ids"]


def heldout(tokenizer, n_ctx=64, n_tokens=512):
    return heldout_rows(SAMPLE, tokenizer, n_tokens, n_ctx, len(tokenizer))


def compare_logits(path, model, rows):
    agree, positions, max_diff = 0, 0, 0.0
    llama = Llama(model_path=str(path), n_ctx=64, n_batch=64, logits_all=True, verbose=False)
    try:
        for row in rows:
            llama.reset()
            llama.eval(row)
            got = np.array(llama.scores[: len(row)])
            with torch.no_grad():
                expected = model(torch.tensor([row])).logits[0].numpy()
            agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
            positions += len(row)
            max_diff = max(max_diff, float(np.abs(got - expected).max()))
    finally:
        llama.close()
    return agree / positions, max_diff


@pytest.mark.parametrize("arch,kind,tie", [("qwen2", "sentencepiece", True), ("llama", "sentencepiece", False),
                                           ("qwen2", "bpe", False)])
def test_logits_in_llama_cpp_equal_the_hf_models(tmp_path, arch, kind, tie):
    tokenizer_dir = sentencepiece_tokenizer_dir() if kind == "sentencepiece" else bpe_tokenizer_dir()
    folder, model, tokenizer = model_dir(tmp_path, tokenizer_dir, arch=arch, tie=tie, extra_rows=7)
    rows = heldout(tokenizer)
    top1, max_diff = compare_logits(convert(folder, tmp_path / "m32.gguf", "f32").path, model, rows)
    assert top1 == 1.0 and max_diff < 1e-3
    top1, max_diff = compare_logits(convert(folder, tmp_path / "m16.gguf", "f16").path, model, rows)
    assert top1 >= 0.99 and max_diff < 2e-2


def test_scored_rows_agree_with_torchs_cross_entropy_on_the_model(tmp_path):
    folder, model, tokenizer = model_dir(tmp_path, sentencepiece_tokenizer_dir())
    rows = heldout(tokenizer)
    with open_llama(convert(folder, tmp_path / "m.gguf", "f32").path, 64) as llama:
        totals = score_rows(llama, rows, model)
    expected = 0.0
    for row in rows:
        with torch.no_grad():
            logits = model(torch.tensor([row])).logits[0]
        expected += float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(row[1:]), reduction="sum"))
    assert totals["tokens"] == sum(len(row) - 1 for row in rows)
    assert totals["hf_nll"] == pytest.approx(expected, rel=1e-6)
    assert totals["nll"] == pytest.approx(expected, rel=1e-5)
    assert totals["agree"] == totals["positions"] == sum(len(row) for row in rows)


def test_heldout_rows_from_a_packed_split_and_their_limits(tmp_path):
    packed = np.array([[5, 6, 7, -1], [8, 9, 10, 11]], dtype=np.int32)
    np.save(tmp_path / "valid.npy", packed)
    assert heldout_rows(tmp_path / "valid.npy", None, 6, 4, 12) == [[5, 6, 7, 8], [9, 10]]
    assert heldout_rows(tmp_path / "valid.npy", None, 5, 2, 12) == [[5, 6], [7, 8]]   # a last row of 1 is no row
    with pytest.raises(ValueError, match="token id 11 is outside the model's 11 rows"):
        heldout_rows(tmp_path / "valid.npy", None, 100, 4, 11)
    with pytest.raises(FileNotFoundError, match="held-out text .*missing.npy not found"):
        heldout_rows(tmp_path / "missing.npy", None, 100, 4, 12)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A model whose matrices have rows of 128 (attention, gate, up) and 256 (down), and its quantizations."""
    tmp = tmp_path_factory.mktemp("quant")
    folder, model, _ = model_dir(tmp, sentencepiece_tokenizer_dir(), hidden=128, intermediate=256, heads=4,
                                 kv_heads=2, tie=True)
    f16 = convert(folder, tmp / "m-f16.gguf").path
    return model, f16, {q: quantize(f16, tmp / f"m-{q}.gguf", q) for q in ("q8_0", "q5_k_m", "q4_k_m")}


def test_q8_0_holds_every_matrix_within_one_quantization_step(quantized):
    model, _, files = quantized
    written = {t.name: t for t in gguf.GGUFReader(files["q8_0"].path).tensors}
    assert set(tensor_types(files["q8_0"].path)) == {"Q8_0", "F32"}
    weight = model.state_dict()["model.layers.0.mlp.down_proj.weight"].numpy()
    got = gguf.dequantize(written["blk.0.ffn_down.weight"].data, gguf.GGMLQuantizationType.Q8_0).reshape(weight.shape)
    blocks = np.abs(weight.astype(np.float16).astype(np.float32)).reshape(weight.shape[0], -1, 32).max(axis=-1)
    step = np.repeat(blocks / 127, 32, axis=1)   # Q8_0: 32 values per block, scale = max|w| / 127
    assert np.all(np.abs(got - weight) <= step + 1e-3 * np.abs(weight) + 1e-7)


@pytest.mark.parametrize("quant", ["q5_k_m", "q4_k_m"])
def test_k_quants_fall_back_to_32_blocks_exactly_where_rows_are_not_multiples_of_256(quantized, quant):
    _, _, files = quantized
    written = gguf.GGUFReader(files[quant].path).tensors
    matrices = {t.name: (int(t.shape[0]), t.tensor_type.name) for t in written if len(t.shape) == 2}
    narrow = {name for name, (columns, _) in matrices.items() if columns % 256}
    assert narrow and narrow != set(matrices)   # the model has both kinds
    assert all(kind in BLOCK_32_TYPES for name, (_, kind) in matrices.items() if name in narrow)
    assert all(kind in K_TYPES for name, (_, kind) in matrices.items() if name not in narrow)
    reported = {f["tensor"] for f in files[quant].fallbacks}
    assert reported and reported <= narrow   # llama.cpp logs each fallback (token_embd goes to Q8_0 directly)
    assert all(f["written"] in BLOCK_32_TYPES and f["wanted"] in K_TYPES for f in files[quant].fallbacks)


def test_a_model_with_rows_of_256_is_quantized_without_fallbacks(tmp_path):
    folder, _, _ = model_dir(tmp_path, sentencepiece_tokenizer_dir(), hidden=256, intermediate=512, heads=4,
                             kv_heads=2, layers=1)
    done = quantize(convert(folder, tmp_path / "f16.gguf").path, tmp_path / "q4.gguf", "q4_k_m")
    assert done.fallbacks == []
    assert set(tensor_types(done.path)) <= K_TYPES | {"F32"}


# -- damaged files

@pytest.fixture
def exported(tmp_path, quantized):
    folder = tmp_path / "export"
    folder.mkdir()
    path = folder / "m-f16.gguf"
    shutil.copy(quantized[1], path)
    write_checksums(folder, [path])
    return folder, path


def test_a_truncated_file_is_detected(exported):
    folder, path = exported
    data = path.read_bytes()
    for keep in (len(data) * 2 // 3, 40):   # inside the tensor data; inside the header
        path.write_bytes(data[:keep])
        with pytest.raises(VerificationError, match=f"{path.name}: (truncated|not a readable GGUF file)"):
            check_structure(path)
    with pytest.raises(VerificationError, match="content changed since export"):
        check_checksums(folder)


def test_a_corrupted_header_is_detected(exported):
    _, path = exported
    data = bytearray(path.read_bytes())
    data[:4] = b"GGXX"
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="not a readable GGUF file .*magic"):
        check_structure(path)


def test_corrupted_weights_are_detected_by_checksum_and_in_llama_cpp(exported, quantized):
    folder, path = exported
    embedding = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    data = bytearray(path.read_bytes())
    data[embedding.data_offset: embedding.data_offset + 4096] = b"\xff" * 4096   # F16 NaNs
    path.write_bytes(bytes(data))
    assert check_structure(path)["tensors"] == len(gguf.GGUFReader(path).tensors)   # still well formed
    with pytest.raises(VerificationError, match=f"{path}: content changed since export"):
        check_checksums(folder)
    rows = [list(range(10, 40))]
    with open_llama(path, 64) as llama:
        totals = score_rows(llama, rows, quantized[0])
    assert not np.isfinite(totals["nll"]) and totals["agree"] < totals["positions"]


def test_a_missing_checksummed_file_is_named(exported):
    folder, path = exported
    path.unlink()
    with pytest.raises(VerificationError, match="SHA256SUMS:1: 'm-f16.gguf' is missing"):
        check_checksums(folder)


def test_a_file_llama_cpp_cannot_load_is_a_clear_error(tmp_path, quantized):
    reader = gguf.GGUFReader(quantized[1])
    writer = gguf.GGUFWriter(tmp_path / "bad.gguf", "qwen2")   # the metadata of a model without its tensors
    for name, field in reader.fields.items():
        if not name.startswith("GGUF.") and name != gguf.Keys.General.ARCHITECTURE:
            writer.add_key_value(name, field.contents(), field.types[0],
                                 sub_type=field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with pytest.raises(VerificationError, match="bad.gguf: llama.cpp cannot load it"):
        with open_llama(tmp_path / "bad.gguf", 64):
            pass
