"""Japanese MT-Bench: both turns asked in one conversation, graded by a fake OpenAI-compatible judge on
loopback with FastChat's prompts; "[[rating]]" parsing; no judge → skipped with the reason."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from eval.judge import Judge, judge_from_settings, parse_rating
from eval.tasks import RunContext, get_task
from tests.test_eval_support import FIXTURES, StubLM, no_progress


@pytest.mark.parametrize("judgment, rating", [
    ("The answer is clear and accurate. Rating: [[5]]", 5.0),
    ("Good. [[8.5]]", 8.5),
    ("Only one bracket: [6]", 6.0),
    ("Rating: [[7]] though [[3]] was considered", 7.0),   # the first match counts
    ("no rating at all", -1.0),
])
def test_rating_parsing_follows_fastchat(judgment, rating):
    assert parse_rating(judgment) == rating


class FakeJudge(BaseHTTPRequestHandler):
    requests = []       # (path, headers, body) of every request
    replies = []        # judgments handed out in order

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append((self.path, dict(self.headers), body))
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": FakeJudge.replies.pop(0)}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    FakeJudge.requests, FakeJudge.replies = [], []
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_judge_round_trip_on_loopback(judge_server, monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = judge_from_settings({"url": judge_server, "model": "judge-model", "api_key_env": "TEST_JUDGE_KEY"})
    # three questions × two turns; one judgment without a rating is left out of the mean
    FakeJudge.replies = ["Rating: [[8]]", "[[6]]", "Rating: [[10]]", "I cannot rate this.", "[[2]]", "[[4]]"]
    backend = StubLM()
    context = RunContext(data_dir=FIXTURES, judge=judge, progress=no_progress)
    result = get_task("mt_bench").run(backend, context)

    assert result["rating"] == pytest.approx((8 + 6 + 10 + 2 + 4) / 5)
    assert result["score"] == pytest.approx(result["rating"] / 10)
    assert (result["n"], result["turns_rated"], result["unparsed_judgments"]) == (3, 5, 1)
    assert result["judge"] == "judge-model"

    # the second turn is asked after the model's own first answer, in one conversation
    first, second = backend.conversations
    assert first[0] == [{"role": "user", "content": "京都への旅行について、名所と文化を紹介する短いブログ記事を書いてください。"}]
    assert second[0][1:] == [{"role": "assistant", "content": "答え1"},
                             {"role": "user", "content": "前の回答を、すべての文が「あ」で始まるように書き直してください。"}]

    assert len(FakeJudge.requests) == 6
    path, headers, body = FakeJudge.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    assert user["content"].startswith("[Instruction]\nPlease act as an impartial judge")
    assert user["content"].endswith("[Question]\n京都への旅行について、名所と文化を紹介する短いブログ記事を書いてください。"
                                    "\n\n[The Start of Assistant's Answer]\n答え1\n[The End of Assistant's Answer]")
    # turn 2 of the math question: the multi-turn prompt with both reference answers
    math_turn_2 = FakeJudge.requests[3][2]["messages"]
    assert "focus on the assistant's answer to the second question" in math_turn_2[0]["content"]
    assert "### Reference answer:\n外接円の半径は √10 なので、面積は 10π です。" in math_turn_2[1]["content"]
    assert "### Assistant A:\n答え3\n\n<|The End of Assistant A's Conversation with User|>" in math_turn_2[1]["content"]


def test_without_a_judge_the_task_is_skipped_with_the_reason():
    from eval.tasks.base import Skip
    with pytest.raises(Skip, match="no judge configured"):
        get_task("mt_bench").run(StubLM(), RunContext(data_dir=FIXTURES, progress=no_progress))
    assert judge_from_settings({"url": None, "model": "x"}) is None


def test_an_unreachable_judge_is_a_clear_error():
    judge = Judge(url="http://127.0.0.1:9/v1", model="m", timeout=2)
    with pytest.raises(RuntimeError, match="judge http://127.0.0.1:9/v1 \\(m\\) failed"):
        judge.complete("system", "user")
