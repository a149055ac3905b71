"""XL-Sum (Japanese): 1-shot, ROUGE-2 over MeCab tokens. JSON Lines ``{"id", "url", "title", "summary", "text"}``."""
from eval.data import read_json_lines
from eval.tasks.base import Example, PromptTask, field_of, register


def parse(row):
    return Example(input=f"ニュース記事:{field_of(row, 'text')}", target=field_of(row, "summary"))


TASK = register(PromptTask(
    name="xlsum", metric="rouge2", shots=1, max_new_tokens=128,
    instruction="与えられたニュース記事を要約してください。",
    test=("XLSum/japanese_test.jsonl",), train=("XLSum/japanese_train.jsonl",), read=read_json_lines, parse=parse,
))
