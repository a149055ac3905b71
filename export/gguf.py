"""A Hugging Face Qwen2 / Llama model directory → GGUF (F16, BF16 or F32), and llama.cpp's quantizer.

The writer is gguf's ``GGUFWriter``; tensor names come from gguf's ``TensorNameMap``, metadata keys from its
``Keys``. Tensors stream from the safetensors files one at a time (tensor infos first, then the data), so a
conversion holds one tensor in memory, not the model. Matrices are written in the requested type, 1-D
tensors (norms, biases) in F32 as llama.cpp's own converter does. Tied embeddings write no ``output``
tensor: llama.cpp then reuses ``token_embd``.

    convert("models/instruct", "out/model-f16.gguf")                 # → Conversion
    quantize("out/model-f16.gguf", "out/model-q4_k_m.gguf", "q4_k_m") # → Quantization (llama.cpp's quantizer)
"""
import ctypes
import io
import json
import os
import re
import time
from contextlib import ExitStack, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open
from transformers import AutoConfig

from export.gguf_tables import ARCHITECTURES, OUT_TYPES, PERMUTED_QK_ARCHS, QUANTS, supported
from export.gguf_vocab import read_vocab, write_vocab
from taid.vocab import load_tokenizer

SAFETENSORS_INDEX = "model.safetensors.index.json"
SKIPPED_TENSORS = ("rotary_emb.inv_freq",)   # buffers some checkpoints carry; llama.cpp computes RoPE itself
# llama.cpp's log line for a tensor its K-quant cannot hold (llama-quant.cpp, tensor_type_fallback)
FALLBACK_LINE = re.compile(r"warning: (?P<tensor>\S+)\s+- ncols\s+\d+ not divisible by\s+\d+ "
                           r"\(required for type\s+(?P<wanted>\S+)\).*?-> falling back to\s+(?P<written>\S+)")


class ConversionError(ValueError):
    """A model the export cannot convert; the message says what and where."""


@dataclass
class Conversion:
    path: Path
    architecture: str
    out_type: str
    tensors: int
    bytes: int
    seconds: float
    notes: list = field(default_factory=list)


@dataclass
class Quantization:
    path: Path
    quant: str
    seconds: float
    fallbacks: list   # [{tensor, wanted, written}]: tensors llama.cpp wrote in another type than the K-quant


@dataclass
class TensorPlan:
    gguf_name: str
    hf_name: str
    shape: tuple
    qtype: gguf.GGMLQuantizationType
    permute_heads: int | None = None   # Llama q/k: heads to reorder the rows of


def convert(model_dir, out_path, out_type="f16", tokenizer_dir=None, name=None):
    """Write ``model_dir`` (config.json, safetensors, tokenizer) as one GGUF file at ``out_path``.

    ``tokenizer_dir``: where the tokenizer is when not in ``model_dir`` (its ``tokenizer.model`` is also
    looked for there: a SentencePiece vocabulary needs the scores only that file holds)."""
    started = time.perf_counter()
    model_dir, out_path = Path(model_dir), Path(out_path)
    if out_type not in OUT_TYPES:
        raise ConversionError(f"unknown GGUF type {out_type!r}; supported: {supported(OUT_TYPES)}")
    qtype, file_type = OUT_TYPES[out_type]
    config = _read_config(model_dir)
    arch = _architecture(config, model_dir)
    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    vocab = read_vocab(tokenizer, config.vocab_size, _sentencepiece_model(model_dir, tokenizer_dir))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        with ExitStack() as stack:
            weights = _open_safetensors(model_dir, stack)
            plan = _tensor_plan(weights, config, arch, qtype, model_dir)
            writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
            _write_metadata(writer, config, arch, file_type, name or model_dir.name)
            write_vocab(writer, vocab)
            _write_tensors(writer, plan, weights)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out_path)
    return Conversion(path=out_path, architecture=gguf.MODEL_ARCH_NAMES[arch], out_type=out_type,
                      tensors=len(plan), bytes=out_path.stat().st_size,
                      seconds=time.perf_counter() - started, notes=vocab.notes)


