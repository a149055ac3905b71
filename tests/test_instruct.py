"""The instruct stage on chat data: loss on assistant tokens only, by SFT or by distillation from the
stage's own teacher (live or cached)."""
import json
from argparse import Namespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stages import prepare_chat, teacher, teacher_cache
from stages.training import load_prepared
from taid.data import to_batch
from taid.objective import Objective
from tests.test_stages import REPO, pipeline, run_distill, run_student, write_params  # noqa: F401  (a fixture)

CHAT_FILES = ("messages", "sharegpt", "alpaca")


def chat_params(paths, **overrides):
    params, _ = write_params(paths.root, **overrides)
    params["chat"].update(seq_len=96, sources=[
        {"name": name, "path": str(REPO / f"data/sample/chat/{name}.jsonl.gz"), "format": name} for name in CHAT_FILES])
    params["instruct"].update(student=str(paths.root / "taid" / "model"))
    params["instruct"]["teacher"].update(source=str(paths.teacher))
    params["instruct"]["train"].update(steps=6, batch_size=8, warmup_steps=1, eval_every=3)
    return params


@pytest.fixture(scope="module")
def chat_pipeline(pipeline):
    """The module pipeline plus its chat data and a distilled student to start instruct from."""
    params = chat_params(pipeline)
    if not (pipeline.root / "taid" / "model").is_dir():
        run_distill(pipeline, params, "taid")
    pipeline.chat = pipeline.root / "chat"
    prepare_chat.run(Namespace(tokenizer=pipeline.tokenizer, out=pipeline.chat, report=pipeline.root / "chat.json"),
                     params)
    return pipeline


def run_instruct(paths, params, name, teacher_cache_dir=None):
    return run_student("instruct", paths, paths.chat, params, name, teacher_cache_dir)[1]


def test_the_sft_loss_counts_assistant_tokens_only(chat_pipeline):
    tokenizer = AutoTokenizer.from_pretrained(chat_pipeline.tokenizer)
    train, _ = load_prepared(chat_pipeline.chat, tokenizer)
    rows = train[np.arange(4)]
    model = AutoModelForCausalLM.from_pretrained(chat_pipeline.teacher)
    with torch.no_grad():
        got, n = Objective.language_modelling(chunk_size=5).loss_sum(model, to_batch(rows))
        tokens = torch.as_tensor(np.asarray(rows.tokens, dtype=np.int64))
        logits = model(input_ids=tokens.clamp(min=0), attention_mask=(tokens >= 0).long()).logits.double()
    expected, count = 0.0, 0
    for b in range(tokens.shape[0]):  # position s predicts token s + 1 when s + 1 is an assistant token
        for s in range(tokens.shape[1] - 1):
            if rows.targets[b, s + 1] and tokens[b, s] >= 0 and tokens[b, s + 1] >= 0:
                expected -= float(torch.log_softmax(logits[b, s], -1)[tokens[b, s + 1]])
                count += 1
    assert n == count and 0 < count < int((tokens >= 0).sum())
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_sft_needs_no_teacher_and_lowers_the_assistant_loss(chat_pipeline):
    params = chat_params(chat_pipeline)
    params["instruct"]["method"] = "sft"
    params["instruct"]["teacher"] = None  # SFT never reads it
    metrics = run_instruct(chat_pipeline, params, "sft")
    assert metrics["method"] == "sft" and "val_kl" not in metrics
    assert metrics["val_loss"] < metrics["val_loss_initial"]


@pytest.mark.parametrize("mode", ["live", "cache"])
def test_instruct_distils_from_its_own_teacher_live_or_cached(chat_pipeline, mode, tmp_path):
    params = chat_params(chat_pipeline, **{"instruct.teacher.mode": mode})
    params["instruct"]["teacher"]["cache"].update(shard_rows=8)
    cache = None
    if mode == "cache":
        cache = tmp_path / "cache"
        teacher_cache.run(Namespace(stage="instruct", tokenizer=chat_pipeline.tokenizer, data=chat_pipeline.chat,
                                    out=cache, metrics=tmp_path / "cache.json"), params)
        stats = json.loads((tmp_path / "cache.json").read_text())["splits"]
        train, valid = load_prepared(chat_pipeline.chat, AutoTokenizer.from_pretrained(chat_pipeline.tokenizer))
        assert stats["train"]["positions"] == int(train.kept_mask().sum())  # assistant positions only
        assert stats["valid"]["positions"] == int(valid.kept_mask().sum())
    metrics = run_instruct(chat_pipeline, params, f"distill-{mode}", cache)
    assert metrics["teacher_mode"] == mode and metrics["loss"] == "taid"
    assert metrics["val_kl"] < metrics["val_kl_initial"]


def test_teacher_chat_continues_a_teacher_trained_here_and_passes_a_resolved_one_through(chat_pipeline, tmp_path):
    params = chat_params(chat_pipeline)
    params["teacher"]["chat_train"].update(steps=3, eval_every=0)
    out = tmp_path / "teacher-chat"
    teacher.run(Namespace(init=chat_pipeline.teacher, tokenizer=chat_pipeline.tokenizer, data=chat_pipeline.chat,
                          out=out, metrics=tmp_path / "chat.json", checkpoints=None), params)
    record = json.loads((out / "teacher.json").read_text())
    before = json.loads((chat_pipeline.teacher / "teacher.json").read_text())
    assert record["source"] == str(out) and record["config_sha256"] == before["config_sha256"]
    assert record["weights_sha256"] != before["weights_sha256"]  # it trained on the chat data
    assert json.loads((tmp_path / "chat.json").read_text())["step"] == 3
    resolved = tmp_path / "resolved"
    resolved.mkdir()
    (resolved / "teacher.json").write_text(json.dumps({**before, "source": "Qwen/Qwen2.5-32B-Instruct"}))
    teacher.run(Namespace(init=resolved, tokenizer=chat_pipeline.tokenizer, data=chat_pipeline.chat,
                          out=tmp_path / "passed", metrics=tmp_path / "passed.json", checkpoints=None), params)
    assert json.loads((tmp_path / "passed" / "teacher.json").read_text())["source"] == "Qwen/Qwen2.5-32B-Instruct"
