"""The TAID study: the same tiny student distilled from the same teacher by SFT and by every divergence of
the TAID core, then the student fixed and the teacher grown.

On the default data (the bundled corpus through the tokenizer and prepare stages, built here under
``--work``), three Qwen2 teachers of growing size are trained by language modelling and cached; a student
far smaller than the largest (≥ 20× its parameters) is trained from it with each method, every method
with the same seeds, steps, batch and learning rate. Reported, as mean ± std over seeds: validation
KL(teacher ‖ student), validation perplexity and JCommonsenseQA accuracy on the bundled fixture (the
evaluate stage's task and HF backend); then TAID's t over the steps for two values of α, and validation KL
and perplexity of TAID and forward KL against the teacher's size. Before any run, the study checks that
TAID at t = 1 is forward KL and that the chunked validation KL equals a full-logit KL computed here.

    python benchmarks/study.py --short   # ≤ 6 min on 2 cores → benchmarks/results/study.json, study_*.png
    python benchmarks/study.py           # the full study (hours on 2 cores) → study_full.json, study_full_*.png

Teachers and finished runs are cached under ``--work`` by what they depend on (settings, data, the taid
package's code), so an interrupted study resumes and a rerun with nothing changed only reports;
``--fresh`` ignores the caches. Both forms print the tables and rewrite them in README.md's
"The TAID study" section (between its study markers).
"""
import argparse
import copy
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
from argparse import Namespace
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from collections import namedtuple
from functools import lru_cache, partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eval.backends.hf import HFBackend
from eval.runner import evaluate
from stages import prepare as prepare_stage
from stages import tokenizer as tokenizer_stage
from stages.common import StageError, file_sha256, load_params, write_json
from stages.training import load_prepared
from taid.data import to_batch
from taid.models import load_model
from taid.objective import Objective, summarise_eval
from taid.schedule import TAIDSchedule
from taid.trainer import TrainConfig, train
from taid.vocab import load_tokenizer, shared_vocab_size

import study_report

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"


class StudyError(Exception):
    """The study cannot go on (an agreement check failed, an input is missing): one clear line, exit 1."""


# -- what the study runs

@dataclass(frozen=True)
class Form:
    name: str
    student: str            # config JSON of the student (paths relative to the repository)
    teachers: tuple         # config JSONs of the teachers, smallest first; the last is the method comparison's
    methods: tuple          # keys of methods(): the comparison on the largest teacher
    seeds: tuple            # student initialisation and data order; every method runs every seed
    fast_alpha: float       # the second α of TAID, whose t departs from the linear floor within the run
    teacher_train: dict = None   # TrainConfig of each teacher's language modelling; None: params.yaml's teacher.train
    student_train: dict = None   # TrainConfig of every student run; None: params.yaml's distill.train
    scaling_methods: tuple = ("forward_kl", "taid")
    vocab_size: int = 0     # tokenizer pieces; 0: params.yaml's tokenizer.vocab_size (the default data)
    rows: int = 0           # use only the first rows of each split (0: all); for smoke tests
    results: str = "study.json"


ALL_METHODS = ("sft", "forward_kl", "reverse_kl", "tvd", "skew_forward_kl", "generalized_jsd", "taid_linear", "taid",
               "taid_fast")