def quantize(source, out_path, quant, threads=None):
    """llama.cpp's quantizer on a GGUF file (F16/BF16/F32) → ``out_path``.

    K-quants work on rows of 256 values: llama.cpp writes a tensor whose rows are not a multiple of 256 in
    a 32-block type instead (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0) and says so in its log, which is read
    here into ``Quantization.fallbacks``."""
    import llama_cpp
    if quant not in QUANTS:
        raise ConversionError(f"unknown quantization {quant!r}; supported: {supported(QUANTS)}")
    started = time.perf_counter()
    out_path = Path(out_path)
    partial = out_path.with_name(f".{out_path.name}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANTS[quant])
    params.nthread = threads or os.cpu_count() or 1
    with redirect_stderr(io.StringIO()) as log:   # llama-cpp-python prints llama.cpp's log to sys.stderr
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if status != 0:
        partial.unlink(missing_ok=True)
        tail = " | ".join(log.getvalue().strip().splitlines()[-3:])
        raise ConversionError(f"llama.cpp could not quantize {source} to {quant} (status {status}): {tail}")
    os.replace(partial, out_path)
    fallbacks = [{"tensor": m["tensor"], "wanted": m["wanted"].upper(), "written": m["written"].upper()}
                 for m in FALLBACK_LINE.finditer(log.getvalue())]
    return Quantization(path=out_path, quant=quant, seconds=time.perf_counter() - started, fallbacks=fallbacks)


def tensor_types(path):
    """How many tensors of each GGML type a GGUF file holds, e.g. {"Q4_K": 12, "Q5_0": 3, "F32": 9}."""
    counts = {}
    for tensor in gguf.GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return dict(sorted(counts.items()))


# -- the model: config, architecture, weights

def _read_config(model_dir):
    if not (model_dir / "config.json").is_file():
        raise ConversionError(f"{model_dir}: no config.json (a Hugging Face model directory is expected)")
    return AutoConfig.from_pretrained(model_dir)


def _architecture(config, model_dir):
    names = getattr(config, "architectures", None) or []
    for hf_name in names:
        if hf_name in ARCHITECTURES:
            arch = ARCHITECTURES[hf_name]
            _check_supported_features(config, model_dir)
            return arch
    raise ConversionError(f"{model_dir}/config.json: architecture {', '.join(names) or 'unknown'} is not "
                          f"supported; supported: {supported(ARCHITECTURES)}")


def _check_supported_features(config, model_dir):
    where = f"{model_dir}/config.json"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ConversionError(f"{where}: RoPE scaling {rope.get('rope_type')!r} is not supported (only plain RoPE)")
    if getattr(config, "use_sliding_window", False):
        raise ConversionError(f"{where}: sliding-window attention is not supported")
    if getattr(config, "mlp_bias", False):
        raise ConversionError(f"{where}: MLP biases are not supported")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ConversionError(f"{where}: activation {config.hidden_act!r} is not supported (only silu)")


def _sentencepiece_model(model_dir, tokenizer_dir):
    """The tokenizer.model beside the tokenizer (the model directory's when none is given)."""
    for folder in ([tokenizer_dir] if tokenizer_dir else []) + [model_dir]:
        if (Path(folder) / "tokenizer.model").is_file():
            return Path(folder) / "tokenizer.model"
    return None


def _open_safetensors(model_dir, stack):
    """Tensor name → open safetensors file holding it (one file, or the shards of an index)."""
    index = model_dir / SAFETENSORS_INDEX
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ConversionError(f"{model_dir}: no model.safetensors or {SAFETENSORS_INDEX} "
                              "(save the model with save_pretrained)")
    weights = {}
    for file in files:
        handle = stack.enter_context(safe_open(model_dir / file, framework="pt"))
        weights.update({tensor: handle for tensor in handle.keys()})
    return weights


def _tensor_plan(weights, config, arch, qtype, model_dir):
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    plan = []
    for hf_name in sorted(weights, key=_natural_key):
        if hf_name.endswith(SKIPPED_TENSORS) or (tied and hf_name == "lm_head.weight"):
            continue
        mapped = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConversionError(f"{model_dir}: tensor {hf_name!r} has no GGUF name for {arch.name.lower()}")
        kind, gguf_name = mapped
        shape = tuple(weights[hf_name].get_slice(hf_name).get_shape())
        plan.append(TensorPlan(gguf_name=gguf_name, hf_name=hf_name, shape=shape,
                               qtype=qtype if len(shape) > 1 else gguf.GGMLQuantizationType.F32,
                               permute_heads=_permute_heads(arch, kind, config)))
    return plan


def _permute_heads(arch, kind, config):
    if arch not in PERMUTED_QK_ARCHS:
        return None
    return {gguf.MODEL_TENSOR.ATTN_Q: config.num_attention_heads,
            gguf.MODEL_TENSOR.ATTN_K: config.num_key_value_heads}.get(kind)


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in name.split(".")]


# -- writing

def _write_metadata(writer, config, arch, file_type, name):
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(head_dim)


def _write_tensors(writer, plan, weights):
    for tensor in plan:
        block, type_size = gguf.GGML_QUANT_SIZES[tensor.qtype]
        n_bytes = int(np.prod(tensor.shape)) // block * type_size
        writer.add_tensor_info(tensor.gguf_name, tensor.shape, np.dtype(np.float32), n_bytes,
                               raw_dtype=tensor.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in plan:
        data = weights[tensor.hf_name].get_tensor(tensor.hf_name).float().numpy()
        if tensor.permute_heads:
            data = _interleave_rope_rows(data, tensor.permute_heads)
        writer.write_tensor_data(gguf.quants.quantize(data, tensor.qtype))
    writer.close()


def _interleave_rope_rows(weight, n_heads):
    """Rows of each head from transformers' halves layout [x0..x(d/2-1), y0..] to llama.cpp's pairs [x0, y0, ...]."""
    return (weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))
