"""One export run: write the GGUF files, quantize, verify every file in llama.cpp, gather the metrics.

    settings = GGUFSettings.from_params(params["export"]["gguf"])
    metrics, failures = export_gguf("models/instruct", "models/export/gguf", settings)

``failures`` lists the checks that failed, one clear line each; the caller writes the metrics first and then
fails, so the numbers of a failed export can still be read.
"""
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from export.gguf import convert, quantize, tensor_types
from export.gguf_tables import OUT_TYPES, QUANTS, supported
from export.gguf_verify import (VerificationError, chat_template_check, check_checksums, check_structure,
                                greedy_reply, open_llama, perplexity, score_rows, token_mismatches,
                                write_checksums)
from export.gguf_vocab import tokenizer_notes
from taid.vocab import load_tokenizer
from stages.common import read_documents
from taid.data import unpack

# Japanese strings the tokenizer check always runs: kana, kanji, half- and full-width forms, emoji, spaces
# (leading, doubled, tabs, newlines), digits, Latin text, and the tokenizer's own special tokens in text.
SAMPLE_TEXTS = (
    "こんにちは、世界！",
    "東京は日本の首都です。富士山の高さは3776メートルです。",
    "ｶﾀｶﾅとカタカナ、ＡＢＣとABC、１２３と123。",
    "寿司🍣とラーメン🍜が好き😀👍🏻",
    " 先頭に空白、途中に  二つ、全角の　空白。",
    "改行\nと\tタブ\n\n段落",
    "Pythonで「Hello, world!」と表示する。",
)
CHAT = (
    {"role": "system", "content": "あなたは親切なアシスタントです。"},
    {"role": "user", "content": "日本でいちばん高い山は何ですか？"},
)


@dataclass
class GGUFSettings:
    """The ``export.gguf`` section of params.yaml (see the README for each key)."""
    name: str = "tsubame"
    types: list = field(default_factory=lambda: ["f16"])
    quants: list = field(default_factory=lambda: ["q8_0", "q5_k_m", "q4_k_m"])
    heldout: str = "data/sample/valid.jsonl.gz"
    heldout_tokens: int = 4096
    n_ctx: int = 0                       # 0: the model's context, at most 512
    threads: int = 0                     # 0: llama.cpp's defaults
    min_top1: float = 0.99
    max_ppl_drift: dict = field(default_factory=lambda: {"q8_0": 0.01, "q5_k_m": 0.05, "q4_k_m": 0.10})
    generation_tokens: int = 32

    @classmethod
    def from_params(cls, section, where="params.yaml: export.gguf"):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section or {}) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = cls(**(section or {}))
        settings.check(where)
        return settings

    def check(self, where):
        for kind, names, table in (("type", self.types, OUT_TYPES), ("quantization", self.quants, QUANTS)):
            for name in names:
                if name not in table:
                    raise ValueError(f"{where}: unknown GGUF {kind} {name!r}; supported: {supported(table)}")
        if "f16" not in self.types and self.quants:
            raise ValueError(f"{where}: quantizations are made from the f16 file: add f16 to types")
        for name in self.quants:
            if name not in self.max_ppl_drift:
                raise ValueError(f"{where}: max_ppl_drift has no limit for {name}")


