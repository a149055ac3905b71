"""JSQuAD (JGLUE): 4-shot, char-F1 against the first gold answer. SQuAD-style nested JSON."""
from eval.data import Malformed, read_squad
from eval.tasks.base import Example, PromptTask, field_of, register


def parse(row):
    answers = row.get("answers")
    if not isinstance(answers, list) or not answers or not isinstance(answers[0], dict):
        raise Malformed("no answers")
    context = field_of(row, "context")
    return Example(input=f"文章：{context}\n質問：{field_of(row, 'question')}", target=field_of(answers[0], "text"))


TASK = register(PromptTask(
    name="jsquad", metric="char_f1", shots=4, max_new_tokens=25,
    instruction="質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。 "
                "それ以外には何も含めないことを厳守してください。",
    test=("JSQuAD/valid-v1.1.json",), train=("JSQuAD/train-v1.1.json",), read=read_squad, parse=parse,
))
