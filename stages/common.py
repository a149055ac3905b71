"""What every stage shares: params, atomic outputs, reading documents, timing and clean failures."""
import argparse
import copy
import gzip
import hashlib
import json
import os
import shutil
import sys
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path

import yaml


class StageError(Exception):
    """A failure the user can act on: printed as one clear message, no traceback."""


def stage_main(name, description, add_arguments, run, module=None):
    """Parse arguments, run the stage, print its wall time; turn known failures into a clear message
    (set TSUBAME_TRACEBACK=1 to see the traceback instead)."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{module or name}", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    add_arguments(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        run(args, load_params(args.params))
    except (StageError, ValueError, FileNotFoundError, RuntimeError) as error:
        if os.environ.get("TSUBAME_TRACEBACK"):
            raise
        print(f"stage {name} failed: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"stage {name}: done in {time.perf_counter() - started:.1f} s")


def load_params(path):
    """The params file with its recipe, if it names one, laid over it (see ``recipe_chain``)."""
    params = read_yaml(path, "params file")
    return lay_recipe(params, params.get("recipe"), Path(path).parent)


# -- recipes: a recipe sets only the keys it changes; it may build on another recipe (base: its path)

def lay_recipe(params, recipe, relative_to="."):
    """params with the recipe file (None: none) and its bases laid over it."""
    for _, settings in recipe_chain(recipe, relative_to):
        params = apply_recipe(params, {k: v for k, v in settings.items() if k != "base"})
    return params


def recipe_chain(recipe, relative_to="."):
    """(path, settings) of the files a recipe stands for, the deepest base first; each path is relative
    to the file naming it."""
    chain, path = [], Path(relative_to) / recipe if recipe else None
    while path is not None:
        path = path.resolve()
        if path in [seen for seen, _ in chain]:
            raise StageError(f"recipe {path} is its own base (through {' → '.join(str(p) for p, _ in chain)})")
        settings = read_yaml(path, "recipe")
        chain.append((path, settings))
        path = path.parent / settings["base"] if settings.get("base") else None
    return chain[::-1]


def apply_recipe(params, recipe):
    """params with the recipe laid over it: mappings merge key by key, anything else is replaced."""
    merged = copy.deepcopy(params)
    for key, value in recipe.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = apply_recipe(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path, kind):
    """A YAML mapping; a missing file, bad YAML or another type is a StageError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{kind} {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise StageError(f"{where}: not valid YAML: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(loaded, dict):
        raise StageError(f"{path}: a {kind} is a mapping of params sections, got {type(loaded).__name__}")
    return loaded


def section(params, name, params_path="params.yaml"):
    if name not in params:
        raise StageError(f"{params_path}: missing section '{name}'")
    return params[name]


# -- atomic outputs: write beside the target, then rename, so a killed stage never leaves half a file

@contextmanager
def atomic_dir(target):
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_csv(path, rows, columns):
    lines = [",".join(columns)] + [",".join(_csv_value(row.get(c)) for c in columns) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def _csv_value(value):
    return "" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))


def write_text(path, text):
    """Write beside the target, then rename: a killed stage never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


# -- documents

class DocumentReport:
    """Counts what reading skipped, and where, so bad input is reported rather than lost silently."""

    def __init__(self, examples=5):
        self.read, self.skipped, self.examples, self._limit = 0, {}, [], examples

    def skip(self, reason, where):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < self._limit:
            self.examples.append(f"{where}: {reason}")

    def summary(self):
        skipped = sum(self.skipped.values())
        text = f"{self.read} documents read, {skipped} skipped"
        if skipped:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) + "); first: "
            text += "; ".join(self.examples)
        return text


def normalise(text):
    return unicodedata.normalize("NFKC", text).strip()


def read_documents(path, text_field="text", report=None):
    """NFKC-normalised texts of a JSON Lines file (``.gz`` allowed); bad lines are counted and skipped."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"corpus file {path} not found")
    report = report if report is not None else DocumentReport()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            where = f"{path}:{line_number}"
            text = _document_text(raw, text_field, where, report)
            if text:
                report.read += 1
                yield text


def _document_text(raw, text_field, where, report):
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return report.skip("invalid UTF-8", where)
    except json.JSONDecodeError:
        return report.skip("malformed JSON", where) if raw.strip() else None
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        return report.skip(f"no text field '{text_field}'", where)
    text = normalise(record[text_field])
    return text if text else report.skip("empty document", where)
