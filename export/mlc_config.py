"""mlc-chat-config.json for a Qwen2 model, its ChatML conversation template, and which WebLLM model
library runs it: a stock one when the shapes match, else the ``mlc_llm compile`` command that builds one."""
import json
import shlex
from pathlib import Path

from export.mlc_format import (CHAT_CONFIG_VERSION, CHATML_END, CHATML_START, COMPILED_LIBRARY_FILE,
                               GENERATION_DEFAULTS, MAX_BATCH_SIZE, PREFILL_CHUNK_SIZE, STOCK_LIBRARY_FILE,
                               STOCK_PREFILL_CHUNK, STOCK_QWEN2_SHAPES, STOCK_SHAPE_KEYS,
                               SUPPORTED_ARCHITECTURES, TOKENIZER_FILES)

ACTIVATIONS = ("silu", "swish", "gelu", "gelu_new", "relu")   # what MLC's qwen2 model maps


def read_hf_config(model_dir):
    """config.json of a Hugging Face model directory, refused unless MLC's qwen2 model can express it."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: expected a Hugging Face model directory")
    config = json.loads(path.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(f"{k} ({v})" for k, v in SUPPORTED_ARCHITECTURES.items())
        raise ValueError(f"{path}: model_type {model_type!r} has no MLC export here; supported: {supported}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"{path}: rope type {rope.get('rope_type', rope.get('type'))!r}; MLC's qwen2 model "
                         "only has plain RoPE")
    if config.get("use_sliding_window"):
        raise ValueError(f"{path}: use_sliding_window is set; MLC's qwen2 model has no sliding window")
    if config.get("hidden_act", "silu") not in ACTIVATIONS:
        raise ValueError(f"{path}: hidden_act {config['hidden_act']!r}; MLC's qwen2 knows {', '.join(ACTIVATIONS)}")
    return config


def rope_theta(config):
    return float(config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0))


def mlc_model_config(config, context_window_size=None, prefill_chunk_size=None):
    """``model_config`` of mlc-chat-config.json: mlc_llm's QWen2Config fields, filled from config.json."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim * heads != config["hidden_size"]:
        raise ValueError(f"hidden_size {config['hidden_size']} is not num_attention_heads {heads} × head_dim "
                         f"{head_dim}, as MLC's qwen2 model requires")
    context = int(context_window_size or config.get("max_position_embeddings") or 0)
    if context <= 0:
        raise ValueError("no context window: config.json has no max_position_embeddings; set context_window_size")
    return {
        "hidden_act": config.get("hidden_act", "silu"),
        "hidden_size": config["hidden_size"],
        "intermediate_size": config["intermediate_size"],
        "num_attention_heads": heads,
        "num_hidden_layers": config["num_hidden_layers"],
        "num_key_value_heads": config.get("num_key_value_heads", heads),
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
        "rope_theta": rope_theta(config),
        "vocab_size": config["vocab_size"],
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "context_window_size": context,
        "prefill_chunk_size": min(context, int(prefill_chunk_size or PREFILL_CHUNK_SIZE)),
        "tensor_parallel_shards": 1,
        "head_dim": head_dim,
        "dtype": "float32",          # as gen_config leaves it; the quantization sets the compute dtype
        "max_batch_size": MAX_BATCH_SIZE,
    }


# -- the conversation template: ChatML, as mlc_llm's "qwen2" template, with this tokenizer's ids

