"""JMMLU: 5-shot, exact match of the choice letter. One headerless CSV per subject:
question, A, B, C, D, answer letter. JMMLU has no train split: each subject's first 5 rows are its
exemplars and the rest are scored."""
from functools import partial

from eval.data import Malformed, read_csv_folder
from eval.tasks.base import Example, PromptTask, field_of, register

LETTERS = ("A", "B", "C", "D")


def parse(row):
    options = [field_of(row, letter) for letter in LETTERS]
    answer = field_of(row, "answer").strip()
    if answer not in LETTERS:
        raise Malformed(f"answer {answer!r} is not one of A-D")
    listed = ",".join(f"{letter}.{option}" for letter, option in zip(LETTERS, options))
    return Example(input=f"質問：{field_of(row, 'question')}\n選択肢：{listed}", target=answer, choices=LETTERS,
                   group=row["group"])


TASK = register(PromptTask(
    name="jmmlu", metric="exact_match", shots=5, max_new_tokens=5, multiple_choice=True, shots_from_head=True,
    instruction="与えられた質問と選択肢から、最も適切な回答を選択してください。なお、回答には選択肢のアルファベット"
                "（例：A）のみを含め、他には何も含めないことを厳守してください。",
    test=("JMMLU",), read=partial(read_csv_folder, columns=("question", *LETTERS, "answer")), parse=parse,
))
