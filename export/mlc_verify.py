"""Read an MLC export back and check it against the Hugging Face model it came from.

Checks (each a dict with ``passed``):
- ``index``: both index files agree; every shard has its recorded size and md5 (else CacheError, naming it);
  the tensor names are exactly MLC's qwen2 parameters.
- ``weights``: quantizing the original weights again gives the stored codes and scales bit for bit; plain
  tensors equal the originals as stored; every dequantized element is within the bound of mlc_quant.
- ``forward``: the HF model with the dequantized weights against the original on held-out tokens: top-1
  agreement (must reach ``min_top1_agreement``), max |Δlogit|, perplexity of both.
- ``tvm_reader``: apache-tvm's tvmjs.load_tensor_cache reads both index files to the same arrays.
- ``chat_template``: the conversation template renders a chat exactly as the model's own chat template.
"""
import json
import math
from pathlib import Path

import numpy as np
import torch

from export.mlc import HFWeights, qwen2_entries
from export.mlc_cache import check_index_copies, load_tensors
from export.mlc_config import render_conversation
from taid.vocab import load_tokenizer
from export.mlc_format import CHAT_CONFIG_FILE, INDEX_FILES, QUANTIZED, get_quantization
from export.mlc_quant import BLOCK_ELEMENTS, bf16_round, dequantize, error_bound, quantize

SAMPLE_CHAT = [("user", "こんにちは。自己紹介してください。"), ("assistant", "はい、私はアシスタントです。"),
               ("user", "日本で一番高い山は？")]


def expected_names(config):
    names = []
    for mlc_name, _, kind in qwen2_entries(config):
        names += [f"{mlc_name}.q_weight", f"{mlc_name}.q_scale"] if kind == QUANTIZED else [mlc_name]
    return names


def check_index(out_dir, config):
    index = check_index_copies(out_dir)
    tensors = load_tensors(out_dir, index)
    expected = expected_names(config)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    formats = {record["format"] for shard in index["records"] for record in shard["records"]}
    return tensors, {"passed": not missing and not extra and len(formats) == 1, "shards": len(index["records"]),
                     "tensors": len(tensors), "f32_format": "/".join(sorted(formats)), "missing": missing,
                     "unexpected": extra}


