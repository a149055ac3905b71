"""Stage `prepare`: NFKC-normalise, tokenize and pack the corpus into fixed-length training sequences.

Writes ``train.npy`` and ``valid.npy`` (int32 ``[n, seq_len]``, see ``taid.data``) and ``meta.json``
(sequence length, token counts, the tokenizer's fingerprint) into the output directory.
"""
import numpy as np
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from stages.common import DocumentReport, StageError, atomic_dir, read_documents, section, stage_main, write_json
from taid.data import pack_documents, unpack
from taid.vocab import tokenizer_fingerprint


def tokenize_documents(tokenizer, texts, batch_size=256):
    """Token id lists for ``texts`` (no special tokens added), batched for the fast tokenizer."""
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
            batch = []
    if batch:
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]


def prepare_split(tokenizer, path, text_field, seq_len, name):
    report = DocumentReport()
    texts = tqdm(read_documents(path, text_field, report), desc=f"prepare {name}", unit="doc")
    packed = pack_documents(tokenize_documents(tokenizer, texts), tokenizer.eos_token_id, seq_len)
    if report.read == 0:
        raise StageError(f"{path}: no usable documents ({report.summary()})")
    print(f"{name}: {report.summary()}; {len(unpack(packed))} tokens in {len(packed)} sequences of {seq_len}")
    return packed, {"documents": report.read, "skipped": report.skipped, "tokens": int(len(unpack(packed))),
                    "sequences": int(len(packed))}


def add_arguments(parser):
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (stage tokenizer)")
    parser.add_argument("--out", required=True, help="directory for train.npy, valid.npy and meta.json")


def run(args, params):
    data, seq_len = section(params, "data"), section(params, "prepare")["seq_len"]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if tokenizer.eos_token_id is None:
        raise StageError(f"tokenizer {args.tokenizer} has no EOS token to separate documents")
    meta = {"seq_len": seq_len, "eos_id": tokenizer.eos_token_id, "tokenizer_sha256": tokenizer_fingerprint(tokenizer)}
    with atomic_dir(args.out) as out:
        for name in ("train", "valid"):
            packed, meta[name] = prepare_split(tokenizer, data[name], data.get("text_field", "text"), seq_len, name)
            np.save(out / f"{name}.npy", packed)
        write_json(out / "meta.json", meta)


if __name__ == "__main__":
    stage_main("prepare", __doc__, add_arguments, run)
