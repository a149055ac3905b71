"""Stage `teacher` (and `teacher_chat`): the models the distillation stages ask.

Default (``teacher.model`` is a config JSON): train that tiny Qwen2 model on the prepared corpus. With
``--init`` (stage `teacher_chat`): continue a teacher trained here on the chat data's assistant tokens
(``teacher.chat_train``), giving the instruct stage a teacher that knows the chat template, as
Qwen2.5-32B-Instruct does in the real recipe. Real recipe (a hub id or local path): resolve it, check its
tokenizer is the pipeline's and record its identity; with ``--init`` the resolved teacher, an instruct
model already, is recorded as it is. Either way ``<out>/teacher.json`` says where the teacher lives and
what it is; a stage whose ``teacher.source`` is this directory refuses a teacher that no longer matches.
"""
import json
from pathlib import Path


from stages.common import StageError, atomic_dir, section, stage_main, write_json
from stages.training import (
    add_training_arguments, load_prepared, require_finished,
    save_model, train_config,
)
from taid.engines import process_state
from taid.models import config_for, is_config_file, load_model, model_identity, weights_hash
from taid.objective import Objective
from taid.trainer import train
from taid.vocab import check_same_tokenizer, load_tokenizer


def train_teacher(settings, seed, tokenizer, args):
    """Language modelling on the corpus."""
    model = load_model(settings["model"], tokenizer, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"teacher: training {settings['model']} ({n_params / 1e6:.2f}M parameters)")
    model, evals = train_phase(model, "corpus", settings["train"], seed, tokenizer, args.data, args.checkpoints,
                               settings)
    return save_teacher(model, tokenizer, args, {**evals, "n_params": n_params})


def continue_teacher(settings, seed, tokenizer, args):
    """The chat phase: a teacher trained here learns the chat data; a resolved one is recorded as it is."""
    record = json.loads((Path(args.init) / "teacher.json").read_text())
    if record["source"] != str(args.init):
        with atomic_dir(args.out) as out:
            write_json(out / "teacher.json", record)
        print(f"teacher: {record['source']} teaches the chat data as it is")
        return {"source": record["source"]}
    model = load_model(args.init)
    model, evals = train_phase(model, "chat", settings["chat_train"], seed, tokenizer, args.data, args.checkpoints,
                               settings)
    return save_teacher(model, tokenizer, args, evals)


def save_teacher(model, tokenizer, args, metrics):
    if not process_state().is_main_process:  # under accelerate launch, one process writes
        return None
    identity = {**model_identity(args.out, model.config, tokenizer), "dtype": "float32",
                "weights_sha256": weights_hash(model)}
    save_model(model, tokenizer, args.out, args.tokenizer, {"teacher.json": identity})
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
    parser.add_argument("--init", help="a teacher directory to continue on --data with teacher.chat_train "
                                       "(stage teacher_chat)")


def run(args, params):
    settings = section(params, "teacher")
    tokenizer = load_tokenizer(args.tokenizer)
    if args.init:
        metrics = continue_teacher(settings, params.get("seed", 0), tokenizer, args)
    elif is_config_file(settings["model"]):
        metrics = train_teacher(settings, params.get("seed", 0), tokenizer, args)
    else:
        metrics = resolve_teacher(settings, tokenizer, args.tokenizer, args.out)
    if metrics is not None:
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    stage_main("teacher", __doc__, add_arguments, run)
