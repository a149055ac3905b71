"""Stage recipe: params.yaml with its recipe laid over it, written out whole for DVC to track.

    python -m stages.recipe --out params.resolved.yaml

``recipe:`` in params.yaml names a recipe (``configs/recipes/*.yaml``), which sets only the keys it changes
and may build on another (``base:``). Every stage reads params.yaml with the recipe laid over it; DVC
reads the same values from the file this stage writes, key by key, so that a change to params.yaml or to
a recipe reruns exactly the stages whose keys changed.
"""
from pathlib import Path

import yaml

from stages.common import StageError, read_yaml, recipe_chain, stage_main, write_text

RECIPES = Path("configs/recipes")   # the recipe stage's dependency: recipes elsewhere would go unseen
HEADER = ("# Written by `python -m stages.recipe` (stage recipe): params.yaml with its recipe laid over it.\n"
          "# The stages' DVC params are read from here. Edit params.yaml or the recipe, not this file.\n")


def changed_keys(before, after, prefix=""):
    """Dotted names of the values ``after`` sets differently from ``before``."""
    changed = []
    for key, value in after.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(before.get(key), dict):
            changed += changed_keys(before[key], value, f"{name}.")
        elif before.get(key, object()) != value:
            changed.append(name)
    return changed


def check_tracked(files):
    recipes = RECIPES.resolve()
    for path in files:
        if not path.is_relative_to(recipes):
            raise StageError(f"recipe {path} is outside {RECIPES}/, which is what the recipe stage depends on; "
                             f"move it there so that DVC sees when it changes")


def run(args, params):
    own = read_yaml(args.params, "params file")
    files = [path for path, _ in recipe_chain(own.get("recipe"), Path(args.params).parent)]
    check_tracked(files)
    write_text(args.out, HEADER + yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    if not files:
        print("recipe: none; params.yaml as it is")
        return
    changed = changed_keys(own, params)
    shown = ", ".join(changed[:12]) + (f" and {len(changed) - 12} more" if len(changed) > 12 else "")
    print(f"recipe: {' over '.join(str(p.relative_to(RECIPES.resolve())) for p in reversed(files))} "
          f"sets {len(changed)} values of params.yaml: {shown}")


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="resolved params file to write")


if __name__ == "__main__":
    stage_main("recipe", __doc__, add_arguments, run)
