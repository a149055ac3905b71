"""What a task is: the registry, the run context, and the few-shot prompt task most benchmarks are.

A task module builds one ``Task`` and ``register``s it. ``Task.run(backend, context)`` returns the result
row (score, n, shots, metric, …) or raises ``Skip`` with a reason the results report.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from eval import metrics
from eval.data import DataError, LoadReport, Malformed, read_hf_dataset, require_file
from eval.prompts import STOP, cut_at_stop, few_shot_prompt

REGISTRY = {}
MODES = ("generate", "loglikelihood")


class Skip(Exception):
    """The task cannot run here (no judge, no validation split); the message says why."""


def register(task):
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    REGISTRY[task.name] = task
    return task


def get_task(name):
    if name not in REGISTRY:
        raise DataError(f"unknown task {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


@dataclass
class RunContext:
    """What a task run gets besides the backend: where data lives and this task's settings."""
    data_dir: Path
    settings: dict = field(default_factory=dict)   # this task's section of evaluate.tasks
    batch_size: int = 8
    limit: int = 0                                  # items per task (0 = all)
    valid_path: Path | None = None                  # packed validation split, for perplexity
    judge: object = None                            # eval.judge.Judge, for MT-Bench
    progress: Callable = None                       # progress(description, total) → a tqdm-like bar

    def check_keys(self, task, allowed):
        unknown = sorted(set(self.settings) - set(allowed))
        if unknown:
            raise DataError(f"evaluate.tasks.{task}: unknown keys {unknown}; known: {sorted(allowed)}")


@dataclass
class Example:
    input: str                       # what goes under ### 入力
    target: str                      # the reference answer as the model should write it
    choices: tuple = ()              # multiple choice: the answer strings to choose from
    group: str = ""                  # exemplars come from the same group (a JMMLU subject)


class Task:
    name: str   # set by each task

    def run(self, backend, context):
        raise NotImplementedError


def batches(items, size):
    for start in range(0, len(items), size):
        yield items[start: start + size]


