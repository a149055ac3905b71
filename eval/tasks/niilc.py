"""NIILC (NIILC-ECQA2015): 4-shot, char-F1 against the answers joined by commas. XML questions; a
question whose answer is "-" (none) is counted as malformed and left out, as llm-jp-eval leaves it out."""
from eval.data import Malformed, read_niilc_xml
from eval.tasks.base import Example, PromptTask, register


def parse(row):
    answers = [a.strip() for a in row["answers"] if a and a.strip()]
    if not row["text"] or not row["text"].strip():
        raise Malformed("missing question text")
    if not answers or answers == ["-"]:
        raise Malformed("no answer")
    return Example(input=f"質問：{row['text'].strip()}", target=",".join(answers))


TASK = register(PromptTask(
    name="niilc", metric="char_f1", shots=4, max_new_tokens=180,
    instruction="質問に対する答えを出力してください。答えが複数の場合、コンマ（,）で繋げてください。",
    test=("NIILC/NIILC-ECQA2015_test.xml",), train=("NIILC/NIILC-ECQA2015_dev.xml",), read=read_niilc_xml,
    parse=parse,
))
