"""The corpus pipeline end to end on small hand-made corpora: dedup, split, packing, report, resumption."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from corpus.executors import make_executor, run_steps
from corpus.filters import LengthFilter
from corpus.pack import TokenStream, copies, is_valid, pack_corpus
from corpus.pipeline import build_steps
from corpus.report import build_report
from corpus.run import EmptyCorpusError, prepare_work_dir, run_corpus
from stages.tokenizer import train_sentencepiece
from taid.data import unpack

SAKURA = ("春になると、各地で桜の開花が話題になります。気象台は標本木を観察して、五輪以上の花が咲いた日を開花日として"
          "発表します。満開になるのは、開花からおよそ一週間後です。花見の名所には朝早くから人が集まり、木の下で弁当を"
          "広げる家族の姿も見られます。桜の花は散るのが早いので、雨や風の強い日が続くと、見ごろはすぐに終わります。")
# three characters changed (開花→咲花, 朝早く→朝はやく, 家族→親子): a near copy
SAKURA_NEAR = SAKURA.replace("桜の開花", "桜の咲花").replace("朝早く", "朝はやく").replace("家族", "親子")
RAINBOW = ("雨上がりに太陽を背にして空を見ると、虹が見えることがあります。空気中の小さな水のつぶが、光を曲げて色に"
           "分けるからです。光は水のつぶに入るときと出るときに曲がり、色によって曲がり方が少しずつちがいます。"
           "そのため、赤から紫までの帯になって見えます。ホースで水をまくときにも、庭で小さな虹を作れます。")
TEA = ("緑茶をおいしくいれるには、お湯の温度が大切です。沸騰したお湯を一度湯のみに移すと、温度が少し下がります。"
       "急須に茶葉を入れたら、冷ましたお湯を注いで一分ほど待ちます。最後の一滴まで注ぎきると、二杯目もおいしく"
       "飲めます。玉露のような甘みのあるお茶は、さらに低い温度でゆっくりいれると、うまみがよく出ます。")


def write_jsonl(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def corpus_params(folder, **overrides):
    params = {"tasks": 2, "workers": 1, "seed": 7, "valid_fraction": 0.3,
              "sources": [{"name": "hand", "type": "jsonl", "path": str(folder)}],
              "filters": {"length": {"min_chars": 20, "max_chars": 10000}},
              "dedup": {"exact": True, "minhash": {"n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8}}}
    return {**params, **overrides}


def run_pipeline(corpus, work):
    work = prepare_work_dir(work, corpus)
    steps, final, notes = build_steps(corpus, work)
    run_steps(steps, work, workers=corpus["workers"])
    texts = [json.loads(line)["text"] for path in sorted(final.glob("*.jsonl"))
             for line in path.open(encoding="utf-8")]
    return texts, build_report(work, [name for name, _, _ in steps], notes)


def test_exact_dedup_removes_exact_copies_only(tmp_path):
    write_jsonl(tmp_path / "in/a.jsonl.gz", [SAKURA, RAINBOW, SAKURA])
    write_jsonl(tmp_path / "in/b.jsonl.gz", [SAKURA, TEA])   # a copy in another shard too
    corpus = corpus_params(tmp_path / "in", dedup={"exact": True, "minhash": {"enabled": False}})
    texts, report = run_pipeline(corpus, tmp_path / "work")
    assert sorted(texts) == sorted([SAKURA, RAINBOW, TEA])
    assert report["removed"]["exact_dedup"] == 2


def test_near_dedup_removes_a_near_copy_and_keeps_a_different_document(tmp_path):
    write_jsonl(tmp_path / "in/a.jsonl.gz", [SAKURA, RAINBOW])
    write_jsonl(tmp_path / "in/b.jsonl.gz", [SAKURA_NEAR, TEA])
    texts, report = run_pipeline(corpus_params(tmp_path / "in"), tmp_path / "work")
    assert len(texts) == 3 and RAINBOW in texts and TEA in texts
    assert (SAKURA in texts) != (SAKURA_NEAR in texts)
    assert report["removed"] == {"normalise": 0, "length": 0, "exact_dedup": 0, "near_dedup": 1}


def test_report_counts_in_out_reasons_with_examples(tmp_path):
    write_jsonl(tmp_path / "in/a.jsonl.gz", [SAKURA, "短い。", "これも短い。", RAINBOW, RAINBOW])
    (tmp_path / "in/c.jsonl").write_bytes(b"{broken\n")
    texts, report = run_pipeline(corpus_params(tmp_path / "in"), tmp_path / "work")
    assert report["documents_in"] == 5 and report["documents_out"] == 2
    assert report["characters_in"] == len(SAKURA) + 3 + 6 + 2 * len(RAINBOW)
    assert report["characters_out"] == len(SAKURA) + len(RAINBOW)
    assert report["bad_input"] == {"malformed_json": 1}
    assert report["bad_input_examples"] == [{"reason": "malformed_json", "where": "c.jsonl:1"}]
    reasons = {r["reason"]: r for r in report["top_reasons"]}
    assert reasons["length_too_short"]["documents"] == 2 and reasons["length_too_short"]["example"] in ("短い。",
                                                                                                     "これも短い。")
    assert reasons["exact_dedup"]["example"].startswith("雨上がり")
    assert report["top_remover"] == "length"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [SAKURA, RAINBOW, TEA] * 5
    return train_sentencepiece(texts, 500, tmp_path_factory.mktemp("tok"))


def documents(packed, eos_id):
    stream = unpack(packed).tolist()
    docs, current = [], []
    for token in stream:
        if token == eos_id:
            docs.append(tuple(current))
            current = []
        else:
            current.append(token)
    assert current == []  # the stream ends with EOS
    return docs


def many_documents(n):
    """Distinct Japanese documents: a paragraph with its own number and weekday."""
    days = "月火水木金土日"
    return [f"第{i}号の記録です。{days[i % 7]}曜日に{i % 13 + 1}人が集まり、桜の話をしました。{RAINBOW[: 20 + i % 30]}"
            for i in range(n)]


def test_no_document_is_on_both_sides_of_the_split_and_packing_is_seeded(tmp_path, tokenizer):
    write_jsonl(tmp_path / "in/a.jsonl.gz", many_documents(60))
    write_jsonl(tmp_path / "in/b.jsonl.gz", many_documents(120)[60:])
    corpus = corpus_params(tmp_path / "in", dedup={"exact": True, "minhash": {"enabled": False}})
    report = run_corpus(corpus, tmp_path / "work", tokenizer, tmp_path / "out", seq_len=16)
    train = documents(np.load(tmp_path / "out/train.npy"), tokenizer.eos_token_id)
    valid = documents(np.load(tmp_path / "out/valid.npy"), tokenizer.eos_token_id)
    assert not set(train) & set(valid)
    assert len(train) + len(valid) == 120 == report["documents_out"]
    assert 20 <= len(valid) <= 52  # valid_fraction 0.3 of 120 = 36, drawn per document
    assert report["splits"]["valid"]["documents"] == len(valid)
    expected = {tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in many_documents(120)}
    assert set(train) | set(valid) == expected
    again = run_corpus(corpus, tmp_path / "work", tokenizer, tmp_path / "out2", seq_len=16)
    assert again["splits"] == report["splits"]
    assert np.array_equal(np.load(tmp_path / "out/train.npy"), np.load(tmp_path / "out2/train.npy"))
    reseeded = run_corpus({**corpus, "seed": 8}, tmp_path / "work3", tokenizer, tmp_path / "out3", seq_len=16)
    assert reseeded["documents_out"] == 120
    assert not np.array_equal(np.load(tmp_path / "out/valid.npy"), np.load(tmp_path / "out3/valid.npy"))


def test_packing_round_trips_the_token_stream(tmp_path, monkeypatch):
    monkeypatch.setattr("corpus.pack.FLUSH_TOKENS", 3)  # exercise the chunked writes and copies
    stream = TokenStream(tmp_path / "scratch", eos_id=0)
    for tokens in ([1, 2, 3], [4], [5, 6], [7, 8, 9, 10]):
        stream.add(tokens)
    assert stream.pack(tmp_path / "p.npy", seq_len=4) == 4
    packed = np.load(tmp_path / "p.npy")
    assert packed.dtype == np.int32 and packed.tolist() == [[1, 2, 3, 0], [4, 0, 5, 6], [0, 7, 8, 9], [10, 0, -1, -1]]
    assert unpack(packed).tolist() == [1, 2, 3, 0, 4, 0, 5, 6, 0, 7, 8, 9, 10, 0]
    empty = TokenStream(tmp_path / "scratch2", eos_id=0)
    assert empty.pack(tmp_path / "e.npy", seq_len=4) == 0 and np.load(tmp_path / "e.npy").shape == (0, 4)


def test_source_weights_repeat_training_documents_and_the_split_fraction_holds():
    texts = [f"文書{i}" for i in range(2000)]
    assert [copies(t, 1, 2.0) for t in texts[:5]] == [2] * 5 and copies("文書", 1, 0.0) == 0
    assert 1.45 < np.mean([copies(t, 1, 1.5) for t in texts]) < 1.55
    assert 0.08 < np.mean([is_valid(t, 1, 0.1) for t in texts]) < 0.12
    assert [is_valid(t, 1, 0.1) for t in texts] == [is_valid(t, 1, 0.1) for t in texts]  # fixed per document


def test_a_corpus_emptied_by_the_filters_stops_naming_the_filter(tmp_path, tokenizer):
    write_jsonl(tmp_path / "in/a.jsonl.gz", ["短い。", "これも短い。", "とても短い。"])
    with pytest.raises(EmptyCorpusError, match=r"most removed by length \(3 documents\)"):
        run_corpus(corpus_params(tmp_path / "in"), tmp_path / "work", tokenizer, tmp_path / "out", seq_len=16)


def test_an_interrupted_run_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
    shards = [many_documents(90)[i * 30:(i + 1) * 30] for i in range(3)]
    shards[2][5] = "毒" + shards[2][5]   # the third shard's task fails on this document the first time
    for i, texts in enumerate(shards):
        write_jsonl(tmp_path / f"in/{i}.jsonl.gz", texts)
    # these documents share a long passage: near dedup would keep one, and this test is about resumption
    corpus = corpus_params(tmp_path / "in", tasks=3, dedup={"exact": True, "minhash": {"enabled": False}})
    original = LengthFilter.filter

    def crash_on_poison(self, doc):
        if doc.text.startswith("毒"):
            raise RuntimeError("killed")
        return original(self, doc)

    monkeypatch.setattr(LengthFilter, "filter", crash_on_poison)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(corpus, tmp_path / "work")
    logs = tmp_path / "work/logs/filter"
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001"]
    finished = [logs / "stats/00000.json", logs / "stats/00001.json", tmp_path / "work/filtered/00000.jsonl"]
    before = [p.stat().st_mtime_ns for p in finished]

    monkeypatch.setattr(LengthFilter, "filter", original)
    texts, report = run_pipeline(corpus, tmp_path / "work")
    assert [p.stat().st_mtime_ns for p in finished] == before   # shards 0 and 1 were not redone
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001", "00002"]
    fresh_texts, fresh_report = run_pipeline(corpus, tmp_path / "fresh")
    assert sorted(texts) == sorted(fresh_texts) and len(texts) == 90
    assert report["documents_in"] == fresh_report["documents_in"] == 90


def test_other_settings_clear_the_working_directory_instead_of_resuming(tmp_path):
    write_jsonl(tmp_path / "in/a.jsonl.gz", [SAKURA])
    corpus = corpus_params(tmp_path / "in")
    work = prepare_work_dir(tmp_path / "work", corpus)
    (work / "logs").mkdir()
    assert (prepare_work_dir(tmp_path / "work", corpus) / "logs").exists()
    assert not (prepare_work_dir(tmp_path / "work", {**corpus, "seed": 8}) / "logs").exists()


def test_the_stage_stops_with_a_clear_message_when_filtering_leaves_nothing(tmp_path, tokenizer):
    write_jsonl(tmp_path / "in/a.jsonl.gz", ["短い。", "これも短い。"])
    params = {"prepare": {"seq_len": 16}, "corpus": corpus_params(tmp_path / "in")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    tokenizer.save_pretrained(tmp_path / "tok")
    result = subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(tmp_path / "params.yaml"),
                             "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "out"),
                             "--work", str(tmp_path / "work"), "--report", str(tmp_path / "corpus.json")],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stage prepare failed: no document is left" in result.stderr and "length (2 documents)" in result.stderr


def test_executors_pass_their_settings_through_and_unknown_kinds_are_refused(tmp_path):
    slurm = make_executor("slurm", [], 4, str(tmp_path / "logs"), options={"partition": "cpu", "time": "01:00:00"})
    assert type(slurm).__name__ == "SlurmPipelineExecutor" and (slurm.tasks, slurm.partition) == (4, "cpu")
    local = make_executor("local", [], 4, str(tmp_path / "local"), workers=8)
    assert (local.tasks, local.workers) == (4, 4)   # never more workers than tasks
    with pytest.raises(ValueError, match="must be one of"):
        make_executor("dask", [], 4, str(tmp_path / "x"))


def test_a_slurm_run_that_never_completes_stops_after_its_wait(tmp_path, monkeypatch):
    class NeverDone:
        def run(self):
            pass

        def get_incomplete_ranks(self, skip_completed=True):
            return [0, 3]

    monkeypatch.setattr("corpus.executors.make_executor", lambda *args, **kwargs: NeverDone())
    with pytest.raises(RuntimeError, match=r"Slurm tasks \[0, 3\] of step 'dedup' are still incomplete"):
        run_steps([("read", [], 2), ("dedup", [], 2)], tmp_path, "slurm", options={"wait_hours": 0},
                  poll_seconds=0)
