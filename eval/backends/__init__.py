"""Backends: one small interface, so the same task code runs on a Hugging Face model and on a GGUF export.

A backend has a ``name`` and:

- ``loglikelihood([(context, continuation), …]) → [float]``: summed log-probability of each continuation;
- ``generate([prompt, …], max_new_tokens, stop) → [str]``: greedy text, cut at the first stop sequence;
- ``chat([[{"role", "content"}, …], …], max_new_tokens) → [str]``: the next assistant reply through the
  model's chat template; ``has_chat_template() → bool``;
- ``packed_loss_sums(rows) → (summed NLL, tokens)`` over packed ``[n, seq_len]`` rows (PAD = -1);
- ``tokenizer_fingerprint() → str | None``: taid.vocab's fingerprint, or None when it cannot be computed.

Each call gets one batch; the runner does the batching and the progress bars.
"""
from eval.data import DataError

BACKENDS = ("hf", "gguf")


def load_backend(name, model, dtype="float32", device="auto"):
    """The backend ``name`` on ``model`` (a model directory for ``hf``, a ``.gguf`` file for ``gguf``)."""
    if name == "hf":
        from eval.backends.hf import HFBackend
        return HFBackend.from_directory(model, dtype=dtype, device=device)
    if name == "gguf":
        from eval.backends.gguf import GGUFBackend
        return GGUFBackend.from_file(model)
    raise DataError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
