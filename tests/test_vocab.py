import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from stages.tokenizer import train_sentencepiece
from taid.objective import Objective
from taid.schedule import TAIDSchedule
from taid.trainer import TrainConfig, train
from taid.vocab import (
    TokenizerMismatchError, check_same_tokenizer, load_tokenizer, shared_vocab_size, tokenizer_fingerprint,
)
from tests.conftest import tiny_qwen2

TEXT = ["今日は良い天気です。明日は雨が降るでしょう。", "りんごを三つ買いました。猫が庭で寝ています。",
        "東京から大阪まで新幹線で行きます。", "本を読むのが好きです。"] * 20

QWEN25_32B_OUTPUTS, QWEN25_1_5B_OUTPUTS = 152_064, 151_936


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {size: train_sentencepiece(TEXT, size, root / str(size)) for size in (320, 330)}


def test_the_same_tokenizer_is_accepted_and_a_different_one_refused_naming_both(tokenizers):
    check_same_tokenizer(tokenizers[320], tokenizers[320], "teacher-dir", "student-dir")
    with pytest.raises(TokenizerMismatchError) as error:
        check_same_tokenizer(tokenizers[320], tokenizers[330], "Qwen/teacher", "local/student")
    assert "Qwen/teacher" in str(error.value) and "local/student" in str(error.value)


def test_one_changed_special_token_changes_the_fingerprint(tokenizers, tmp_path):
    other = train_sentencepiece(TEXT, 320, tmp_path)
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(tokenizers[320])
    other.eos_token = "<unk>"
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizers[320])


class _TokenizerOfSize:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_shared_ids_are_the_tokenizers_and_must_fit_both_output_layers():
    qwen_tokenizer = _TokenizerOfSize(151_665)
    assert shared_vocab_size(qwen_tokenizer, QWEN25_32B_OUTPUTS, QWEN25_1_5B_OUTPUTS) == 151_665
    with pytest.raises(TokenizerMismatchError, match="student has 1000 output rows"):
        shared_vocab_size(qwen_tokenizer, QWEN25_32B_OUTPUTS, 1000)


def test_teacher_and_student_with_qwen25_output_sizes_train_through_the_alignment():
    n_shared = 151_665
    teacher = tiny_qwen2(vocab_size=QWEN25_32B_OUTPUTS, hidden_size=8, seed=1).requires_grad_(False)
    student = tiny_qwen2(vocab_size=QWEN25_1_5B_OUTPUTS, hidden_size=8, seed=2)
    with torch.no_grad():  # the padding rows make a difference only if they are compared: make them loud
        teacher.get_output_embeddings().weight[n_shared:] = 5.0
    rows = np.random.default_rng(0).integers(0, n_shared, size=(8, 10)).astype(np.int32)
    objective = Objective("taid", teacher=teacher, n_shared=n_shared, chunk_size=32)
    before = student.get_output_embeddings().weight.detach().clone()
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, loss_chunk_size=32, weight_decay=0.0)
    result, student = train(student, objective, rows, rows[:2], cfg, schedule=TAIDSchedule(total_steps=3))
    assert all(np.isfinite(r["loss"]) for r in result.history)
    after = student.get_output_embeddings().weight.detach()
    # tied embeddings: rows of ids in the batch moved; padding rows past the tokenizer never do
    assert not torch.equal(after[:n_shared], before[:n_shared])
    assert torch.equal(after[n_shared:], before[n_shared:])
    assert result.evals[-1]["val_kl"] < result.evals[0]["val_kl"]


def test_the_trained_tokenizer_is_byte_identical_run_to_run(tmp_path):
    """DVC hashes the tokenizer directory: a path or timestamp inside it would rerun every later stage."""
    for name in ("a", "b"):
        train_sentencepiece(TEXT, 320, tmp_path / name)
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_a_tokenizer_saved_beside_a_qwen2_model_loads_as_the_class_it_was_saved_as(tmp_path):
    tokenizer = train_sentencepiece(TEXT, 320, tmp_path / "tokenizer")
    model_dir = tmp_path / "model"
    tiny_qwen2(vocab_size=len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    text = "明日は雨が降るでしょう。"
    loaded = load_tokenizer(model_dir)
    assert type(loaded) is type(tokenizer)
    assert loaded.encode(text) == tokenizer.encode(text) and len(tokenizer.encode(text)) > 1
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tokenizer)
    # the class transformers would pick from config.json splits differently: the fingerprint tells them apart
    by_model_type = AutoTokenizer.from_pretrained(model_dir)
    if by_model_type.encode(text) != tokenizer.encode(text):
        with pytest.raises(TokenizerMismatchError):
            check_same_tokenizer(by_model_type, tokenizer, "by model type", "as saved")
