"""Where models come from: a config JSON (built here, the tiny default) or a hub id / local directory."""
import hashlib
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from taid.vocab import tokenizer_fingerprint

# Keys that say how a config was saved, not what model it describes.
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures")


def is_config_file(source):
    return str(source).endswith(".json") and Path(source).is_file()


def config_for(source, tokenizer=None):
    """The model config a source describes; a config file takes its vocabulary from ``tokenizer``."""
    if not is_config_file(source):
        return AutoConfig.from_pretrained(source)
    settings = json.loads(Path(source).read_text())
    model_type = settings.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"{source}: a model config needs a 'model_type' (e.g. \"qwen2\")")
    if tokenizer is not None:
        settings.update(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    return AutoConfig.for_model(model_type, **settings)


def load_model(source, tokenizer=None, dtype="float32", seed=0):
    """A config file → freshly initialised (seeded) model; anything else → ``from_pretrained``."""
    torch_dtype = _resolve_dtype(dtype)
    if is_config_file(source):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config_for(source, tokenizer))
        return model.to(torch_dtype) if torch_dtype != "auto" else model
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)


def config_hash(config):
    settings = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def model_identity(source, config, tokenizer):
    """What a later stage checks to be sure it talks to the same model."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return {
        "source": str(source),
        "model_type": config.model_type,
        "config_sha256": config_hash(config),
        "output_size": config.vocab_size,
        "n_params": n_params,
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
    }


def _resolve_dtype(dtype):
    if dtype == "auto":
        return "auto"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return getattr(torch, dtype)
