"""JEMHopQA: 4-shot, char-F1. A JSON list of ``{"qid", "type", "question", "answer", "derivations", …}``."""
from eval.data import read_json_array
from eval.tasks.base import Example, PromptTask, field_of, register


def parse(row):
    return Example(input=f"質問：{field_of(row, 'question')}", target=field_of(row, "answer"))


TASK = register(PromptTask(
    name="jemhopqa", metric="char_f1", shots=4, max_new_tokens=15,
    instruction="質問を入力とし、回答を出力してください。回答の他には何も含めないことを厳守してください。",
    test=("JEMHopQA/dev_ver1.1.json",), train=("JEMHopQA/train_ver1.1.json",), read=read_json_array, parse=parse,
))
