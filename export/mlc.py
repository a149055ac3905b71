"""MLC (WebLLM) export of a Qwen2 Hugging Face model: q4f16_1 / q4f32_1 weights in a tensor cache,
mlc-chat-config.json, the tokenizer files, and webllm.json for the demo page.

    summary = export_mlc("models/instruct", "models/export/mlc-q4f16_1", "q4f16_1")

Weights stream tensor by tensor from the safetensors files (q, k, v and gate, up concatenated as MLC's
qwen2 model expects), so memory holds one layer's tensors at a time, not the model.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from export.mlc_cache import TensorCacheWriter
from export.mlc_config import (chat_config, chatml_template, default_system_message, end_token_ids,
                               generation_settings, library_plan, mlc_model_config, read_hf_config,
                               webllm_descriptor)
from export.mlc_format import (CHAT_CONFIG_FILE, PLAIN, QUANTIZED, QWEN2_FINAL, QWEN2_LAYER, QWEN2_TOP,
                               QWEN2_UNTIED_HEAD, QWEN2_UNUSED_SUFFIXES, SHARD_BYTES, WEBLLM_DESCRIPTOR,
                               get_quantization)
from export.mlc_quant import quantize
from taid.vocab import load_tokenizer


class HFWeights:
    """The tensors of a model directory's safetensors files (one file or an index of shards), as float32
    numpy arrays read one at a time; remembers which were read."""

    def __init__(self, model_dir):
        model_dir = Path(model_dir)
        index = model_dir / "model.safetensors.index.json"
        single = model_dir / "model.safetensors"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.files = {name: model_dir / file for name, file in weight_map.items()}
        elif single.is_file():
            with safe_open(single, framework="pt") as f:
                self.files = {name: single for name in f.keys()}
        else:
            raise ValueError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
        self.used = set()

    def get(self, name):
        if name not in self.files:
            raise ValueError(f"tensor {name} not found in {sorted(set(self.files.values()))[0].parent}")
        self.used.add(name)
        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name).to(torch.float32).numpy()

    def unused(self, ignorable=()):
        return sorted(name for name in set(self.files) - self.used
                      if not name.endswith(QWEN2_UNUSED_SUFFIXES) and name not in ignorable)


def qwen2_entries(config):
    """(mlc name, hf names, kind) for every MLC parameter, in the order of MLC's qwen2 module tree."""
    layers = [(mlc.format(i=i), [hf.format(i=i) for hf in sources], kind)
              for i in range(config["num_hidden_layers"]) for mlc, sources, kind in QWEN2_LAYER]
    head = [] if config.get("tie_word_embeddings", False) else QWEN2_UNTIED_HEAD
    return QWEN2_TOP + layers + QWEN2_FINAL + head


def mlc_tensors(config, weights, spec, f32_as_bf16):
    """Yield (name, array, source) for every MLC parameter: source is the concatenated original weight
    (None for a q_scale, which shares its q_weight's)."""
    for mlc_name, sources, kind in qwen2_entries(config):
        source = np.concatenate([weights.get(name) for name in sources], axis=0)
        if kind == QUANTIZED:
            q_weight, q_scale = quantize(source, spec, f32_as_bf16=f32_as_bf16)
            yield f"{mlc_name}.q_weight", q_weight, source
            yield f"{mlc_name}.q_scale", q_scale, None
        else:
            assert kind == PLAIN
            yield mlc_name, source.astype(spec.model_dtype), source


def export_mlc(model_dir, out_dir, quant, *, final_dir=None, name="tsubame", f32_format="f32-to-bf16",
               shard_bytes=SHARD_BYTES, context_window_size=None, prefill_chunk_size=None, system_message=None,
               generation=None):
    """Write the MLC model folder ``out_dir`` (replaced if present) and return a summary: sizes, parameter
    counts, the model library plan (stock, or the compile command naming ``final_dir``, the folder's
    eventual path when it is written elsewhere first) and the conversation template's stop ids."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    spec = get_quantization(quant)
    config = read_hf_config(model_dir)
    tokenizer = load_tokenizer(model_dir)
    model_config = mlc_model_config(config, context_window_size, prefill_chunk_size)

    shutil.rmtree(out_dir, ignore_errors=True)
    writer = TensorCacheWriter(out_dir, f32_format, shard_bytes)
    weights = HFWeights(model_dir)
    source_params = 0
    for tensor_name, array, source in mlc_tensors(config, weights, spec, f32_format == "f32-to-bf16"):
        writer.add(tensor_name, array)
        source_params += source.size if source is not None else 0
    leftover = weights.unused(ignorable={"lm_head.weight"} if model_config["tie_word_embeddings"] else set())
    if leftover:
        raise ValueError(f"{model_dir}: tensors MLC's qwen2 model has no place for: {', '.join(leftover)}")
    index = writer.finish({"ParamSize": len(writer.names), "ParamBytes": float(writer.tensor_bytes),
                           "BitsPerParam": writer.tensor_bytes * 8.0 / source_params})

    end_ids = end_token_ids(tokenizer, model_dir)
    system = default_system_message(tokenizer) if system_message is None else system_message
    template = chatml_template(tokenizer, system, stop_ids=end_ids)
    chat = chat_config(model_config, quant, tokenizer, model_dir, template, generation_settings(model_dir, generation),
                       end_ids)
    for file in chat["tokenizer_files"]:
        shutil.copyfile(model_dir / file, out_dir / file)
    (out_dir / CHAT_CONFIG_FILE).write_text(json.dumps(chat, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    library = library_plan(model_config, quant, Path(final_dir or out_dir), name)
    descriptor = webllm_descriptor(name, quant, model_config, library)
    (out_dir / WEBLLM_DESCRIPTOR).write_text(json.dumps(descriptor, indent=2) + "\n", encoding="utf-8")
    return {
        "quantization": quant,
        "f32_format": f32_format,
        "parameters": source_params,
        "tensors": len(writer.names),
        "shards": len(index["records"]),
        "weight_bytes": sum(shard["nbytes"] for shard in index["records"]),
        "size_bytes": sum(path.stat().st_size for path in out_dir.iterdir() if path.is_file()),
        "bits_per_param": round(index["metadata"]["BitsPerParam"], 4),
        "library": library,
        "conv_template": {"system_message": system, "stop_token_ids": template["stop_token_ids"]},
    }
