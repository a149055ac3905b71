"""Stage `tokenizer`: the one tokenizer teacher and student share.

Default: train a SentencePiece BPE model (byte fallback, ~8k pieces) on the NFKC-normalised train split
and save it as a Hugging Face tokenizer directory (with its ``tokenizer.model`` for GGUF export and the ChatML
chat template of ``chat.template`` for the instruct stage).
Real recipe: ``tokenizer.source`` names the teacher's hub id or local path, whose tokenizer is copied.
"""
import io
import tempfile
from pathlib import Path

import sentencepiece as spm
from transformers import LlamaTokenizer

from chat.template import CHATML_MARKERS, CHATML_TEMPLATE, check_single_token_markers
from stages.common import DocumentReport, atomic_dir, read_documents, section, stage_main
from taid.vocab import load_tokenizer

SPECIAL_PIECES = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}
CHAT_PIECES = list(CHATML_MARKERS)   # ChatML markers, for the instruct stage


def train_sentencepiece(texts, vocab_size, out_dir, threads=2):
    """Train SentencePiece BPE on ``texts`` and return it as a Hugging Face tokenizer saved in ``out_dir``."""
    lines = (line for text in texts for line in text.splitlines() if line.strip())
    model = io.BytesIO()  # written in memory: a model_prefix path would be recorded in the model's bytes
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines, model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=0.9995,
        # text is NFKC-normalised before it reaches the tokenizer; identity keeps the HF
        # tokenizer and SentencePiece in exact agreement (newlines included)
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, user_defined_symbols=CHAT_PIECES,
        num_threads=threads, minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "tokenizer.model").write_bytes(model.getvalue())
        tokenizer = LlamaTokenizer.from_pretrained(
            scratch, pad_token=SPECIAL_PIECES["pad"], unk_token=SPECIAL_PIECES["unk"],
            bos_token=SPECIAL_PIECES["bos"], eos_token=SPECIAL_PIECES["eos"], add_bos_token=False,
            # no "▁" before the first piece: llama.cpp can prefix every text or none, not the first only,
            # and GGUF exports must tokenize exactly as here
            add_prefix_space=False,
        )
    tokenizer.chat_template = CHATML_TEMPLATE
    check_single_token_markers(tokenizer)
    tokenizer.save_pretrained(out_dir)
    (Path(out_dir) / "tokenizer.model").write_bytes(model.getvalue())
    return tokenizer


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="tokenizer directory to write")


def run(args, params):
    settings, data = section(params, "tokenizer"), section(params, "data")
    with atomic_dir(args.out) as out:
        if settings["source"] == "sentencepiece":
            report = DocumentReport()
            texts = read_documents(data["train"], data.get("text_field", "text"), report)
            tokenizer = train_sentencepiece(texts, settings["vocab_size"], out)
            print(report.summary())
        else:
            tokenizer = load_tokenizer(settings["source"])
            tokenizer.save_pretrained(out)
    print(f"tokenizer: {len(tokenizer)} entries, eos={tokenizer.eos_token!r} → {args.out}")


if __name__ == "__main__":
    stage_main("tokenizer", __doc__, add_arguments, run)
