"""MLC (WebLLM) format facts in one place: quantization specs, file names, the Qwen2 name map and the stock
WebLLM model libraries. Checked against mlc-llm (quantization/quantization.py, group_quantization.py,
model/qwen2/, interface/gen_config.py, protocol/mlc_chat_config.py), apache/tvm
(python/tvm/contrib/tvmjs.py) and @mlc-ai/web-llm (src/config.ts, src/support.ts).
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupQuant:
    """One of MLC's group quantizations with linear layout NK: a weight [N, K] is cut into groups of
    ``group_size`` along K; each group keeps one scale = max|w| / max_int and codes
    q = clip(round(w / scale + max_int), 0, 2 * max_int), ``elems_per_word`` codes per uint32."""
    name: str
    model_dtype: str          # dtype of the scales and of every tensor that is not quantized
    group_size: int = 32
    bits: int = 4
    elems_per_word: int = 8   # uint32 storage / 4-bit codes; element r sits in bits 4r..4r+3
    max_int: int = 7          # 2 ** (bits - 1) - 1: codes 0..14 stand for -7..7; code 15 is never written

    @property
    def words_per_group(self):
        return self.group_size // self.elems_per_word


QUANTIZATIONS = {q.name: q for q in (GroupQuant("q4f16_1", "float16"), GroupQuant("q4f32_1", "float32"))}


def get_quantization(name):
    if name not in QUANTIZATIONS:
        raise ValueError(f"unknown MLC quantization {name!r}; supported: {', '.join(QUANTIZATIONS)}")
    return QUANTIZATIONS[name]


# -- the tensor cache (tvmjs): raw shards and a JSON index of them

SHARD_BYTES = 32 << 20            # convert_weight's shard cap (tvmjs shard_cap_mb=32)
SHARD_NAME = "params_shard_{}.bin"
INDEX_FILES = ("tensor-cache.json", "ndarray-cache.json")   # current WebLLM / TVM, and older WebLLM
SHARD_FORMAT = "raw-shard"
# how float32 tensors are stored: "f32-to-bf16" (mlc_llm convert_weight's choice: 2 bytes each, decoded to
# float32 on load) or "raw" (4 bytes each); other dtypes are always raw bytes
F32_FORMATS = ("f32-to-bf16", "raw")
DTYPES = {"uint32": np.uint32, "float16": np.float16, "float32": np.float32}


# -- mlc-chat-config.json

CHAT_CONFIG_FILE = "mlc-chat-config.json"
CHAT_CONFIG_VERSION = "0.1.0"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "tokenizer_config.json")
# gen_config's system defaults for the sampling fields neither generation_config.json nor params set
GENERATION_DEFAULTS = {"temperature": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                       "repetition_penalty": 1.0, "top_p": 1.0}
CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"
PREFILL_CHUNK_SIZE = 1024         # the stock WebGPU libraries are built with 1k prefill chunks ("cs1k")
MAX_BATCH_SIZE = 128              # gen_config's default


# -- the Qwen2 parameter map: MLC name ← Hugging Face tensors (concatenated along axis 0)

QUANTIZED, PLAIN = "quantized", "plain"   # a quantized entry X is written as X.q_weight and X.q_scale
SUPPORTED_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM"}

QWEN2_TOP = [("model.embed_tokens", ["model.embed_tokens.weight"], QUANTIZED)]
QWEN2_LAYER = [
    ("model.layers.{i}.self_attn.c_attn",
     ["model.layers.{i}.self_attn.q_proj.weight", "model.layers.{i}.self_attn.k_proj.weight",
      "model.layers.{i}.self_attn.v_proj.weight"], QUANTIZED),
    ("model.layers.{i}.self_attn.c_attn.bias",
     ["model.layers.{i}.self_attn.q_proj.bias", "model.layers.{i}.self_attn.k_proj.bias",
      "model.layers.{i}.self_attn.v_proj.bias"], PLAIN),
    ("model.layers.{i}.self_attn.o_proj", ["model.layers.{i}.self_attn.o_proj.weight"], QUANTIZED),
    ("model.layers.{i}.mlp.gate_up_proj",
     ["model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"], QUANTIZED),
    ("model.layers.{i}.mlp.down_proj", ["model.layers.{i}.mlp.down_proj.weight"], QUANTIZED),
    ("model.layers.{i}.input_layernorm.weight", ["model.layers.{i}.input_layernorm.weight"], PLAIN),
    ("model.layers.{i}.post_attention_layernorm.weight",
     ["model.layers.{i}.post_attention_layernorm.weight"], PLAIN),
]
QWEN2_FINAL = [("model.norm.weight", ["model.norm.weight"], PLAIN)]
QWEN2_UNTIED_HEAD = [("lm_head", ["lm_head.weight"], QUANTIZED)]   # tied: lm_head reads embed_tokens
QWEN2_UNUSED_SUFFIXES = ("rotary_emb.inv_freq",)


# -- stock WebLLM model libraries (web-llm's prebuiltAppConfig, "<lib>_cs1k-webgpu.wasm" under
# modelLibURLPrefix + modelVersion). A library fixes every shape and constant below and the quantization;
# a model matching one runs on it without a compile.

STOCK_SHAPE_KEYS = ("hidden_act", "hidden_size", "intermediate_size", "num_attention_heads",
                    "num_hidden_layers", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                    "vocab_size", "tie_word_embeddings")
STOCK_QWEN2_SHAPES = {
    "Qwen2-0.5B-Instruct": ("silu", 896, 4864, 14, 24, 2, 64, 1e-6, 1000000.0, 151936, True),
    "Qwen2-1.5B-Instruct": ("silu", 1536, 8960, 12, 28, 2, 128, 1e-6, 1000000.0, 151936, True),
    "Qwen2.5-3B-Instruct": ("silu", 2048, 11008, 16, 36, 2, 128, 1e-6, 1000000.0, 151936, True),
    "Qwen2-7B-Instruct": ("silu", 3584, 18944, 28, 28, 4, 128, 1e-6, 1000000.0, 152064, False),
}
STOCK_LIBRARY_FILE = "{model}-{quant}_cs1k-webgpu.wasm"
STOCK_PREFILL_CHUNK = 1024


# -- the web demo's descriptor of an export (read by export/web/app-config.js)

WEBLLM_DESCRIPTOR = "webllm.json"
COMPILED_LIBRARY_FILE = "{name}-{quant}-webgpu.wasm"
