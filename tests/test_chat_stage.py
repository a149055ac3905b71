"""The prepare_chat stage end to end: the bundled chat sample plus hand-made sources (Parquet, bad rows, long
conversations) through a tokenizer trained by the tokenizer stage; arrays, meta.json and report checked against
what the test reads from the source files itself."""
import gzip
import json
import subprocess
import sys
import unicodedata
from argparse import Namespace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoTokenizer

from stages import prepare_chat, tokenizer
from taid.data import PAD
from taid.vocab import tokenizer_fingerprint

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "chat"
SAMPLE_SOURCES = [{"name": "messages", "path": str(SAMPLE / "messages.jsonl.gz"), "format": "messages", "weight": 1.0},
                  {"name": "sharegpt", "path": str(SAMPLE / "sharegpt.jsonl.gz"), "format": "sharegpt", "weight": 2},
                  {"name": "alpaca", "path": str(SAMPLE / "alpaca.jsonl.gz"), "format": "alpaca", "weight": 1.0}]
LONG = "長い答えです。" * 200


def qa(question, answer):
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


EXTRA_ROWS = [  # line 1: an answer longer than seq_len; 2: a prompt longer than seq_len; 3: a second turn too long
    {"messages": qa("長い答えをください。", LONG)},
    {"messages": qa("長い質問です。" * 200, "はい。")},
    {"messages": qa("一つ目の質問です。", "一つ目の答えです。") + qa("二つ目は?", LONG)},
    b"{broken",
    {"messages": [{"role": "assistant", "content": "答えが先です。"}, {"role": "user", "content": "質問です。"}]},
    {"conversations": [{"from": "human", "value": "質問だけです。"}]},
]
VALID_ROWS = [{"conversations": [{"from": "human", "value": f"{n}たす{n}はいくつですか。"},
                                 {"from": "gpt", "value": f"{n}たす{n}は{2 * n}です。"}]} for n in range(1, 21)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tokenizer from the tokenizer stage, the extra sources, and a params writer."""
    root = tmp_path_factory.mktemp("chat")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tokenizer.run(Namespace(out=root / "tokenizer"), params)
    with open(root / "extra.jsonl", "wb") as f:
        for row in EXTRA_ROWS:
            f.write((row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()) + b"\n")
    pq.write_table(pa.Table.from_pylist(VALID_ROWS), root / "held-out.parquet")
    sources = SAMPLE_SOURCES + [{"name": "extra", "path": str(root / "extra.jsonl")},
                                {"name": "held_out", "path": str(root / "held-out.parquet"), "split": "valid"}]
    return Namespace(root=root, tokenizer=root / "tokenizer", sources=sources)


def chat_params(setup, name, **chat):
    params = {"chat": {"seq_len": 256, "packing": False, "truncation": "turns", "valid_fraction": 0.05, "seed": 1337,
                       "sources": setup.sources, **chat}}
    path = setup.root / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    return params, path


def run_stage(setup, name, **chat):
    params, path = chat_params(setup, name, **chat)
    out = setup.root / name
    prepare_chat.run(Namespace(tokenizer=setup.tokenizer, out=out / "data", report=out / "chat.json",
                               params=str(path)), params)
    arrays = {f"{split}{kind}": np.load(out / "data" / f"{split}{kind}.npy")
              for split in ("train", "valid") for kind in ("", ".targets")}
    return arrays, json.loads((out / "data" / "meta.json").read_text()), json.loads((out / "chat.json").read_text())


@pytest.fixture(scope="module")
def unpacked(setup):
    return run_stage(setup, "unpacked")


def sample_answers():
    """Every assistant message of the sample files, read here with json and NFKC, not with chat.formats."""
    answers = set()
    for source in SAMPLE_SOURCES:
        with gzip.open(source["path"], "rt", encoding="utf-8") as f:
            for row in map(json.loads, f):
                turns = row.get("messages") or row.get("conversations") or [{"from": "gpt", "value": row["output"]}]
                answers |= {unicodedata.normalize("NFKC", t.get("content", t.get("value"))).strip()
                            for t in turns if t.get("role", t.get("from")) in ("assistant", "gpt")}
    return answers


def runs(mask):
    """(start, end) of each run of True in a boolean row."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2], edges[1::2]))


def test_the_arrays_have_the_agreed_layout_and_meta_describes_them(setup, unpacked):
    arrays, meta, _ = unpacked
    tok = AutoTokenizer.from_pretrained(setup.tokenizer)
    assert meta["tokenizer_sha256"] == tokenizer_fingerprint(tok)
    assert (meta["seq_len"], meta["packing"], meta["truncation"], meta["pad_id"]) == (256, False, "turns", PAD)
    for split in ("train", "valid"):
        ids, targets = arrays[split], arrays[f"{split}.targets"]
        assert ids.dtype == np.int32 and targets.dtype == np.bool_ and ids.shape == targets.shape
        assert ids.shape == (meta[split]["rows"], 256) and meta[split]["rows"] > 0
        assert meta[split]["tokens"] == int((ids != PAD).sum())
        assert meta[split]["target_tokens"] == int(targets.sum()) and not targets[ids == PAD].any()
    assert sorted(p.name for p in (setup.root / "unpacked" / "data").iterdir()) == [
        "meta.json", "train.npy", "train.targets.npy", "valid.npy", "valid.targets.npy"]


def test_targets_decode_to_whole_answers_and_prompts_end_with_the_generation_prompt(setup, unpacked):
    arrays, _, _ = unpacked
    tok = AutoTokenizer.from_pretrained(setup.tokenizer)
    answers = sample_answers() | {"一つ目の答えです。", "はい。"} | {f"{n}たす{n}は{2 * n}です。" for n in range(1, 21)}
    cut = 0
    for split in ("train", "valid"):
        for ids, targets in zip(arrays[split], arrays[f"{split}.targets"]):
            assert tok.decode(ids[ids != PAD].tolist()).startswith("<|im_start|>")
            for start, end in runs(targets):
                text = tok.decode(ids[start:end].tolist())
                assert tok.decode(ids[:start].tolist()).endswith("<|im_start|>assistant\n")
                if text.startswith("長い答えです。"):
                    cut += 1
                    assert end == 256 and LONG.startswith(text), "the answer is cut at seq_len"
                else:
                    assert text.endswith("<|im_end|>\n") and text.removesuffix("<|im_end|>\n") in answers, text
    assert cut == 1


def test_the_report_counts_rows_formats_bad_input_and_truncation(setup, unpacked):
    _, meta, report = unpacked
    for source in SAMPLE_SOURCES:
        with gzip.open(source["path"], "rt", encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        counted = report["sources"][source["name"]]
        assert counted["rows"] == counted["conversations"] == counted["formats"][source["format"]] == lines
        assert sum(counted["kept"].values()) == lines and counted["malformed"] == {}
    extra = report["sources"]["extra"]
    assert extra["rows"] == 6 and extra["formats"] == {"messages": 3}
    assert extra["malformed"] == {"malformed_json": 1, "roles_out_of_order": 1, "no_assistant_turn": 1}
    assert [e["where"] for e in extra["malformed_examples"]] == [f"{setup.root / 'extra.jsonl'}:{n}" for n in (4, 5, 6)]
    assert report["truncated"] == {"turns_dropped": 1, "conversations_shortened": 1, "answer_truncated": 1,
                                   "answer_too_long": 0, "prompt_too_long": 1, "token_crosses_turn_boundary": 0}
    assert report["sources"]["held_out"]["kept"] == {"train": 0, "valid": 20}
    assert report["splits"] == {split: meta[split] for split in ("train", "valid")}


def test_weights_repeat_training_conversations_and_valid_is_never_repeated(unpacked):
    _, meta, report = unpacked
    kept = {name: source["kept"] for name, source in report["sources"].items()}
    weights = {"messages": 1, "sharegpt": 2, "alpaca": 1, "extra": 1, "held_out": 1}
    assert meta["train"]["conversations"] == sum(weights[n] * k["train"] for n, k in kept.items())
    assert meta["valid"]["conversations"] == sum(k["valid"] for k in kept.values())
    assert meta["valid"]["conversations"] - 20 > 0, "the sample alone gives a valid split"


def test_no_conversation_is_on_both_sides_of_the_split(setup, unpacked):
    arrays, _, _ = unpacked
    tok = AutoTokenizer.from_pretrained(setup.tokenizer)
    sides = {split: {tok.decode(row[row != PAD].tolist()) for row in arrays[split]} for split in ("train", "valid")}
    assert len(sides["valid"]) == len(arrays["valid"]) and sides["train"] and not sides["train"] & sides["valid"]


def test_packing_with_truncation_drop(setup, unpacked):
    _, meta, report = run_stage(setup, "packed", packing=True, truncation="drop")
    assert report["truncated"]["answer_too_long"] == 1 and report["truncated"]["answer_truncated"] == 0
    unpacked_meta = unpacked[1]
    conversations = sum(meta[s]["conversations"] for s in ("train", "valid"))
    assert conversations == sum(unpacked_meta[s]["conversations"] for s in ("train", "valid")) - 1
    assert meta["train"]["rows"] < unpacked_meta["train"]["rows"] and meta["packing"] is True
    assert meta["train"]["fill"] > unpacked_meta["train"]["fill"]


def test_the_same_settings_give_the_same_bytes(setup, unpacked):
    arrays, _, _ = run_stage(setup, "again")
    assert all(np.array_equal(arrays[name], unpacked[0][name]) for name in arrays)


def test_a_missing_file_stops_the_stage_with_its_name_and_no_traceback(setup):
    sources = setup.sources + [{"name": "gone", "path": str(setup.root / "gone.jsonl")}]
    params, path = chat_params(setup, "missing", sources=sources)
    result = subprocess.run([sys.executable, "-m", "stages.prepare_chat", "--params", str(path), "--tokenizer",
                             str(setup.tokenizer), "--out", str(setup.root / "missing"), "--report",
                             str(setup.root / "missing.json")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "stage prepare_chat failed" in result.stderr and f"{setup.root / 'gone.jsonl'} not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("chat, message", [
    ({"seq_len": 256, "sources": [], "valid_fraction": 0.1}, "chat.sources is empty"),
    ({"seq_len": 256, "sourcez": []}, "chat: unknown keys ['sourcez']"),
    ({"seq_len": 256, "sources": [{"name": "a", "path": "x.jsonl", "format": "csv"}]}, "format must be one of"),
    ({"seq_len": 256, "sources": [{"name": "a", "path": "x.jsonl", "wieght": 2}]}, "unknown keys ['wieght']"),
    ({"seq_len": 1, "sources": [{"name": "a", "path": "x.jsonl"}]}, "chat.seq_len must be an integer >= 2"),
])
def test_bad_settings_are_refused_by_name(setup, chat, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        prepare_chat.run(Namespace(tokenizer=setup.tokenizer, out=setup.root / "bad", report=setup.root / "bad.json"),
                         {"chat": chat})


def test_a_valid_split_left_empty_is_an_error_that_says_what_to_change(setup):
    params, _ = chat_params(setup, "no-valid", valid_fraction=0.0, sources=SAMPLE_SOURCES)
    with pytest.raises(ValueError, match="the valid split of the chat data is empty: raise chat.valid_fraction"):
        prepare_chat.run(Namespace(tokenizer=setup.tokenizer, out=setup.root / "nv", report=setup.root / "nv.json"),
                         params)
