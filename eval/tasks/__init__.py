"""The benchmarks, registered by name on import (see ``base.REGISTRY``)."""
from eval.tasks import (jcommonsenseqa, jemhopqa, jmmlu, jsquad, mgsm, mt_bench, niilc,  # noqa: F401
                        perplexity, wmt20, xlsum)
from eval.tasks.base import REGISTRY, RunContext, Skip, get_task

# the order of a full run and of the results table: Swallow's Japanese columns, then ours
ALL_TASKS = ("jcommonsenseqa", "jemhopqa", "niilc", "jsquad", "jmmlu", "mgsm", "xlsum", "wmt20_en_ja",
             "wmt20_ja_en", "perplexity", "mt_bench")
assert set(ALL_TASKS) == set(REGISTRY), "every registered task has a place in ALL_TASKS"

__all__ = ["ALL_TASKS", "REGISTRY", "RunContext", "Skip", "get_task"]
