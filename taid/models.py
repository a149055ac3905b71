"""Where models come from (a config JSON built here for the tiny default, or a hub id / local directory),
how they are identified, and the two views of a model the chunked loss needs (final hidden states, LM head)."""
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


def load_model(source, tokenizer=None, dtype="float32", seed=0, device_map=None):
    """A config file → freshly initialised (seeded) model; anything else → ``from_pretrained`` (a
    ``device_map`` such as "auto" spreads a large model over the visible devices)."""
    torch_dtype = _resolve_dtype(dtype)
    if is_config_file(source):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config_for(source, tokenizer))
        return model.to(torch_dtype) if torch_dtype != "auto" else model
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, device_map=device_map)


def final_hidden(model, batch):
    """Final (post-norm) hidden states ``[B, L, H]``, through the model's own forward (DDP/FSDP-safe);
    only one position's logits are materialised, the LM head is applied chunk by chunk later."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1]


def lm_head_weight(model):
    head = _unwrap(model).get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("LM heads with a bias are not supported by the chunked loss")
    return head.weight


def config_hash(config):
    settings = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def weights_hash(model):
    """A hash of every parameter and buffer, in name order: two models with the same hash compute the same."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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


def _unwrap(model):
    return getattr(model, "module", model)