def export_gguf(model_dir, out_dir, settings, tokenizer_dir=None, f16_from=None, log=print):
    """Write and verify the GGUF files of ``model_dir`` in ``out_dir``; returns (metrics, failures).

    ``f16_from``: a folder holding an F16 file exported earlier (with its SHA256SUMS) to quantize instead
    of converting again; its checksum is checked first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, timing = {}, {}
    reference = _reference_file(model_dir, out_dir, settings, tokenizer_dir, f16_from, files, timing, log)
    fallbacks = {}
    for quant in settings.quants:
        done = quantize(reference, out_dir / f"{settings.name}-{quant}.gguf", quant, settings.threads or None)
        files[quant], timing[f"quantize_{quant}_s"] = done.path, round(done.seconds, 2)
        fallbacks[quant] = _count_fallbacks(done.fallbacks)
        log(f"gguf: {done.path.name} in {done.seconds:.1f} s: {tensor_types(done.path)}"
            + (f"; K-quant fallbacks {fallbacks[quant]}" if done.fallbacks else ""))
    write_checksums(out_dir, [p for p in files.values() if p.parent == out_dir])
    started = time.perf_counter()
    metrics, failures = verify_files(files, model_dir, settings, tokenizer_dir, log)
    timing["verify_s"] = round(time.perf_counter() - started, 2)
    for quant, counts in fallbacks.items():
        metrics["files"][quant]["fallbacks"] = counts
    metrics["timing"] = timing
    return {"format": "gguf", "quantizations": quantization_table(metrics["files"]), **metrics}, failures


def quantization_table(files):
    """Per file: size, perplexity and its drift against the F16 file, in the schema the model card reads."""
    reference = files.get("f16", {}).get("perplexity")
    table = {}
    for kind, result in files.items():
        perplexity = result.get("perplexity")
        drift = None if reference is None or perplexity is None else perplexity - reference
        table[kind] = {"size_bytes": result.get("bytes"), "perplexity": perplexity, "perplexity_reference": reference,
                       "perplexity_drift": drift, "top1_agreement": result.get("top1_agreement")}
    return table


def _count_fallbacks(fallbacks):
    """{"Q4_K→Q5_0": 11, ...}: tensors llama.cpp could not write in the K-quant it chose for them."""
    counts = {}
    for fallback in fallbacks:
        key = f"{fallback['wanted']}→{fallback['written']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _reference_file(model_dir, out_dir, settings, tokenizer_dir, f16_from, files, timing, log):
    """The file the quantizer reads (and the logits check uses): converted now, or taken from ``f16_from``."""
    if f16_from is not None:
        check_checksums(f16_from)
        matches = sorted(Path(f16_from).glob("*-f16.gguf"))
        if len(matches) != 1:
            raise VerificationError(f"{f16_from}: expected one *-f16.gguf file, found {len(matches)}")
        files["f16"] = matches[0]
        return matches[0]
    for out_type in settings.types:
        conversion = convert(model_dir, out_dir / f"{settings.name}-{out_type}.gguf", out_type,
                             tokenizer_dir=tokenizer_dir, name=settings.name)
        files[out_type] = conversion.path
        timing[f"convert_{out_type}_s"] = round(conversion.seconds, 2)
        log(f"gguf: {conversion.path.name}: {conversion.tensors} tensors, {conversion.bytes:,} bytes "
            f"in {conversion.seconds:.1f} s")
        for note in conversion.notes:
            log(f"gguf: note: {note}")
    return files["f16"] if "f16" in files else files[settings.types[0]]


# -- verification

def verify_files(files, model_dir, settings, tokenizer_dir=None, log=print):
    """Every check of export.gguf_verify on each file; returns (metrics, failures)."""
    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    n_ctx = settings.n_ctx or min(model.config.max_position_embeddings, 512)
    rows = heldout_rows(settings.heldout, tokenizer, settings.heldout_tokens, n_ctx, model.config.vocab_size)
    texts = list(SAMPLE_TEXTS) + _special_token_texts(tokenizer) + _chat_prompts(tokenizer)
    metrics = {"heldout": {"source": str(settings.heldout), "tokens": sum(len(r) for r in rows), "n_ctx": n_ctx},
               "files": {}}
    failures = []
    for kind, path in files.items():
        compare = kind in OUT_TYPES   # the converter's own files are compared with the model itself
        result = verify_file(path, tokenizer, model if compare else None, rows, texts, n_ctx, settings)
        metrics["files"][kind] = result
        failures += [f"{path.name}: {problem}" for problem in result.pop("problems")]
        log(f"gguf: verified {path.name}: perplexity {result['perplexity']:.3f}"
            + (f", top-1 agreement {result['top1_agreement']:.4f}, max |Δlogit| {result['max_abs_logit_diff']:.2e}"
               if compare else ""))
    failures += _drift(metrics["files"], settings)
    metrics["notes"] = tokenizer_notes(tokenizer)
    if metrics["notes"] and any(r["tokenizer"]["mismatches"] for r in metrics["files"].values()):
        failures.append(f"the likely cause: {'; '.join(metrics['notes'])}")
    metrics["hf_perplexity"] = next((r["hf_perplexity"] for r in metrics["files"].values() if "hf_perplexity" in r),
                                    None)
    return metrics, failures


def verify_file(path, tokenizer, model, rows, texts, n_ctx, settings):
    """One file's results; ``problems`` lists what failed (empty when it passed)."""
    result = {"file": Path(path).name, **check_structure(path), "tensor_types": tensor_types(path)}
    problems = []
    with open_llama(path, n_ctx, settings.threads or None) as llama:
        mismatches = token_mismatches(llama, tokenizer, texts)
        result["tokenizer"] = {"texts": len(texts), "mismatches": len(mismatches), "examples": mismatches[:3]}
        if mismatches:
            problems.append(_tokenizer_problem(mismatches, len(texts)))
        if tokenizer.chat_template:
            template_problem = chat_template_check(llama, tokenizer, list(CHAT))
            result["chat_template"] = template_problem or "same"
            problems += [f"chat template: {template_problem}"] if template_problem else []
        totals = score_rows(llama, rows, model)
        result["perplexity"] = perplexity(totals["nll"], totals["tokens"])
        if not math.isfinite(result["perplexity"]):
            problems.append("perplexity is not finite (damaged weights?)")
        if model is not None:
            problems += _compare_with_model(result, totals, settings)
        if tokenizer.chat_template:
            result["generation"] = greedy_reply(llama, list(CHAT), settings.generation_tokens)
    result["problems"] = problems
    return result


