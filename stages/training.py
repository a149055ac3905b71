"""Pieces the training stages (teacher, distill, instruct) share: data in, model and curves out."""
import json
import shutil
from pathlib import Path

from stages.common import StageError, atomic_dir, file_sha256, write_csv, write_json
from taid.data import load_split
from taid.trainer import TrainConfig
from taid.vocab import tokenizer_fingerprint


def add_training_arguments(parser, stage, model_kind):
    """The paths every training stage takes: its inputs, its model and metrics out, its checkpoints."""
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (stage tokenizer)")
    parser.add_argument("--data", required=True, help="prepared data directory (stage prepare)")
    parser.add_argument("--out", required=True, help=f"{model_kind} directory to write")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--checkpoints", default=f"checkpoints/{stage}", help="checkpoint directory for resume")


SPLITS = ("train", "valid")


def load_prepared(data_dir, tokenizer):
    """The packed train and validation splits (corpus or chat data), checked to be tokenized by ``tokenizer``."""
    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise StageError(f"{meta_path} not found; run the prepare stage first")
    meta = json.loads(meta_path.read_text())
    if meta["tokenizer_sha256"] != tokenizer_fingerprint(tokenizer):
        raise StageError(f"{data_dir} was tokenized with another tokenizer; rerun the prepare stage")
    return tuple(load_split(data_dir, name) for name in SPLITS)


def data_sha256(data_dir):
    """Per split, a hash of its token (and target) arrays: what a teacher cache was computed on."""
    hashes = {}
    for name in SPLITS:
        files = [Path(data_dir) / f"{name}.npy", Path(data_dir) / f"{name}.targets.npy"]
        hashes[name] = ":".join(file_sha256(f) for f in files if f.is_file())
    return hashes


def train_config(stage_params, seed, stage):
    return TrainConfig.from_params({"seed": seed, **stage_params}, where=f"params.yaml: {stage}.train")


def save_model(model, tokenizer, out_dir, tokenizer_dir, extra_files=None):
    """A Hugging Face model directory, with the tokenizer's SentencePiece model when it has one (the
    GGUF export reads its scores, which ``save_pretrained`` leaves out)."""
    with atomic_dir(out_dir) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        sentencepiece_model = Path(tokenizer_dir) / "tokenizer.model"
        if sentencepiece_model.is_file():
            shutil.copyfile(sentencepiece_model, out / "tokenizer.model")
        for name, obj in (extra_files or {}).items():
            write_json(out / name, obj)


def write_curves(result, plots_dir):
    """Per-step training rows and per-validation rows as CSV for ``dvc plots``."""
    plots_dir = Path(plots_dir)
    train_columns = ["step", "loss", "lr"] + (["t"] if result.history and "t" in result.history[0] else [])
    write_csv(plots_dir / "train.csv", result.history, train_columns)
    val_columns = ["step"] + [k for k in ("val_loss", "val_kl", "val_ppl") if result.evals and k in result.evals[0]]
    write_csv(plots_dir / "val.csv", result.evals, val_columns)


def require_finished(result, steps):
    if not result.finished:
        done = result.history[-1]["step"] if result.history else 0
        raise StageError(f"stopped at step {done} of {steps} (stop_after); set resume: true and rerun to continue")
