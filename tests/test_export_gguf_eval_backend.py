"""The eval stage's GGUF backend on an exported file: a tiny model trained to answer "3" is scored on
JCommonsenseQA exactly as its labels say, in both modes, and each backend call agrees with the Hugging Face
backend on the same model (log-likelihoods, greedy text, chat replies, the packed loss)."""
import numpy as np
import pytest
import torch

from eval.backends import load_backend
from eval.backends.gguf import GGUFBackend
from eval.backends.hf import HFBackend
from eval.data import DataError, LoadReport
from eval.prompts import few_shot_prompt
from eval.tasks import RunContext, get_task
from export.gguf import convert
from taid.data import PAD
from tests.test_eval_support import FIXTURES, no_progress
from tests.test_export_gguf_support import model_dir, sentencepiece_tokenizer_dir


def examples():
    context = RunContext(data_dir=FIXTURES, progress=no_progress)
    return get_task("jcommonsenseqa").load(context, 0, LoadReport())[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained until it answers "3" (then a blank line) to every JCommonsenseQA question,
    saved, and exported as F32 GGUF."""
    tmp = tmp_path_factory.mktemp("answers-three")
    folder, model, tokenizer = model_dir(tmp, sentencepiece_tokenizer_dir(), hidden=32, layers=1, heads=2,
                                         kv_heads=1, seed=1)
    instruction = get_task("jcommonsenseqa").instruction
    pairs = [(tokenizer(p)["input_ids"], tokenizer(p + "3\n\n")["input_ids"])
             for p in (few_shot_prompt(instruction, [], ex.input) for ex in examples())]
    optimizer = torch.optim.Adam(model.train().parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a model this small trains many times faster on one thread than on two busy ones
    for _ in range(40):
        loss = sum(torch.nn.functional.cross_entropy(model(torch.tensor([whole])).logits[0][len(context) - 1: -1],
                                                     torch.tensor(whole[len(context):])) for context, whole in pairs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval().save_pretrained(folder)
    path = convert(folder, tmp / "three.gguf", "f32").path
    backend = load_backend("gguf", path)
    yield backend, HFBackend(model, tokenizer)
    backend.close()


@pytest.mark.parametrize("mode", ["loglikelihood", "generate"])
def test_the_gguf_backend_scores_jcommonsenseqa_as_the_labels_say(trained, mode):
    gguf_backend, _ = trained
    context = RunContext(data_dir=FIXTURES, settings={"mode": mode, "shots": 0}, progress=no_progress)
    result = get_task("jcommonsenseqa").run(gguf_backend, context)
    labels = [ex.target for ex in examples()]
    assert result["score"] == pytest.approx(labels.count("3") / len(labels)) == pytest.approx(0.2)


def test_log_likelihoods_equal_the_hf_backends(trained):
    gguf_backend, hf_backend = trained
    prompt = few_shot_prompt(get_task("jcommonsenseqa").instruction, [], examples()[0].input)
    requests = [(prompt, str(i)) for i in range(5)] + [("", "猫"), ("東京", "は首都")]
    assert gguf_backend.loglikelihood(requests) == pytest.approx(hf_backend.loglikelihood(requests), abs=2e-3)


def test_greedy_text_and_chat_replies_equal_the_hf_backends(trained):
    gguf_backend, hf_backend = trained
    prompts = [few_shot_prompt(get_task("jcommonsenseqa").instruction, [], ex.input) for ex in examples()[:2]]
    assert gguf_backend.generate(prompts, 4) == hf_backend.generate(prompts, 4) == ["3", "3"]
    assert gguf_backend.generate(prompts[:1], 6, stop=("\n\n",)) == ["3"]
    conversations = [[{"role": "user", "content": "こんにちは"}]]
    assert gguf_backend.has_chat_template()
    assert gguf_backend.chat(conversations, 6) == hf_backend.chat(conversations, 6)


def test_the_packed_loss_equals_the_hf_backends(trained):
    gguf_backend, hf_backend = trained
    rows = np.random.default_rng(0).integers(0, 1200, size=(3, 12)).astype(np.int32)
    rows[1, 7:] = PAD
    nll, count = gguf_backend.packed_loss_sums(rows)
    expected_nll, expected_count = hf_backend.packed_loss_sums(rows)
    assert count == expected_count == 11 + 6 + 11
    assert nll == pytest.approx(expected_nll, rel=1e-4)


def test_the_context_comes_from_the_file_and_a_damaged_file_is_a_clear_error(trained, tmp_path):
    gguf_backend, _ = trained
    assert gguf_backend.n_ctx == 256   # the model's max_position_embeddings
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 12)
    with pytest.raises(DataError, match="bad.gguf"):
        GGUFBackend.from_file(tmp_path / "bad.gguf")
