"""JCommonsenseQA (JGLUE): 4-shot, exact match of the choice number. Rows of JGLUE's JSON Lines files:
``{"q_id", "question", "choice0".."choice4", "label"}``."""
from eval.data import Malformed, read_json_lines
from eval.tasks.base import Example, PromptTask, field_of, register

N_CHOICES = 5


def parse(row):
    choices = [field_of(row, f"choice{i}") for i in range(N_CHOICES)]
    label = field_of(row, "label", int)
    if not 0 <= label < N_CHOICES:
        raise Malformed(f"label {label} out of range")
    listed = ",".join(f"{i}.{choice}" for i, choice in enumerate(choices))
    return Example(input=f"質問：{field_of(row, 'question')}\n選択肢：{listed}", target=str(label),
                   choices=tuple(str(i) for i in range(N_CHOICES)))


TASK = register(PromptTask(
    name="jcommonsenseqa", metric="exact_match", shots=4, max_new_tokens=5, multiple_choice=True,
    instruction="質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号（例：0）"
                "でするものとします。 回答となる数値をint型で返し、他には何も含めないことを厳守してください。",
    test=("JCommonsenseQA/valid-v1.1.json",), train=("JCommonsenseQA/train-v1.1.json",),
    read=read_json_lines, parse=parse,
))
