"""The MT-Bench judge: FastChat's single-answer grading prompts, any OpenAI-compatible chat endpoint,
and FastChat's "[[rating]]" parsing (a score that cannot be read is -1 and left out of the mean)."""
import ast
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

# FastChat llm_judge: categories whose questions are judged against a reference answer
NEEDS_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")

_RATE = ('After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly '
         'following this format: "[[rating]]", for example: "Rating: [[5]]".')
# FastChat's judge_prompts.jsonl, the four "single" prompts: (system prompt, user prompt template)
SINGLE_V1 = (
    "You are a helpful assistant.",
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    f"evaluation by providing a short explanation. Be as objective as possible. {_RATE}\n\n"
    "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
)
SINGLE_MATH_V1 = (
    "You are a helpful assistant.",
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider correctness and "
    "helpfulness. You will be given a reference answer and the assistant's answer. Begin your evaluation by "
    "comparing the assistant's answer with the reference answer. Identify and correct any mistakes. Be as "
    f"objective as possible. {_RATE}\n\n"
    "[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]"
    "\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
)
_CONVERSATION = (
    "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant A:\n"
    "{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
    "<|The End of Assistant A's Conversation with User|>"
)
SINGLE_V1_MULTI_TURN = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. You evaluation should focus "
    "on the assistant's answer to the second user question. Begin your evaluation by providing a short "
    f"explanation. Be as objective as possible. {_RATE}\n\n",
    _CONVERSATION,
)
SINGLE_MATH_V1_MULTI_TURN = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question. Your evaluation should consider correctness and helpfulness. You will be given a "
    "reference answer and the assistant's answer. You evaluation should focus on the assistant's answer to the "
    "second question. Begin your evaluation by comparing the assistant's answer with the reference answer. "
    f"Identify and correct any mistakes. Be as objective as possible. {_RATE}\n\n",
    "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n{ref_answer_1}\n\n"
    "### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n<|The End of Reference Answer|>\n\n\n"
    + _CONVERSATION,
)

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(judgment):
    """The judge's "[[rating]]" (or, failing that, "[rating]"), or -1 when there is none."""
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    return float(ast.literal_eval(match.group(1))) if match else -1.0


def grading_prompt(turn, questions, answers, references=None):
    """(system, user) messages grading ``turn`` (1 or 2) of one conversation; ``references`` for the
    categories in NEEDS_REFERENCE."""
    if turn == 1:
        system, template = SINGLE_MATH_V1 if references else SINGLE_V1
        fields = {"question": questions[0], "answer": answers[0]}
    else:
        system, template = SINGLE_MATH_V1_MULTI_TURN if references else SINGLE_V1_MULTI_TURN
        fields = {"question_1": questions[0], "answer_1": answers[0],
                  "question_2": questions[1], "answer_2": answers[1]}
    for i, reference in enumerate(references or [], start=1):
        fields[f"ref_answer_{i}"] = reference
    return system, template.format(**fields)


@dataclass
class Judge:
    """An OpenAI-compatible chat completions endpoint (``{url}/chat/completions``)."""
    url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    max_tokens: int = 2048

    def complete(self, system, user):
        body = {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        request = urllib.request.Request(f"{self.url.rstrip('/')}/chat/completions",
                                         data=json.dumps(body).encode(), headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read().decode("utf-8"))
            return reply["choices"][0]["message"]["content"]
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, KeyError, IndexError) as error:
            raise RuntimeError(f"judge {self.url} ({self.model}) failed: {error}") from None

    def _headers(self):
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def judge_from_settings(settings):
    """A Judge from ``evaluate.judge`` (url, model, api_key_env), or None when no url is set."""
    settings = settings or {}
    unknown = sorted(set(settings) - {"url", "model", "api_key_env", "timeout"})
    if unknown:
        raise ValueError(f"evaluate.judge: unknown keys {unknown}")
    if not settings.get("url"):
        return None
    if not settings.get("model"):
        raise ValueError("evaluate.judge.model must name the judge model when evaluate.judge.url is set")
    key_env = settings.get("api_key_env")
    return Judge(url=settings["url"], model=settings["model"], api_key=os.environ.get(key_env) if key_env else None,
                 timeout=float(settings.get("timeout", 120)))
