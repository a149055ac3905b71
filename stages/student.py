"""Training a student: what the `distill` and `instruct` stages share.

A stage section names the student to start from, the method (distillation with any loss of
``taid.losses``, or plain SFT: cross-entropy on the data's target tokens), the stage's own ``teacher:``
block (see ``stages.teacher_block``) and the training settings. The stage writes the student as a Hugging
Face model directory, its metrics and per-step curves for ``dvc plots``.
"""

from stages.common import StageError, section, stage_main, write_json
from stages.teacher_block import stage_teacher, teacher_block, teacher_identity
from stages.training import (
    add_training_arguments, load_prepared, require_finished,
    save_model, train_config, write_curves,
)
from taid.engines import process_state
from taid.models import is_config_file, load_model
from taid.objective import Objective
from taid.schedule import TAIDSchedule
from taid.trainer import train
from taid.vocab import check_same_tokenizer, load_tokenizer, shared_vocab_size

METHODS = ("distill", "sft")


def add_student_arguments(parser, stage):
    add_training_arguments(parser, stage, "student model")
    parser.add_argument("--teacher-cache", help="the stage's teacher cache (stage teacher_cache), for mode: cache")
    parser.add_argument("--plots", required=True, help="directory for the training curves")


def load_student(source, tokenizer, tokenizer_dir, seed):
    if not is_config_file(source):
        check_same_tokenizer(tokenizer, load_tokenizer(source), tokenizer_dir, source)
    return load_model(source, tokenizer, seed=seed)


def output_size(model):
    return model.get_output_embeddings().weight.shape[0]


def build_objective(stage, settings, params, args, tokenizer, student, cfg):
    """The stage's objective, its TAID schedule (or None) and what describes the run for checkpoints."""
    method = settings.get("method", "distill")
    if method not in METHODS:
        raise StageError(f"params.yaml: {stage}.method must be one of {METHODS}, got {method!r}")
    if method == "sft":
        print(f"{stage}: SFT (cross-entropy on target tokens) of {settings['student']}")
        return Objective.language_modelling(cfg.loss_chunk_size), None, {"method": "sft"}
    block = teacher_block(params, stage)
    identity = teacher_identity(block)
    n_shared = shared_vocab_size(tokenizer, identity["output_size"], output_size(student))
    teacher = stage_teacher(block, tokenizer, args.tokenizer, n_shared, args.teacher_cache, args.data)
    loss = settings["loss"]
    schedule = TAIDSchedule(**settings["taid"], total_steps=cfg.steps) if loss == "taid" else None
    objective = Objective(loss, settings.get("loss_params"), teacher, n_shared, settings.get("ce_weight", 0.0),
                          cfg.loss_chunk_size)
    print(f"{stage}: {loss} from {identity['source']} ({block['mode']}, {identity['output_size']} outputs) to a "
          f"{output_size(student)}-output student over {n_shared} shared ids")
    describe = {"loss": loss, "loss_params": settings.get("loss_params"), "taid": settings.get("taid"),
                "ce_weight": settings.get("ce_weight", 0.0), "student": settings["student"],
                "teacher": identity, "teacher_mode": block["mode"]}
    return objective, schedule, describe


def train_student(stage, args, params):
    settings, seed = section(params, stage), params.get("seed", 0)
    cfg = train_config(settings["train"], seed, stage)
    tokenizer = load_tokenizer(args.tokenizer)
    train_rows, valid_rows = load_prepared(args.data, tokenizer)
    student = load_student(settings["student"], tokenizer, args.tokenizer, seed)
    objective, schedule, describe = build_objective(stage, settings, params, args, tokenizer, student, cfg)
    print(f"{stage}: {sum(p.numel() for p in student.parameters()) / 1e6:.2f}M student parameters, "
          f"{len(train_rows)} training rows")
    result, student = train(student, objective, train_rows, valid_rows, cfg, schedule=schedule,
                            checkpoint_dir=args.checkpoints, describe=describe)
    require_finished(result, cfg.steps)
    if not process_state().is_main_process:  # under accelerate launch, one process writes
        return
    save_model(student, tokenizer, args.out, args.tokenizer)
    write_curves(result, args.plots)
    write_json(args.metrics, stage_metrics(result, schedule, cfg, describe))
    first, final = result.evals[0], result.evals[-1]
    change = f"val KL(teacher‖student) {first['val_kl']:.4f} → {final['val_kl']:.4f}, " if "val_kl" in final else ""
    print(f"{stage}: {change}val loss {first['val_loss']:.4f} → {final['val_loss']:.4f}, val ppl {final['val_ppl']:.2f}")


def stage_metrics(result, schedule, cfg, describe):
    first, final = result.evals[0], result.evals[-1]
    metrics = {**final, "val_loss_initial": first["val_loss"], "train_loss_final": result.history[-1]["loss"],
               "steps": cfg.steps, "method": describe.get("method", "distill")}
    if "val_kl" in first:
        metrics.update(val_kl_initial=first["val_kl"], loss=describe["loss"], teacher_mode=describe["teacher_mode"])
    if schedule is not None:
        metrics["t_final"] = schedule.t
    return metrics


def student_stage_main(stage, module, description):
    """``python -m stages.<module>`` for a student-training stage."""
    stage_main(stage, description, lambda parser: add_student_arguments(parser, stage),
               lambda args, params: train_student(stage, args, params), module=module)
