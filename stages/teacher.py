"""Stage `teacher`: the model every distillation step asks.

Default (``teacher.model`` is a config JSON): train that tiny Qwen2 model on the prepared corpus, then
(``teacher.chat_train``) on the chat data's assistant tokens, so that it can teach the instruct stage
too, as Qwen2.5-32B-Instruct teaches both stages of the real recipe. Real recipe (a hub id or local
path): resolve it, check its tokenizer is the pipeline's, and record its identity. Either way ``<out>/teacher.json`` says where the teacher lives and what it is; a stage whose
``teacher.source`` is this directory refuses a teacher that no longer matches it.
"""
from accelerate import PartialState

from stages.common import StageError, atomic_dir, section, stage_main, write_json
from stages.training import (
    add_training_arguments, load_prepared, require_finished,
    save_model, train_config,
)
from taid.models import config_for, is_config_file, load_model, model_identity, weights_hash
from taid.objective import Objective
from taid.trainer import train
from taid.vocab import check_same_tokenizer, load_tokenizer


def train_teacher(settings, seed, tokenizer, args):
    """Language modelling on the corpus, then on the chat data's target tokens when ``chat_train`` asks."""
    model = load_model(settings["model"], tokenizer, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"teacher: training {settings['model']} ({n_params / 1e6:.2f}M parameters)")
    metrics = {"n_params": n_params}
    phases = [("corpus", settings["train"], args.data, args.checkpoints)]
    if settings.get("chat_train", {}).get("steps"):
        if not args.chat:
            raise StageError("teacher.chat_train is set but no --chat data directory was given")
        phases.append(("chat", settings["chat_train"], args.chat, f"{args.checkpoints}-chat"))
    for phase, train_settings, data_dir, checkpoints in phases:
        model, evals = train_phase(model, phase, train_settings, seed, tokenizer, data_dir, checkpoints, settings)
        metrics.update({(k if phase == "corpus" else f"chat_{k}"): v for k, v in evals.items()})
    if not PartialState().is_main_process:  # under accelerate launch, one process writes
        return None
    identity = {**model_identity(args.out, model.config, tokenizer), "dtype": "float32",
                "weights_sha256": weights_hash(model)}
    save_model(model, tokenizer, args.out, {"teacher.json": identity})
    return metrics


def train_phase(model, phase, train_settings, seed, tokenizer, data_dir, checkpoints, settings):
    cfg = train_config(train_settings, seed, f"teacher ({phase})")
    train_rows, valid_rows = load_prepared(data_dir, tokenizer)
    print(f"teacher: {phase} phase, {cfg.steps} steps on {len(train_rows)} rows of {data_dir}")
    objective = Objective.language_modelling(chunk_size=cfg.loss_chunk_size)
    result, model = train(model, objective, train_rows, valid_rows, cfg, checkpoint_dir=checkpoints,
                          describe={"model": settings["model"], "phase": phase})
    require_finished(result, cfg.steps)
    return model, result.evals[-1]


def resolve_teacher(settings, tokenizer, tokenizer_dir, out_dir):
    source = settings["model"]
    try:
        config = config_for(source)
        teacher_tokenizer = load_tokenizer(source)
    except OSError as error:
        raise StageError(f"teacher {source!r} could not be resolved: {error}") from error
    check_same_tokenizer(teacher_tokenizer, tokenizer, source, tokenizer_dir)
    identity = {**model_identity(source, config, teacher_tokenizer), "dtype": settings.get("dtype", "auto")}
    with atomic_dir(out_dir) as out:
        write_json(out / "teacher.json", identity)
    print(f"teacher: {source} ({identity['n_params'] / 1e9:.2f}B parameters, {identity['output_size']} outputs)")
    return {"n_params": identity["n_params"], "output_size": identity["output_size"]}


def add_arguments(parser):
    add_training_arguments(parser, "teacher", "teacher")
    parser.add_argument("--chat", help="prepared chat data (stage prepare_chat), for teacher.chat_train")


def run(args, params):
    settings = section(params, "teacher")
    tokenizer = load_tokenizer(args.tokenizer)
    if is_config_file(settings["model"]):
        metrics = train_teacher(settings, params.get("seed", 0), tokenizer, args)
    else:
        metrics = resolve_teacher(settings, tokenizer, args.tokenizer, args.out)
    if metrics is not None:
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    stage_main("teacher", __doc__, add_arguments, run)
