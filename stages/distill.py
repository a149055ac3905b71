"""Stage `distill`: distil the student from the teacher with the loss chosen in params (TAID by default).

Writes the student as a Hugging Face model directory, ``metrics/distill.json`` (final validation loss,
KL(teacher ‖ student), perplexity, final t) and per-step curves for ``dvc plots``.
"""
import json
from pathlib import Path

from accelerate import PartialState
from transformers import AutoTokenizer

from stages.common import StageError, section, stage_main, write_json
from stages.training import (
    add_training_arguments, load_prepared, require_finished,
    save_model, train_config, write_curves,
)
from taid.models import config_hash, is_config_file, load_model
from taid.objective import Objective
from taid.schedule import TAIDSchedule
from taid.trainer import train
from taid.vocab import check_same_tokenizer, shared_vocab_size


def load_teacher(teacher_dir, tokenizer, tokenizer_dir):
    """The teacher the teacher stage recorded, refused if it or its tokenizer changed since."""
    record_path = Path(teacher_dir) / "teacher.json"
    if not record_path.is_file():
        raise StageError(f"{record_path} not found; run the teacher stage first")
    record = json.loads(record_path.read_text())
    check_same_tokenizer(AutoTokenizer.from_pretrained(record["source"]), tokenizer, record["source"], tokenizer_dir)
    teacher = load_model(record["source"], dtype=record.get("dtype", "auto"))
    if config_hash(teacher.config) != record["config_sha256"]:
        raise StageError(f"teacher {record['source']} is not the model recorded in {record_path}; "
                         "rerun the teacher stage")
    return teacher.requires_grad_(False).eval()


def load_student(source, tokenizer, tokenizer_dir, seed):
    if not is_config_file(source):
        check_same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(source), tokenizer_dir, source)
    return load_model(source, tokenizer, seed=seed)


def output_size(model):
    return model.get_output_embeddings().weight.shape[0]


def add_arguments(parser):
    add_training_arguments(parser, "distill", "student model")
    parser.add_argument("--teacher", required=True, help="teacher directory (stage teacher)")
    parser.add_argument("--plots", required=True, help="directory for the training curves")


def run(args, params):
    settings, seed = section(params, "distill"), params.get("seed", 0)
    cfg = train_config(settings["train"], seed, "distill")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    train_rows, valid_rows = load_prepared(args.data, tokenizer)
    teacher = load_teacher(args.teacher, tokenizer, args.tokenizer)
    student = load_student(settings["student"], tokenizer, args.tokenizer, seed)
    n_shared = shared_vocab_size(tokenizer, output_size(teacher), output_size(student))
    loss = settings["loss"]
    schedule = TAIDSchedule(**settings["taid"], total_steps=cfg.steps) if loss == "taid" else None
    objective = Objective(loss, settings.get("loss_params"), teacher, n_shared, settings.get("ce_weight", 0.0),
                          cfg.loss_chunk_size)
    print(f"distill: {loss} from {output_size(teacher)}-output teacher to {output_size(student)}-output student "
          f"over {n_shared} shared ids, {sum(p.numel() for p in student.parameters()) / 1e6:.2f}M student parameters")
    describe = {"loss": loss, "loss_params": settings.get("loss_params"), "taid": settings["taid"],
                "ce_weight": settings.get("ce_weight", 0.0), "student": settings["student"],
                "teacher": config_hash(teacher.config)}
    result, student = train(student, objective, train_rows, valid_rows, cfg, schedule=schedule,
                            checkpoint_dir=args.checkpoints, describe=describe)
    require_finished(result, cfg.steps)
    if not PartialState().is_main_process:  # under accelerate launch, one process writes
        return
    save_model(student, tokenizer, args.out)
    write_curves(result, args.plots)
    final, first = result.evals[-1], result.evals[0]
    metrics = {**final, "val_kl_initial": first["val_kl"], "train_loss_final": result.history[-1]["loss"],
               "steps": cfg.steps, "loss": loss}
    if schedule is not None:
        metrics["t_final"] = schedule.t
    write_json(args.metrics, metrics)
    print(f"distill: val KL(teacher‖student) {first['val_kl']:.4f} → {final['val_kl']:.4f}, "
          f"val ppl {final['val_ppl']:.2f}")


if __name__ == "__main__":
    stage_main("distill", __doc__, add_arguments, run)
