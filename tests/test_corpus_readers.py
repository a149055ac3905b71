"""Readers: every source kind, and bad input counted per reason with the file and line of the first few."""
import gzip
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpus.readers import JsonlSource, ParquetSource, TextSource, WarcSource, hf_source

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "fixtures"))
import generate as fixtures  # noqa: E402


def read_all(reader):
    return list(reader.run(rank=0, world_size=1))


def counted(reader, reason):
    metric = reader.stats.stats.get(f"bad_{reason}")
    return int(metric.total) if metric is not None else 0


def bad_input_log(folder):
    return [entry for path in sorted(Path(folder).glob("*.json")) for entry in json.loads(path.read_text())]


def test_jsonl_bad_lines_are_counted_and_located(tmp_path):
    lines = [json.dumps({"text": "一つ目の文書です。"}, ensure_ascii=False).encode(),
             b'{"text": "\xff\xfe"}',                          # line 2: not UTF-8
             b"{not json",                                      # line 3
             json.dumps({"body": "本文"}, ensure_ascii=False).encode(),  # line 4: no "text"
             json.dumps({"text": "   "}).encode(),              # line 5: empty
             b"",                                               # line 6: blank, not a document
             json.dumps(["a list"]).encode(),                   # line 7: not an object
             json.dumps({"text": "最後の文書です。"}, ensure_ascii=False).encode()]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reader = JsonlSource(str(tmp_path / "in"), "mixed", report_folder=str(tmp_path / "bad"))
    docs = read_all(reader)
    assert [d.text for d in docs] == ["一つ目の文書です。", "最後の文書です。"]
    assert docs[0].metadata["source"] == "mixed"
    assert {r: counted(reader, r) for r in ("invalid_utf8", "malformed_json", "missing_text_field",
                                            "empty_document")} == {"invalid_utf8": 1, "malformed_json": 1,
                                                                   "missing_text_field": 2, "empty_document": 1}
    log = bad_input_log(tmp_path / "bad")
    assert [(e["reason"], e["where"]) for e in log] == [
        ("invalid_utf8", "docs.jsonl:2"), ("malformed_json", "docs.jsonl:3"), ("missing_text_field", "docs.jsonl:4"),
        ("empty_document", "docs.jsonl:5"), ("missing_text_field", "docs.jsonl:7")]


def test_an_unreadable_file_is_counted_and_the_others_still_read(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "読める文書です。"}, ensure_ascii=False) + "\n")
    (tmp_path / "b.jsonl.gz").write_bytes(b"this is not gzip at all")
    reader = JsonlSource(str(tmp_path), "gz", report_folder=str(tmp_path / "bad"))
    assert [d.text for d in read_all(reader)] == ["読める文書です。"]
    assert counted(reader, "unreadable_file") == 1
    assert bad_input_log(tmp_path / "bad")[0]["where"].startswith("b.jsonl.gz: ")


def test_plain_text_one_document_per_file_or_per_blank_line_block(tmp_path):
    (tmp_path / "a.txt").write_bytes("第一段落です。\n続きです。\n\n\n第二段落です。\n".encode() + b"\n\xff\xfe\n")
    per_block = TextSource(str(tmp_path), "notes", split="paragraph", report_folder=str(tmp_path / "bad"))
    assert [d.text.strip() for d in read_all(per_block)] == ["第一段落です。\n続きです。", "第二段落です。"]
    assert counted(per_block, "invalid_utf8") == 1
    assert bad_input_log(tmp_path / "bad")[0]["where"] == "a.txt:7"  # the block starting on line 7
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "b.txt").write_text("一つの文書。\n\n同じ文書の続き。", encoding="utf-8")
    assert [d.text for d in read_all(TextSource(str(tmp_path / "b"), "notes"))] == ["一つの文書。\n\n同じ文書の続き。"]


def test_parquet_rows_missing_or_empty_text_are_counted(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": ["一行目の文書。", None, "", "四行目の文書。"]}), tmp_path / "in" / "t.parquet")
    pq.write_table(pa.table({"body": ["列名が違う。"]}), tmp_path / "in" / "u.parquet")
    reader = ParquetSource(str(tmp_path / "in"), "table", report_folder=str(tmp_path / "bad"))
    assert [d.text for d in read_all(reader)] == ["一行目の文書。", "四行目の文書。"]
    assert counted(reader, "missing_text_field") == 2 and counted(reader, "empty_document") == 1
    wheres = [e["where"] for e in bad_input_log(tmp_path / "bad")]
    assert wheres == ["t.parquet:row 2", "t.parquet:row 3", "u.parquet: no column 'text'"]


def test_warc_html_pages_become_their_main_text(tmp_path):
    fixtures.write_warc(tmp_path / "pages.warc.gz")
    docs = read_all(WarcSource(str(tmp_path), "web"))
    assert len(docs) == len(fixtures.PAGES)
    rainbow = next(d for d in docs if d.metadata["url"] == "https://example.jp/kagaku/niji")
    assert "虹が見えることがあります" in rainbow.text and "<p>" not in rainbow.text
    assert "トップへ戻る" in rainbow.text  # kept by the extractor; the normaliser's patterns remove it


def test_hf_source_is_configured_without_touching_the_network():
    reader = hf_source("someone/ja-corpus", "hub", text_key="content", split="train", config="ja")
    assert reader.dataset == "someone/ja-corpus" and reader.text_key == "content"
    assert reader.dataset_options == {"split": "train", "name": "ja"} and reader.default_metadata == {"source": "hub"}
