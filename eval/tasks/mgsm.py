"""MGSM-ja: 4-shot, accuracy of the last number in the answer. ``mgsm_ja.tsv``: question, answer number
(tab-separated, no header); the exemplars file has the same two columns."""
from functools import partial

from eval.data import Malformed, read_tsv
from eval.metrics import last_number
from eval.tasks.base import Example, PromptTask, field_of, register


def parse(row):
    answer = field_of(row, "answer_number").strip()
    if last_number(answer) is None:
        raise Malformed(f"answer {answer!r} is not a number")
    return Example(input=f"問題：{field_of(row, 'question')}", target=answer)


TASK = register(PromptTask(
    name="mgsm", metric="number_match", shots=4, max_new_tokens=32,
    instruction="与えられた算数の問題を解き、答えとなる数値だけを出力してください。",
    test=("MGSM/mgsm_ja.tsv",), train=("MGSM/mgsm_ja_exemplars.tsv",),
    read=partial(read_tsv, columns=("question", "answer_number")), parse=parse,
))