class WeightStats:
    """What the weights check accumulates over every quantized element."""

    def __init__(self):
        self.worst_ratio, self.clipped, self.elements, self.abs_error = 0.0, 0, 0, 0.0

    def add(self, source, restored, q_scale, spec):
        """Returns whether every element of this block is within the bound."""
        error = np.abs(source.astype(np.float64) - restored)
        scales = np.repeat(q_scale.astype(np.float64), spec.group_size, axis=1)[:, :source.shape[1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.worst_ratio = max(self.worst_ratio, float(np.max(np.where(scales > 0, error / scales, 0.0))))
        self.clipped += int(np.sum(np.abs(source) > spec.max_int * scales + scales / 2))
        self.elements += source.size
        self.abs_error += float(error.sum())
        return bool(np.all(error <= error_bound(source, q_scale, spec)))


def check_quantized(source, q_weight, q_scale, spec, f32_as_bf16, stats):
    """(codes and scales equal a fresh quantization, all within the bound, ŵ as float32), block by block
    of rows so that float64 temporaries stay small."""
    want_q, want_s = quantize(source, spec, f32_as_bf16=f32_as_bf16)
    exact = np.array_equal(q_weight, want_q) and np.array_equal(q_scale, want_s)
    restored, within = np.empty(source.shape, dtype=np.float32), True
    block = max(1, BLOCK_ELEMENTS // source.shape[1])
    for start in range(0, source.shape[0], block):
        rows = slice(start, start + block)
        block_restored = dequantize(q_weight[rows], q_scale[rows], source.shape[1], spec)
        within &= stats.add(source[rows], block_restored, q_scale[rows], spec)
        restored[rows] = block_restored
    return exact, within, restored


def check_weights(tensors, weights, config, spec, f32_as_bf16):
    """Compare every stored tensor with the originals; returns the dequantized HF-shaped tensors (float32)."""
    mismatched, over_bound, restored, stats = [], [], {}, WeightStats()
    for mlc_name, sources, kind in qwen2_entries(config):
        parts = [weights.get(name) for name in sources]
        source = np.concatenate(parts, axis=0)
        if kind == QUANTIZED:
            exact, within, restored_weight = check_quantized(
                source, tensors[f"{mlc_name}.q_weight"], tensors[f"{mlc_name}.q_scale"], spec, f32_as_bf16, stats)
            mismatched += [] if exact else [mlc_name]
            over_bound += [] if within else [mlc_name]
        else:
            want = source.astype(spec.model_dtype)
            if f32_as_bf16 and want.dtype == np.float32:
                want = bf16_round(want)
            if not np.array_equal(tensors[mlc_name], want):
                mismatched.append(mlc_name)
            restored_weight = tensors[mlc_name].astype(np.float32)
        for name, piece in zip(sources, _split_rows(restored_weight, parts)):
            restored[name] = piece
    if config.get("tie_word_embeddings", False):
        restored["lm_head.weight"] = restored["model.embed_tokens.weight"]
    return restored, {"passed": not mismatched and not over_bound, "mismatched": mismatched,
                      "over_bound": over_bound, "max_error_in_scales": round(stats.worst_ratio, 6),
                      "clipped_elements": stats.clipped, "mean_abs_error": stats.abs_error / max(stats.elements, 1)}


def _split_rows(array, parts):
    edges = np.cumsum([part.shape[0] for part in parts])[:-1]
    return np.split(array, edges, axis=0)


# -- the forward pass

def check_forward(model_dir, restored, rows, min_top1_agreement):
    """Top-1 agreement, max |Δlogit| and perplexities of the HF model, original and with ``restored``
    weights (consumed), on token id ``rows`` (1-D arrays of ≥ 2 tokens), row by row: memory holds the two
    models and one row's logits, not the logits of every row."""
    from transformers import AutoModelForCausalLM

    rows = [np.asarray(row, dtype=np.int64) for row in rows if len(row) >= 2]
    if not rows:
        raise ValueError("forward check: no held-out row has two tokens or more")
    quantized = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for name in list(restored):
            quantized.get_parameter(name).copy_(torch.from_numpy(restored.pop(name)))
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    agree = positions = 0
    max_diff, nll_ref, nll_quant = 0.0, 0.0, 0.0
    for row in rows:
        ref_logits, logits = _logits(reference, row), _logits(quantized, row)
        agree += int((logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        positions += logits.shape[0]
        max_diff = max(max_diff, float((logits - ref_logits).abs().max()))
        targets = torch.from_numpy(row[1:])
        nll_ref += float(torch.nn.functional.cross_entropy(ref_logits[:-1], targets, reduction="sum"))
        nll_quant += float(torch.nn.functional.cross_entropy(logits[:-1], targets, reduction="sum"))
    predicted = sum(len(row) - 1 for row in rows)
    ppl_ref, ppl_quant = math.exp(nll_ref / predicted), math.exp(nll_quant / predicted)
    agreement = agree / positions
    return {"passed": agreement >= min_top1_agreement, "rows": len(rows), "positions": positions,
            "top1_agreement": round(agreement, 6), "min_top1_agreement": min_top1_agreement,
            "max_abs_logit_diff": round(max_diff, 6), "perplexity_reference": round(ppl_ref, 6),
            "perplexity": round(ppl_quant, 6), "perplexity_drift": round(ppl_quant - ppl_ref, 6)}


def _logits(model, row):
    with torch.no_grad():
        return model(torch.from_numpy(row)[None]).logits[0].float()


# -- independent reader and the chat template

def check_tvm_reader(out_dir, tensors):
    """Load both index files with apache-tvm's reader; every array must equal ours."""
    try:
        import tvm
        from tvm.contrib import tvmjs
    except ImportError:
        raise ValueError("apache-tvm is not installed (pip install -e '.[tvm]'); it reads the export back "
                         "independently. Set export_mlc.verify.tvm_reader: false to go without it") from None
    differing = []
    for index_file in INDEX_FILES:
        loaded, _ = tvmjs.load_tensor_cache(str(Path(out_dir) / index_file), tvm.cpu())
        if set(loaded) != set(tensors):
            differing.append(f"{index_file}: other tensor names")
            continue
        differing += [f"{index_file}: {name}" for name, array in tensors.items()
                      if not np.array_equal(loaded[name].numpy(), array)]
    return {"passed": not differing, "tvm_version": tvm.__version__, "differing": differing}


def check_chat_template(out_dir, tokenizer):
    template = json.loads((Path(out_dir) / CHAT_CONFIG_FILE).read_text(encoding="utf-8"))["conv_template"]
    if not tokenizer.chat_template:
        return {"passed": True, "compared": False,
                "note": "the tokenizer has no chat template: ChatML written without a cross-check"}
    system = template["system_message"] or "あなたは役に立つアシスタントです。"
    template = dict(template, system_message=system)
    messages = [{"role": "system", "content": system}] + [{"role": r, "content": t} for r, t in SAMPLE_CHAT]
    theirs = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ours = render_conversation(template, SAMPLE_CHAT)
    result = {"passed": ours == theirs, "compared": True}
    if ours != theirs:
        result.update(mlc=ours, hf=theirs)
    return result


def verify_mlc(model_dir, out_dir, quant, rows, *, min_top1_agreement=0.85, tvm_reader=True):
    """Every check above; returns {check: result}. Unreadable shards raise CacheError naming the file."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    spec = get_quantization(quant)
    tensors, index_result = check_index(out_dir, config)
    if not index_result["passed"]:
        return {"index": index_result}
    bf16 = index_result["f32_format"] == "f32-to-bf16"
    restored, weight_result = check_weights(tensors, HFWeights(model_dir), config, spec, bf16)
    results = {"index": index_result, "weights": weight_result,
               "forward": check_forward(model_dir, restored, rows, min_top1_agreement)}
    if tvm_reader:
        results["tvm_reader"] = check_tvm_reader(out_dir, tensors)
    results["chat_template"] = check_chat_template(out_dir, load_tokenizer(model_dir))
    return results


def failed_checks(results):
    return [name for name, result in results.items() if not result["passed"]]