FORMS = {
    # ≤ 6 minutes on 2 cores. The default corpus through the tokenizer and prepare stages with 2,000 pieces
    # instead of 8,000: at this size the per-token softmaxes over the vocabulary are most of the cost. A
    # 76k-parameter student; teachers of 2.9×, 8.2× (the default student's config) and 21× its size; 2 seeds
    "short": Form(
        name="short", student="benchmarks/study_models/student-32.json",
        teachers=("benchmarks/study_models/teacher-64.json", "configs/models/student-tiny.json",
                  "benchmarks/study_models/teacher-192.json"),
        methods=ALL_METHODS, seeds=(0, 1), fast_alpha=0.1, vocab_size=2000,
        # at 3e-3 (the default's rate) the larger teachers end worse than the smaller ones in 200 steps
        teacher_train=dict(steps=200, batch_size=16, lr=1e-3, warmup_steps=20, weight_decay=0.1),
        student_train=dict(steps=60, batch_size=8, lr=3e-3, warmup_steps=6, weight_decay=0.1, eval_batches=1),
    ),
    # the study on the default data and the default pipeline's distill settings: a 198k-parameter
    # student; teachers of 3.0×, 7.0× (the default student's config) and 25× (the default teacher's config)
    # its size; 3 seeds
    "full": Form(
        name="full", student="benchmarks/study_models/student-24.json",
        teachers=("benchmarks/study_models/teacher-64.json", "configs/models/student-tiny.json",
                  "configs/models/teacher-tiny.json"),
        methods=ALL_METHODS, seeds=(0, 1, 2), fast_alpha=0.05, results="study_full.json",
        # the default teacher.train (lr 3e-3) ends these three at val perplexity 30.7, 22.9 and 38.4: the
        # largest the worst. At 1e-3 their order follows their size, as the scaling comparison needs
        teacher_train=dict(steps=200, batch_size=16, lr=1e-3, warmup_steps=20, weight_decay=0.1),
    ),
}

# keys of a stage's train block that only matter to a stage (checkpoints, resumption)
_STAGE_ONLY = ("save_every", "keep_checkpoints", "resume", "stop_after")


def resolve(form, params):
    """The form with params.yaml's training settings filled in where it names none."""
    def settings(given, stage):
        return {k: v for k, v in (given or params[stage]["train"]).items() if k not in _STAGE_ONLY}
    return replace(form, teacher_train=settings(form.teacher_train, "teacher"),
                   student_train=settings(form.student_train, "distill"))


@dataclass(frozen=True)
class Method:
    label: str
    loss: str | None            # a loss of taid.losses; None: cross-entropy on the data (SFT)
    taid: dict = field(default_factory=dict)   # overrides of params.yaml's distill.taid


def methods(params, fast_alpha):
    """Every method the study knows, labelled with the parameters params.yaml gives it."""
    distill = params["distill"]
    lam, beta, alpha = distill["loss_params"]["lam"], distill["loss_params"]["beta"], distill["taid"]["alpha"]
    return {
        "sft": Method("SFT (cross-entropy on the data)", None),
        "forward_kl": Method("forward KL", "forward_kl"),
        "reverse_kl": Method("reverse KL", "reverse_kl"),
        "tvd": Method("total variation", "tvd"),
        "skew_forward_kl": Method(f"skew forward KL (λ = {lam:g})", "skew_forward_kl"),
        "generalized_jsd": Method(f"generalized JSD (β = {beta:g})", "generalized_jsd"),
        "taid_linear": Method("TAID without adaptation", "taid", {"adaptive": False}),
        "taid": Method(f"TAID (α = {alpha:g})", "taid", {"adaptive": True}),
        "taid_fast": Method(f"TAID (α = {fast_alpha:g})", "taid", {"adaptive": True, "alpha": fast_alpha}),
    }


@dataclass(frozen=True)
class RunSpec:
    method: str
    teacher: int    # index into Form.teachers
    seed: int


def plan_runs(form):
    """The method comparison on the largest teacher, then the scaling methods on each smaller teacher."""
    largest = len(form.teachers) - 1
    runs = [RunSpec(m, largest, s) for m in form.methods for s in form.seeds]
    runs += [RunSpec(m, i, s) for i in range(largest) for m in form.scaling_methods for s in form.seeds]
    return runs


# -- data and models

Data = namedtuple("Data", "key tokenizer train valid")


def build_data(params, form, work):
    """The default data as the tokenizer and prepare stages make it, built once per settings and inputs."""
    params = copy.deepcopy(params)
    if form.vocab_size:
        params["tokenizer"]["vocab_size"] = form.vocab_size
    inputs = [params["data"]["train"]] + [s["path"] for s in params["corpus"]["sources"] if "path" in s]
    key = _hash({k: params[k] for k in ("data", "tokenizer", "corpus", "prepare")},
                [file_sha256(REPO / p) if (REPO / p).is_file() else p for p in inputs])
    out = work / f"data-{key}"
    if not (out / "prepared/meta.json").is_file():
        with _in_repo(), redirect_stdout(io.StringIO()):  # the stages' paths are relative to the repository
            tokenizer_stage.run(Namespace(out=out / "tokenizer"), params)
            prepare_stage.run(Namespace(tokenizer=out / "tokenizer", out=out / "prepared", work=out / "corpus",
                                        report=out / "corpus.json"), params)
    return _load_data(key, out, form.rows)