def _tokenizer_problem(mismatches, n_texts, shown=12):
    first = mismatches[0]
    ids = lambda tokens: str(tokens[:shown])[:-1] + (", …]" if len(tokens) > shown else "]")   # noqa: E731
    return (f"tokenizer: {len(mismatches)} of {n_texts} texts tokenize differently in llama.cpp, e.g. "
            f"{first['text'][:30]!r}: {ids(first['llama'])} there, {ids(first['hf'])} in transformers")


def _compare_with_model(result, totals, settings):
    result["hf_perplexity"] = perplexity(totals["hf_nll"], totals["tokens"])
    result["top1_agreement"] = totals["agree"] / totals["positions"]
    result["max_abs_logit_diff"] = totals["max_abs_diff"]
    if not result["top1_agreement"] >= settings.min_top1:   # NaN fails too
        return [f"top-1 agreement with the model {result['top1_agreement']:.4f} < {settings.min_top1}"]
    return []


def _drift(results, settings):
    """Perplexity drift of each quantization against the F16 file; a drift above its limit fails."""
    failures = []
    base = results.get("f16", {}).get("perplexity")
    for quant in settings.quants:
        if quant in results and base:
            drift = results[quant]["perplexity"] / base - 1.0
            results[quant]["ppl_drift_vs_f16"] = drift
            if not drift <= settings.max_ppl_drift[quant]:
                failures.append(f"{quant}: perplexity drift vs f16 {drift:+.4f} > {settings.max_ppl_drift[quant]}")
    return failures


# -- inputs of the checks

def heldout_rows(source, tokenizer, n_tokens, n_ctx, n_vocab):
    """Up to ``n_tokens`` held-out token ids in rows of at most ``n_ctx``: from a packed split (``.npy``,
    ids of the model's tokenizer) or from JSON Lines documents (tokenized here, EOS after each)."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"held-out text {source} not found")
    if source.suffix == ".npy":
        stream = unpack(np.load(source)).tolist()
    else:
        stream = []
        for text in read_documents(source):
            stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            if len(stream) >= n_tokens:
                break
    stream = stream[:n_tokens]
    if len(stream) < 2:
        raise ValueError(f"held-out text {source}: fewer than 2 tokens")
    if max(stream) >= n_vocab:
        raise ValueError(f"held-out text {source}: token id {max(stream)} is outside the model's {n_vocab} rows")
    return [stream[i: i + n_ctx] for i in range(0, len(stream), n_ctx) if len(stream[i: i + n_ctx]) >= 2]


def _special_token_texts(tokenizer):
    """Each added token inside Japanese text, e.g. "猫<|im_end|>犬"."""
    return [f"猫{token}犬" for token in tokenizer.get_added_vocab()]


def _chat_prompts(tokenizer):
    if not tokenizer.chat_template:
        return []
    return [tokenizer.apply_chat_template(list(CHAT), add_generation_prompt=True, tokenize=False),
            tokenizer.apply_chat_template(list(CHAT) + [{"role": "assistant", "content": "富士山です。"}],
                                          tokenize=False)]