@dataclass
class PromptTask(Task):
    """A benchmark asked with a few-shot prompt and scored on the model's answers.

    ``read(*paths, report)`` yields ``(where, row)``; ``parse(row)`` makes an ``Example`` or raises
    ``Malformed``. Exemplars are the first ``shots`` examples of the ``train`` files, or, with
    ``shots_from_head``, the first ``shots`` of each group of the test files (kept out of the score).
    """
    name: str
    metric: str                      # a key of metrics.ITEM_METRICS, or the corpus metric ``score`` computes
    shots: int
    instruction: str
    max_new_tokens: int
    test: tuple                      # paths under the data directory
    read: Callable
    parse: Callable
    train: tuple = ()
    shots_from_head: bool = False
    multiple_choice: bool = False
    score: Callable = None           # (predictions, examples) → score; default: mean of the item metric
    stop: tuple = STOP

    SETTINGS = ("mode", "shots", "max_new_tokens", "path", "train_path", "hf")

    def run(self, backend, context):
        context.check_keys(self.name, self.SETTINGS)
        settings = context.settings
        mode = settings.get("mode", "generate")
        if mode not in MODES or (mode == "loglikelihood" and not self.multiple_choice):
            allowed = MODES if self.multiple_choice else MODES[:1]
            raise DataError(f"evaluate.tasks.{self.name}.mode: {mode!r} is not one of {list(allowed)}")
        n_shots = settings.get("shots", self.shots)
        if not isinstance(n_shots, int) or n_shots < 0:
            raise DataError(f"evaluate.tasks.{self.name}.shots: expected a whole number >= 0, got {n_shots!r}")
        report = LoadReport()
        examples, exemplars = self.load(context, n_shots, report)
        if context.limit:
            examples = examples[: context.limit]
        if not examples:
            raise DataError(f"task {self.name}: no usable examples ({report.n_malformed} malformed rows)")
        prompts = [few_shot_prompt(self.instruction, [(s.input, s.target) for s in exemplars[ex.group]], ex.input)
                   for ex in examples]
        if mode == "loglikelihood":
            predictions = self.choose_by_loglikelihood(backend, context, prompts, examples)
        else:
            max_new_tokens = settings.get("max_new_tokens", self.max_new_tokens)
            predictions = self.generate(backend, context, prompts, max_new_tokens)
        score = self.score(predictions, examples) if self.score else metrics.mean(
            metrics.ITEM_METRICS[self.metric](p, ex.target) for p, ex in zip(predictions, examples))
        return {"score": score, "n": len(examples), "shots": n_shots, "metric": self.metric, "mode": mode,
                **report.to_dict()}

    # -- data

    def load(self, context, n_shots, report):
        """Test examples and exemplars per group."""
        test = self.examples(self.rows(context, "test", report), report)
        if self.shots_from_head:
            return self.split_heads(test, n_shots)
        train = self.examples(self.rows(context, "train", LoadReport()), LoadReport()) if n_shots else []
        if len(train) < n_shots:
            raise DataError(f"task {self.name}: {n_shots} shots asked, {len(train)} exemplars in the train files")
        return test, _AllGroups(train[:n_shots])

    def rows(self, context, split, report):
        settings = context.settings
        if "hf" in settings:
            hf = settings["hf"]
            if not isinstance(hf, dict) or not hf.get("dataset"):
                raise DataError(f"evaluate.tasks.{self.name}.hf: needs a 'dataset' (and optionally config, split, "
                                "train_split)")
            split_name = hf.get("train_split", "train") if split == "train" else hf.get("split", "test")
            return read_hf_dataset(hf["dataset"], hf.get("config"), split_name)
        override = settings.get("path" if split == "test" else "train_path")
        relative = (override,) if isinstance(override, str) else tuple(override or getattr(self, split))
        paths = [require_file(self.name, Path(context.data_dir) / p) for p in relative]
        return self.read(*paths, report)

    def examples(self, rows, report):
        examples = []
        for where, row in rows:
            report.rows += 1
            try:
                examples.append(self.parse(row))
            except Malformed as reason:
                report.skip(str(reason), where)
        return examples

    def split_heads(self, test, n_shots):
        """The first ``n_shots`` examples of each group become its exemplars; the rest are scored."""
        exemplars, scored = {}, []
        for example in test:
            group = exemplars.setdefault(example.group, [])
            (group if len(group) < n_shots else scored).append(example)
        short = sorted(g for g, shots in exemplars.items() if len(shots) < n_shots)
        if short:
            raise DataError(f"task {self.name}: groups {short} have fewer than {n_shots} rows for exemplars")
        return scored, exemplars

    # -- asking the model

    def choose_by_loglikelihood(self, backend, context, prompts, examples):
        requests = [(prompt, choice) for prompt, ex in zip(prompts, examples) for choice in ex.choices]
        scores = []
        bar = context.progress(self.name, len(requests))
        for batch in batches(requests, context.batch_size):
            scores.extend(backend.loglikelihood(batch))
            bar.update(len(batch))
        bar.close()
        predictions, start = [], 0
        for ex in examples:
            own = scores[start: start + len(ex.choices)]
            predictions.append(ex.choices[own.index(max(own))])
            start += len(ex.choices)
        return predictions

    def generate(self, backend, context, prompts, max_new_tokens):
        outputs = []
        bar = context.progress(self.name, len(prompts))
        for batch in batches(prompts, context.batch_size):
            outputs.extend(backend.generate(batch, max_new_tokens, self.stop))
            bar.update(len(batch))
        bar.close()
        return [cut_at_stop(text, self.stop) for text in outputs]


class _AllGroups(dict):
    """Exemplars shared by every group."""

    def __init__(self, shots):
        super().__init__()
        self.shots = shots

    def __missing__(self, group):
        return self.shots


def field_of(row, key, kind=str):
    """``row[key]`` if it is a ``kind``, else ``Malformed`` naming the field."""
    value = row.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise Malformed(f"missing or empty '{key}'")
    return value
