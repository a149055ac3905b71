"""Japanese MT-Bench: two-turn questions answered through the model's chat template, each turn graded
1–10 by an LLM judge with FastChat's single-answer prompts. Score = mean rating / 10 (Swallow's scale).

Files as in FastChat's ``data/japanese_mt_bench``: ``question.jsonl`` rows
``{"question_id", "category", "turns": [q1, q2]}`` and ``reference_answer/gpt-4.jsonl`` rows
``{"question_id", "choices": [{"turns": [a1, a2]}]}`` for the categories judged against a reference.
"""
from dataclasses import dataclass

from eval import metrics
from eval.data import LoadReport, Malformed, read_json_lines, require_file
from eval.judge import NEEDS_REFERENCE, grading_prompt, parse_rating
from eval.tasks.base import Skip, Task, register

QUESTIONS, REFERENCES = "MTBench/question.jsonl", "MTBench/reference_answer/gpt-4.jsonl"


@dataclass
class Question:
    id: object
    category: str
    turns: list


def parse_question(row):
    turns = row.get("turns")
    if "question_id" not in row or not isinstance(turns, list) or len(turns) != 2 \
            or not all(isinstance(t, str) and t.strip() for t in turns):
        raise Malformed("needs question_id and two non-empty turns")
    return Question(row["question_id"], str(row.get("category", "")), turns)


def parse_reference(row):
    try:
        turns = row["choices"][0]["turns"]
    except (KeyError, IndexError, TypeError):
        raise Malformed("no choices[0].turns") from None
    if "question_id" not in row or not isinstance(turns, list) or len(turns) < 2:
        raise Malformed("needs question_id and two reference turns")
    return row["question_id"], turns[:2]


class MTBenchTask(Task):
    name = "mt_bench"
    SETTINGS = ("max_new_tokens", "path", "reference_path")

    def run(self, backend, context):
        context.check_keys(self.name, self.SETTINGS)
        if context.judge is None:
            raise Skip("no judge configured (evaluate.judge.url is not set)")
        if not backend.has_chat_template():
            raise Skip("the model's tokenizer has no chat template")
        report = LoadReport()
        questions, references = self.load(context, report)
        answers = self.answer(backend, context, questions, context.settings.get("max_new_tokens", 1024))
        ratings = self.grade(context, questions, answers, references)
        rated = [r for r in ratings if r >= 0]
        mean_rating = metrics.mean(rated)
        return {"score": mean_rating / 10, "rating": mean_rating, "n": len(questions), "shots": 0,
                "metric": "judge_rating", "judge": context.judge.model, "turns_rated": len(rated),
                "unparsed_judgments": len(ratings) - len(rated), **report.to_dict()}

    def load(self, context, report):
        settings, root = context.settings, context.data_dir
        questions = []
        for where, row in read_json_lines(require_file(self.name, root / settings.get("path", QUESTIONS)), report):
            report.rows += 1
            try:
                questions.append(parse_question(row))
            except Malformed as reason:
                report.skip(str(reason), where)
        if context.limit:
            questions = questions[: context.limit]
        references = {}
        if any(q.category in NEEDS_REFERENCE for q in questions):
            path = require_file(self.name, root / settings.get("reference_path", REFERENCES))
            for where, row in read_json_lines(path, report):
                try:
                    question_id, turns = parse_reference(row)
                    references[question_id] = turns
                except Malformed as reason:
                    report.skip(f"reference: {reason}", where)
        return questions, references

    def answer(self, backend, context, questions, max_new_tokens):
        """Both turns of every question: turn 2 is asked after the model's own turn-1 answer."""
        conversations = [[] for _ in questions]
        bar = context.progress(self.name, 2 * len(questions))
        for turn in range(2):
            for start in range(0, len(questions), context.batch_size):
                batch = conversations[start: start + context.batch_size]
                for conversation, question in zip(batch, questions[start:]):
                    conversation.append({"role": "user", "content": question.turns[turn]})
                replies = backend.chat(batch, max_new_tokens)
                for conversation, reply in zip(batch, replies):
                    conversation.append({"role": "assistant", "content": reply})
                bar.update(len(batch))
        bar.close()
        return [[m["content"] for m in conversation if m["role"] == "assistant"] for conversation in conversations]

    def grade(self, context, questions, answers, references):
        ratings = []
        for question, answer in zip(questions, answers):
            reference = references.get(question.id) if question.category in NEEDS_REFERENCE else None
            if question.category in NEEDS_REFERENCE and reference is None:
                raise Skip(f"no reference answer for question {question.id} ({question.category})")
            for turn in (1, 2):
                system, user = grading_prompt(turn, question.turns, answer, reference)
                ratings.append(parse_rating(context.judge.complete(system, user)))
        return ratings


TASK = register(MTBenchTask())