@lru_cache(maxsize=2)  # once per process: every run of a worker reads the same data
def _load_data(key, out, rows):
    tokenizer = load_tokenizer(out / "tokenizer")
    train_rows, valid_rows = load_prepared(out / "prepared", tokenizer)
    if rows:
        train_rows, valid_rows = train_rows[:rows], valid_rows[:rows]
    return Data(key, tokenizer, train_rows, valid_rows)


def parameter_counts(model):
    """All parameters (tied embeddings once) and those outside the embedding."""
    total = sum(p.numel() for p in model.parameters())
    return {"n_params": total, "n_params_non_embedding": total - model.get_input_embeddings().weight.numel()}


def train_teacher(config, form, params, work, fresh=False):
    """A teacher trained by language modelling on the training split, saved under ``work``; returns its
    record. Skipped when a teacher with the same inputs is saved there already."""
    data, seed = build_data(params, form, work), params.get("seed", 0)
    key = _hash(_read(config), form.teacher_train, seed, data.key, form.rows, _code_hash())
    out = work / "teachers" / f"{Path(config).stem}-{key}"
    if fresh or not (out / "record.json").is_file():
        model = load_model(str(REPO / config), data.tokenizer, seed=seed)
        cfg = TrainConfig.from_params({"seed": seed, **form.teacher_train}, where=f"study teacher {config}")
        started = time.perf_counter()
        result, model = train(model, Objective.language_modelling(), data.train, data.valid, cfg)
        record = {"config": config, **parameter_counts(model), "train_seconds": round(time.perf_counter() - started, 1),
                  **{k: result.evals[-1][k] for k in ("val_loss", "val_ppl")},
                  "jcqa": jcqa_accuracy(model, data.tokenizer, params), "key": key, "path": str(out)}
        model.save_pretrained(out)
        write_json(out / "record.json", record)  # last, and atomic: a killed save is retrained
    return json.loads((out / "record.json").read_text())


def load_teacher(record):
    return _load_teacher(record["path"], record["key"])


@lru_cache(maxsize=4)
def _load_teacher(path, key):
    return load_model(path).requires_grad_(False).eval()


# -- checks, runs and scores

def check_agreement(student, teacher_model, valid, n_shared):
    """Fails the study unless TAID at t = 1 equals forward KL, and the validation KL the study reports (the
    chunked objective) equals KL(teacher ‖ student) computed here from the two models' full logits."""
    batch = to_batch(valid[:4])
    with torch.no_grad():
        taid_at_1, n = Objective("taid", teacher=teacher_model, n_shared=n_shared).loss_sum(student, batch, t=1.0)
        forward, _ = Objective("forward_kl", teacher=teacher_model, n_shared=n_shared).loss_sum(student, batch)
        reported = Objective("forward_kl", teacher=teacher_model, n_shared=n_shared).eval_sums(student, [batch])[1]
        mask = batch["mask"]
        log_q = _full_log_probs(student, batch)[mask][:, :n_shared].log_softmax(-1)
        log_p = _full_log_probs(teacher_model, batch)[mask][:, :n_shared].log_softmax(-1)
        direct = (log_p.exp() * (log_p - log_q)).sum()
    checks = {"taid_t1_vs_forward_kl": agree("TAID at t = 1 vs forward KL", float(taid_at_1), float(forward), 1e-5),
              "val_kl_chunked_vs_full_logits": agree("validation KL, chunked vs full logits", float(reported),
                                                     float(direct), 1e-4)}
    return {"tokens": n, **checks}


def agree(what, a, b, rtol):
    difference = abs(a - b) / max(abs(b), 1e-12)
    if not difference <= rtol:
        raise StudyError(f"agreement check failed: {what}: {a:.8g} vs {b:.8g} (relative difference "
                         f"{difference:.2e} > {rtol:g}); nothing was measured")
    return {"a": a, "b": b, "relative_difference": difference}


