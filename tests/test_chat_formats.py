"""Chat formats: messages, ShareGPT and Alpaca rows into one normal form; bad rows counted with their places."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chat.formats import ChatDataError, MalformedRow, SourceReport, read_source, to_messages

SYSTEM = {"role": "system", "content": "あなたは親切なアシスタントです。"}
MESSAGES_ROW = {"messages": [SYSTEM,
                             {"role": "user", "content": "富士山の高さは何メートルですか。"},
                             {"role": "assistant", "content": "3776メートルです。"},
                             {"role": "user", "content": "どこにありますか。"},
                             {"role": "assistant", "content": "静岡県と山梨県の境にあります。"}]}
SHAREGPT_ROW = {"conversations": [{"from": "system", "value": "あなたは親切なアシスタントです。"},
                                  {"from": "human", "value": "富士山の高さは何メートルですか。"},
                                  {"from": "gpt", "value": "3776メートルです。"},
                                  {"from": "user", "value": "どこにありますか。"},
                                  {"from": "assistant", "value": "静岡県と山梨県の境にあります。"}]}
ALPACA_ROW = {"instruction": "次の計算をしてください。", "input": "12たす30", "output": "12たす30は42です。"}


def write_jsonl(path, lines):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else json.dumps(line, ensure_ascii=False).encode()) + b"\n")
    return path


def read_all(path, fmt="auto"):
    report = SourceReport("test", path, fmt)
    return list(read_source("test", path, fmt, report)), report


def test_the_three_formats_give_the_same_normal_form():
    expected = MESSAGES_ROW["messages"]
    assert to_messages(MESSAGES_ROW, "messages") == ("messages", expected, False)
    assert to_messages(SHAREGPT_ROW, "sharegpt") == ("sharegpt", expected, False)
    assert to_messages(ALPACA_ROW, "alpaca") == ("alpaca", [
        {"role": "user", "content": "次の計算をしてください。\n\n12たす30"},
        {"role": "assistant", "content": "12たす30は42です。"}], False)


@pytest.mark.parametrize("row, fmt", [(MESSAGES_ROW, "messages"), (SHAREGPT_ROW, "sharegpt"), (ALPACA_ROW, "alpaca")])
def test_auto_recognises_each_format_by_its_keys(row, fmt):
    assert to_messages(row, "auto")[0] == fmt


@pytest.mark.parametrize("extra", ["", "   ", None])
def test_alpaca_without_input_is_the_instruction_alone(extra):
    row = {"instruction": "挨拶してください。", "output": "こんにちは。"}
    if extra is not None:
        row["input"] = extra
    assert to_messages(row, "alpaca")[1][0] == {"role": "user", "content": "挨拶してください。"}


def test_content_gets_the_corpus_normalisation():
    row = {"messages": [{"role": "user", "content": "  ＡＢＣと\u200bｶﾀｶﾅ  "},
                        {"role": "assistant", "content": "全角の１２３です。\n\n\n\n終わり。"}]}
    _, messages, _ = to_messages(row, "messages")
    assert messages == [{"role": "user", "content": "ABCとカタカナ"},
                        {"role": "assistant", "content": "全角の123です。\n\n終わり。"}]


def test_a_trailing_unanswered_question_is_dropped_and_flagged():
    row = {"messages": MESSAGES_ROW["messages"][:3] + [{"role": "user", "content": "ありがとう。"}]}
    assert to_messages(row, "messages") == ("messages", MESSAGES_ROW["messages"][:3], True)


BAD_ROWS = [  # (line, reason)
    (b"{not json", "malformed_json"),
    (b"\xff\xfe{}", "invalid_utf8"),
    ([1, 2], "not_an_object"),
    ({"text": "no chat here"}, "unknown_format"),
    ({"messages": "hello"}, "missing_field"),
    ({"messages": [{"role": "user"}]}, "missing_field"),
    ({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown_role"),
    ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown_role"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}, "empty_content"),
    ({"instruction": "x", "output": ""}, "empty_content"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "content_not_text"),
    ({"messages": [{"role": "user", "content": "質問"}]}, "no_assistant_turn"),
    ({"messages": [{"role": "assistant", "content": "先に答え"}, {"role": "user", "content": "質問"}]},
     "roles_out_of_order"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "roles_out_of_order"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, SYSTEM,
                   {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}, "roles_out_of_order"),
]


@pytest.mark.parametrize("line, reason", BAD_ROWS)
def test_each_kind_of_bad_row_is_counted_under_its_reason(tmp_path, line, reason):
    path = write_jsonl(tmp_path / "chat.jsonl", [MESSAGES_ROW, line, ALPACA_ROW])
    conversations, report = read_all(path)
    assert len(conversations) == 2
    assert dict(report.malformed) == {reason: 1}
    assert report.examples[0]["where"] == f"{path}:2" and report.examples[0]["reason"] == reason


def test_bad_rows_are_counted_with_file_and_line_of_the_first_few(tmp_path):
    lines = [MESSAGES_ROW, b"", SHAREGPT_ROW] + [b"{oops"] * 7 + [ALPACA_ROW, {"messages": []}]
    path = write_jsonl(tmp_path / "chat.jsonl.gz", lines)
    conversations, report = read_all(path)
    assert [c.where for c in conversations] == [f"{path}:1", f"{path}:3", f"{path}:11"]
    assert report.rows == 11  # the blank line is not a row
    assert dict(report.malformed) == {"malformed_json": 7, "no_assistant_turn": 1}
    assert [e["where"] for e in report.examples] == [f"{path}:{n}" for n in (4, 5, 6, 7, 8)]
    assert dict(report.formats) == {"messages": 1, "sharegpt": 1, "alpaca": 1}


def test_a_fixed_format_does_not_guess(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [MESSAGES_ROW, SHAREGPT_ROW])
    conversations, report = read_all(path, "sharegpt")
    assert len(conversations) == 1 and dict(report.malformed) == {"missing_field": 1}


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ChatDataError, match=r"chat source 'test': file .*nowhere\.jsonl not found"):
        read_all(tmp_path / "nowhere.jsonl")


def test_a_damaged_gzip_is_counted_as_unreadable(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl.gz", [MESSAGES_ROW] * 50)
    (tmp_path / "bad.jsonl.gz").write_bytes(good.read_bytes()[:-30])
    conversations, report = read_all(tmp_path / "bad.jsonl.gz")
    assert report.malformed["unreadable_file"] == 1 and len(conversations) < 50


def test_parquet_rows_with_nested_messages_and_a_folder_of_files(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    table = pa.Table.from_pylist([MESSAGES_ROW, {"messages": [{"role": "user", "content": "質問だけ"}]},
                                  {"messages": MESSAGES_ROW["messages"][1:3]}])
    pq.write_table(table, folder / "part-0.parquet")
    write_jsonl(folder / "part-1.jsonl", [SHAREGPT_ROW])
    (folder / "notes.txt").write_text("ignored")
    conversations, report = read_all(folder, "auto")
    assert [c.messages for c in conversations] == [MESSAGES_ROW["messages"], MESSAGES_ROW["messages"][1:3],
                                                   MESSAGES_ROW["messages"]]
    assert report.examples == [{"reason": "no_assistant_turn", "where": f"{folder / 'part-0.parquet'}:row 2",
                                "detail": ""}]


def test_malformed_row_carries_its_reason():
    with pytest.raises(MalformedRow) as caught:
        to_messages({"messages": [{"role": "user", "content": "a"}]}, "messages")
    assert caught.value.reason == "no_assistant_turn"