def chatml_template(tokenizer, system_message, stop_ids=()):
    """mlc_llm's Conversation for ChatML, stopping at <|im_end|> and at ``stop_ids`` (the model's end of text
    ids). Ids come from ``tokenizer``: Qwen's 151643/151645 hold only for Qwen's own tokenizer."""
    ids = [tokenizer.convert_tokens_to_ids(token) for token in (CHATML_START, CHATML_END)]
    if tokenizer.unk_token_id in ids or None in ids:
        raise ValueError(f"the tokenizer has no {CHATML_START} / {CHATML_END} tokens; a ChatML template needs them")
    stop_ids = list(dict.fromkeys([ids[1], *stop_ids]))
    stop_str = tokenizer.convert_ids_to_tokens(stop_ids)
    return {
        "name": "qwen2",
        "system_template": f"{CHATML_START}system\n{{system_message}}{CHATML_END}\n",
        "system_message": system_message,
        "add_role_after_system_message": True,
        "roles": {"user": f"{CHATML_START}user", "assistant": f"{CHATML_START}assistant"},
        "role_templates": {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"},
        "messages": [],
        "seps": [f"{CHATML_END}\n"],
        "role_content_sep": "\n",
        "role_empty_sep": "\n",
        "stop_str": stop_str,
        "stop_token_ids": stop_ids,
        "function_string": "",
        "use_function_calling": False,
    }


def render_conversation(template, messages):
    """The prompt MLC builds from ``template`` for ``messages`` ((role, text) pairs, user first) ending with
    the assistant's empty turn (one separator: it follows every message)."""
    prompt = template["system_template"].replace("{system_message}", template["system_message"])
    for role, text in messages:
        prompt += template["roles"][role] + template["role_content_sep"] + text + template["seps"][0]
    return prompt + template["roles"]["assistant"] + template["role_empty_sep"]


def default_system_message(tokenizer):
    """The system message the model's own chat template adds when given none (Qwen2.5's, for one), else ''."""
    if not tokenizer.chat_template:
        return ""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    head = f"{CHATML_START}system\n"
    if rendered.startswith(head) and CHATML_END in rendered:
        return rendered[len(head):rendered.index(CHATML_END)]
    return ""


def end_token_ids(tokenizer, model_dir):
    """The ids that end a reply: generation_config.json's eos_token_id (one or a list), else the tokenizer's."""
    path = Path(model_dir) / "generation_config.json"
    found = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
    ids = found if isinstance(found, list) else [found] if found is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


# -- generation defaults and the whole file

def generation_settings(model_dir, overrides=None):
    """Sampling defaults: generation_config.json's values, then mlc_llm's system defaults, then ``overrides``."""
    settings = dict(GENERATION_DEFAULTS)
    path = Path(model_dir) / "generation_config.json"
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        settings.update({k: found[k] for k in GENERATION_DEFAULTS if found.get(k) is not None})
    unknown = sorted(set(overrides or {}) - set(GENERATION_DEFAULTS))
    if unknown:
        raise ValueError(f"generation: unknown keys {unknown}; known: {', '.join(GENERATION_DEFAULTS)}")
    settings.update(overrides or {})
    return settings


def tokenizer_postproc(model_dir):
    """mlc_llm's tokenizer_info: how token strings become text, read from tokenizer.json's decoder."""
    info = {"token_postproc_method": "byte_fallback", "prepend_space_in_encode": False,
            "strip_space_in_decode": False}
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return info
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    decoders = _parts(tokenizer.get("decoder"), "decoders")
    if any(d.get("type") == "ByteLevel" for d in decoders):
        info["token_postproc_method"] = "byte_level"
    info["prepend_space_in_encode"] = any(n.get("type") == "Prepend" and n.get("prepend") == "\u2581"
                                          for n in _parts(tokenizer.get("normalizer"), "normalizers"))
    info["strip_space_in_decode"] = any(d.get("type") == "Strip" and d.get("content") == " "
                                        and d.get("start") == 1 and d.get("stop") == 0 for d in decoders)
    return info


def _parts(node, key):
    if not isinstance(node, dict):
        return []
    return node.get(key) or [] if node.get("type") == "Sequence" else [node]


def chat_config(model_config, quant, tokenizer, model_dir, conv_template, generation, end_ids):
    tokenizer_files = [name for name in TOKENIZER_FILES if (Path(model_dir) / name).is_file()]
    if not tokenizer_files:
        raise ValueError(f"{model_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return {
        "version": CHAT_CONFIG_VERSION,
        "model_type": "qwen2",
        "quantization": quant,
        "model_config": model_config,
        "vocab_size": model_config["vocab_size"],
        "active_vocab_size": len(tokenizer),
        "context_window_size": model_config["context_window_size"],
        "sliding_window_size": -1,
        "prefill_chunk_size": model_config["prefill_chunk_size"],
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        **generation,
        "tokenizer_files": tokenizer_files,
        "tokenizer_info": tokenizer_postproc(model_dir),
        "conv_template": conv_template,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1,
        "eos_token_id": (end_ids[0] if len(end_ids) == 1 else end_ids) if end_ids else 2,
        "model_task": "chat",
    }


# -- the model library

def stock_library(model_config, quant):
    """File name of the stock WebLLM library whose baked-in shapes equal this model's, or None."""
    shape = tuple(model_config[key] for key in STOCK_SHAPE_KEYS)
    for model, stock in STOCK_QWEN2_SHAPES.items():
        if shape == stock and model_config["prefill_chunk_size"] <= STOCK_PREFILL_CHUNK:
            return STOCK_LIBRARY_FILE.format(model=model, quant=quant)
    return None


def compile_command(out_dir, library_file):
    """The command that builds the WebGPU model library for an export (needs mlc_llm and emscripten)."""
    out_dir = Path(out_dir)
    return shlex.join(["mlc_llm", "compile", str(out_dir / "mlc-chat-config.json"), "--device", "webgpu",
                       "-o", str(out_dir / library_file)])


def library_plan(model_config, quant, out_dir, name):
    """What the web page loads: {"stock": file} or {"file": file, "compile_command": ...}."""
    stock = stock_library(model_config, quant)
    if stock:
        return {"stock": stock}
    library_file = COMPILED_LIBRARY_FILE.format(name=name, quant=quant)
    return {"file": library_file, "compile_command": compile_command(out_dir, library_file)}


def webllm_descriptor(name, quant, model_config, library):
    """What export/web/app-config.js turns into WebLLM's appConfig (written as webllm.json)."""
    return {
        "model_id": f"{name}-{quant}",
        "model_lib": {key: library[key] for key in ("stock", "file") if key in library},
        "overrides": {"context_window_size": model_config["context_window_size"]},
        "required_features": ["shader-f16"] if quant.split("_")[0].endswith("f16") else [],
    }
