"""Checks of a GGUF file against the Hugging Face model it came from, run in llama.cpp itself.

- ``check_structure``: gguf's reader parses the file, every tensor's data lies inside it, the keys llama.cpp
  needs are there (a truncated or damaged file fails here, before llama.cpp sees it);
- ``check_checksums``: the files still hash to what the export recorded (any byte changed since);
- ``token_mismatches``: texts whose ids in llama.cpp differ from the Hugging Face tokenizer's (both parse
  special tokens, as ``tokenizer(text)`` does);
- ``chat_template_check``: the template stored in the file, rendered by llama-cpp-python, gives the prompt
  transformers renders;
- ``score_rows``: summed next-token NLL over held-out rows in llama.cpp and, given the Hugging Face model,
  its NLL and the agreement of the two logits (top-1, max |Δ|);
- ``greedy_reply``: a greedy chat reply through llama-cpp-python's chat API (what llama.cpp apps run).
"""
import hashlib
import math
from contextlib import contextmanager
from pathlib import Path

import gguf
import numpy as np
import torch

from export.gguf_tables import REQUIRED_KEYS

CHECKSUMS = "SHA256SUMS"


class VerificationError(ValueError):
    """A GGUF file that failed a check; the message names the file and the check."""


# -- the file itself

def check_structure(path):
    """Parse ``path`` with gguf's reader; returns {architecture, tensors, bytes} or raises VerificationError."""
    path = Path(path)
    if not path.is_file():
        raise VerificationError(f"{path}: not found")
    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(path)
    except Exception as error:   # the reader raises whatever numpy or struct raise on bad bytes
        raise VerificationError(f"{path}: not a readable GGUF file (truncated or corrupt: {error})") from None
    for tensor in reader.tensors:
        end = tensor.data_offset + tensor.n_bytes
        if end > size or tensor.data.nbytes != tensor.n_bytes:
            raise VerificationError(f"{path}: truncated: tensor {tensor.name} ends at byte {end}, "
                                    f"the file has {size}")
    arch = _field_value(reader, gguf.Keys.General.ARCHITECTURE)
    missing = [key.format(arch=arch) for key in REQUIRED_KEYS if reader.get_field(key.format(arch=arch)) is None]
    if missing:
        raise VerificationError(f"{path}: missing metadata {', '.join(missing)}")
    return {"architecture": arch, "tensors": len(reader.tensors), "bytes": size}


def metadata(path):
    """Every scalar, string and array key of a GGUF file as plain Python values (token lists excepted)."""
    reader = gguf.GGUFReader(path)
    return {name: _field_value(reader, name) for name in reader.fields
            if not name.startswith("GGUF.") and name not in (gguf.Keys.Tokenizer.LIST, gguf.Keys.Tokenizer.MERGES)}


def _field_value(reader, name):
    field = reader.get_field(name)
    return None if field is None else field.contents()


def sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder, paths):
    lines = [f"{sha256(p)}  {Path(p).name}\n" for p in paths]
    (Path(folder) / CHECKSUMS).write_text("".join(lines), encoding="utf-8")


def check_checksums(folder):
    """Raise VerificationError naming each file of ``folder``/SHA256SUMS that changed or went missing."""
    listing = Path(folder) / CHECKSUMS
    if not listing.is_file():
        raise VerificationError(f"{listing}: not found")
    bad = []
    for line_number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        digest, _, name = line.partition("  ")
        path = Path(folder) / name
        if not name or not path.is_file():
            bad.append(f"{listing}:{line_number}: {name or line!r} is missing")
        elif sha256(path) != digest:
            bad.append(f"{path}: content changed since export (SHA-256 differs)")
    if bad:
        raise VerificationError("; ".join(bad))


# -- in llama.cpp

@contextmanager
def open_llama(path, n_ctx, threads=None):
    """The file loaded by llama.cpp with logits for every position; closed on exit."""
    from llama_cpp import Llama
    try:
        llama = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                      n_threads=threads, seed=0)
    except ValueError as error:
        raise VerificationError(f"{path}: llama.cpp cannot load it ({error})") from None
    try:
        yield llama
    finally:
        llama.close()


def llama_ids(llama, text):
    return llama.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def token_mismatches(llama, tokenizer, texts):
    """[{text, hf, llama}] for each text the two tokenizers split differently."""
    mismatches = []
    for text in texts:
        expected, got = tokenizer(text)["input_ids"], llama_ids(llama, text)
        if expected != got:
            mismatches.append({"text": text, "hf": expected, "llama": got})
    return mismatches


def chat_template_check(llama, tokenizer, conversation):
    """None when the file's template renders ``conversation`` as transformers does, else what differs."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    stored = llama.metadata.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    if stored != tokenizer.chat_template:
        return "the file's tokenizer.chat_template differs from the tokenizer's"
    expected = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    formatter = Jinja2ChatFormatter(template=stored, eos_token=_token_text(llama, llama.token_eos()),
                                    bos_token=_token_text(llama, llama.token_bos()))
    got = formatter(messages=conversation).prompt
    return None if got == expected else f"llama-cpp-python renders {got!r}, transformers {expected!r}"


def _token_text(llama, token_id):
    return llama.detokenize([token_id], special=True).decode("utf-8", errors="replace") if token_id >= 0 else ""


def llama_logits(llama, tokens):
    llama.reset()
    llama.eval(list(tokens))
    return np.array(llama.scores[: len(tokens)], dtype=np.float32)


@torch.no_grad()
def hf_logits(model, tokens):
    return model(torch.tensor([list(tokens)])).logits[0].float().numpy()


def score_rows(llama, rows, model=None):
    """Summed next-token NLL (nats) and token count in llama.cpp over ``rows`` (lists of ids); with the
    Hugging Face ``model`` also its NLL and how its logits agree with llama.cpp's at every position."""
    totals = {"nll": 0.0, "tokens": 0}
    if model is not None:
        totals.update(hf_nll=0.0, agree=0, positions=0, max_abs_diff=0.0)
    for row in rows:
        logits = llama_logits(llama, row)
        totals["nll"] += _nll(logits, row)
        totals["tokens"] += len(row) - 1
        if model is not None:
            reference = hf_logits(model, row)
            totals["hf_nll"] += _nll(reference, row)
            totals["agree"] += int((reference.argmax(-1) == logits.argmax(-1)).sum())
            totals["positions"] += len(row)
            totals["max_abs_diff"] = max(totals["max_abs_diff"], float(np.abs(reference - logits).max()))
    return totals


def _nll(logits, row):
    """Summed −log p(row[i+1] | row[..i]) in float64; NaN or inf logits give NaN."""
    logits = logits[:-1].astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return float((log_z - logits[np.arange(len(row) - 1), row[1:]]).sum())


def perplexity(nll, tokens):
    return math.exp(nll / tokens) if tokens and math.isfinite(nll) else float("nan")


def greedy_reply(llama, conversation, max_tokens):
    """The assistant's greedy reply through llama-cpp-python's chat API (the file's own template)."""
    reply = llama.create_chat_completion(messages=conversation, max_tokens=max_tokens, temperature=0.0,
                                         top_k=1, seed=0)
    return reply["choices"][0]["message"]["content"] or ""