def _full_log_probs(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return out.logits[:, :-1].float()


def objective_for(method, teacher_model, n_shared, params, steps, chunk_size):
    """The method's objective and its TAID schedule (None for the other losses)."""
    if method.loss is None:
        return Objective.language_modelling(chunk_size), None
    schedule = None
    if method.loss == "taid":
        schedule = TAIDSchedule(**{**params["distill"]["taid"], **method.taid}, total_steps=steps)
    return Objective(method.loss, params["distill"]["loss_params"], teacher_model, n_shared, 0.0, chunk_size), schedule


def run_student(spec, form, params, work, teachers, fresh=False):
    """One student trained by one method from one teacher (a record of ``train_teacher``) with one seed,
    then scored; cached under ``work`` by its inputs."""
    method, teacher_record = methods(params, form.fast_alpha)[spec.method], teachers[spec.teacher]
    distill = params["distill"]
    key = _hash(asdict(spec), asdict(method), _read(form.student), form.student_train, teacher_record["key"],
                distill["loss_params"], distill["taid"], params["evaluate"]["tasks"]["jcommonsenseqa"])
    path = work / "runs" / f"{key}.json"
    if not fresh and path.is_file():
        return json.loads(path.read_text())
    data, teacher_model = build_data(params, form, work), load_teacher(teacher_record)
    student = load_model(str(REPO / form.student), data.tokenizer, seed=spec.seed)
    n_shared = shared_vocab_size(data.tokenizer, teacher_model.config.vocab_size, student.config.vocab_size)
    cfg = TrainConfig.from_params({"seed": spec.seed, **form.student_train}, where="study student")
    objective, schedule = objective_for(method, teacher_model, n_shared, params, cfg.steps, cfg.loss_chunk_size)
    started = time.perf_counter()
    result, student = train(student, objective, data.train, data.valid, cfg, schedule=schedule)
    record = {**asdict(spec), "teacher_config": teacher_record["config"], "label": method.label,
              "train_seconds": round(time.perf_counter() - started, 1),
              **score(student, teacher_model, data.valid, n_shared, cfg.batch_size),
              "jcqa": jcqa_accuracy(student, data.tokenizer, params),
              "curve": [{k: e[k] for k in ("step", "val_loss", "val_kl") if k in e} for e in result.evals],
              "t": [row["t"] for row in result.history] if schedule is not None else None}
    write_json(path, record)
    return record


@torch.no_grad()
def score(student, teacher_model, valid, n_shared, batch_size):
    """Validation loss, perplexity and KL(teacher ‖ student) over the whole split, for every method alike."""
    objective = Objective("forward_kl", teacher=teacher_model, n_shared=n_shared)
    batches = (to_batch(valid[s:s + batch_size]) for s in range(0, len(valid), batch_size))
    metrics = summarise_eval(objective.eval_sums(student.eval(), batches), with_teacher=True)
    return {k: metrics[k] for k in ("val_kl", "val_loss", "val_ppl")}


def jcqa_accuracy(model, tokenizer, params):
    """JCommonsenseQA on the bundled fixture, as the evaluate stage scores it (the HF backend, params.yaml's
    task settings)."""
    task = {"jcommonsenseqa": params["evaluate"]["tasks"]["jcommonsenseqa"]}
    with redirect_stdout(io.StringIO()):
        results = evaluate(HFBackend(model.eval(), tokenizer), list(task), REPO / "eval/fixtures", task,
                           batch_size=params["evaluate"].get("batch_size", 8),
                           progress=lambda name, total: tqdm(total=total, disable=True))
    return results["tasks"]["jcommonsenseqa"]["score"]


# -- the study

def run_study(form, params, work, results_dir=RESULTS, readme=REPO / "README.md", fresh=False, jobs=1):
    """Data, teachers, the agreement check, every run (``jobs`` at a time), then the report."""
    started, form = time.perf_counter(), resolve(form, params)
    work.mkdir(parents=True, exist_ok=True)
    (work / ".gitignore").write_text("*\n")  # caches, never committed
    data = build_data(params, form, work)
    print(f"data: {len(data.tokenizer)} token ids, {len(data.train)} training and {len(data.valid)} validation "
          f"rows of {data.train.tokens.shape[1]} tokens")
    # largest first: with fewer workers than teachers, the longest training starts at once
    teachers = list(parallel(partial(train_teacher, form=form, params=params, work=work, fresh=fresh),
                             form.teachers[::-1], jobs))[::-1]
    for record in teachers:
        print(f"teacher {record['config']}: {record['n_params'] / 1e6:.2f}M parameters, val ppl "
              f"{record['val_ppl']:.1f}, JCQA {record['jcqa']:.2f} ({record['train_seconds']} s)")
    student = load_model(str(REPO / form.student), data.tokenizer, seed=form.seeds[0])
    largest = load_teacher(teachers[-1])
    agreement = check_agreement(student, largest, data.valid,
                                shared_vocab_size(data.tokenizer, largest.config.vocab_size, student.config.vocab_size))
    print("agreement: " + ", ".join(f"{k} relative difference {v['relative_difference']:.1e}"
                                    for k, v in agreement.items() if isinstance(v, dict)))
    specs = plan_runs(form)
    runs = []
    for i, record in enumerate(parallel(partial(run_student, form=form, params=params, work=work, teachers=teachers,
                                                fresh=fresh), specs, jobs), start=1):
        print(f"[{i}/{len(specs)}] {record['label']}, teacher {Path(record['teacher_config']).stem}, "
              f"seed {record['seed']}: val KL {record['val_kl']:.4f}, val ppl {record['val_ppl']:.1f}, "
              f"JCQA {record['jcqa']:.2f} ({record['train_seconds']} s)")
        runs.append(record)
    setup = {"form": form.name, "student": {"config": form.student, **parameter_counts(student)},
             "teachers": [{k: v for k, v in t.items() if k != "path"} for t in teachers],
             "seeds": list(form.seeds), "teacher_train": form.teacher_train, "student_train": form.student_train,
             "vocab_size": len(data.tokenizer), "train_rows": len(data.train), "valid_rows": len(data.valid),
             "seq_len": int(data.train.tokens.shape[1]), "fast_alpha": form.fast_alpha,
             "taid": params["distill"]["taid"], "loss_params": params["distill"]["loss_params"], "jobs": jobs}
    results = study_report.write_results(setup, agreement, runs, form, results_dir,
                                         seconds=round(time.perf_counter() - started, 1))
    print(results["tables"])
    if readme is not None:
        study_report.update_readme(readme, form.name, results["tables"])
    return results


def parallel(function, items, jobs):
    """``function`` over ``items`` in order; with ``jobs`` > 1 in as many single-threaded worker processes
    (the tiny models gain nothing from a second thread, and on a busy machine lose much to it)."""
    if jobs <= 1:
        with _single_threaded():
            yield from map(function, items)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker) as pool:
        yield from pool.map(function, items)


@contextmanager
def _single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _worker():
    torch.set_num_threads(1)
    # the workers' progress bars would interleave; their failures reach the main process as exceptions
    sys.stderr = open(os.devnull, "w")


def _hash(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read(config):
    return (REPO / config).read_text()


def _code_hash():
    """The taid package's code: a changed loss, schedule or trainer invalidates cached teachers and runs."""
    return _hash([p.read_text() for p in sorted((REPO / "taid").glob("*.py"))])


@contextmanager
def _in_repo():
    previous = os.getcwd()
    os.chdir(REPO)
    try:
        yield
    finally:
        os.chdir(previous)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short form (≤ 6 min on 2 cores)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks/.work", help="cache of data, teachers, runs")
    parser.add_argument("--fresh", action="store_true", help="retrain teachers and students, ignoring the caches")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="trainings at once, one thread each (default: one per core)")
    args = parser.parse_args()
    form = FORMS["short" if args.short else "full"]
    try:
        run_study(form, load_params(REPO / "params.yaml"), args.work, fresh=args.fresh, jobs=args.jobs,
                  readme=None if args.no_readme else REPO / "README.md")
    except (StudyError, StageError, ValueError, FileNotFoundError) as error:
        print(f"study failed: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
