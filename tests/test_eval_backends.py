"""The Hugging Face backend on tiny real models, each checked against a second, plain computation:
log-likelihoods, greedy generation (batched = one by one = a hand-written argmax loop), stop sequences,
the chat template, the packed loss; and log-likelihood choice on a model trained to answer one way."""
import numpy as np
import pytest
import torch

from eval.backends import load_backend
from eval.backends.hf import HFBackend
from eval.data import DataError
from eval.prompts import few_shot_prompt
from eval.tasks import RunContext, get_task
from taid.data import PAD
from tests.test_eval_support import FIXTURES, no_progress, tiny_model, tokenizer

PROMPTS = ["質問：電車に乗るときに必要なものは？", "猫", "明日は雨が降るでしょう。東京から大阪まで新幹線で行きます。"]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def backend(tok):
    return HFBackend(tiny_model(tok, seed=3), tok)


def plain_loglikelihood(model, tok, context, continuation):
    whole = tok(context + continuation)["input_ids"]
    n_context = len(tok(context)["input_ids"])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(float(log_probs[i - 1, whole[i]]) for i in range(n_context, len(whole)))


def test_loglikelihood_of_a_padded_batch_equals_each_sequence_alone(backend, tok):
    requests = [(p, c) for p in PROMPTS for c in ("0", "切符", "\n\n")]
    got = backend.loglikelihood(requests)
    expected = [plain_loglikelihood(backend.model, tok, p, c) for p, c in requests]
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(x < 0 for x in got)


def plain_greedy(model, tok, prompt, n):
    ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


def test_batched_greedy_generation_equals_a_plain_argmax_loop(backend, tok):
    n = 6
    batched = backend.generate(PROMPTS, n)
    for prompt, text in zip(PROMPTS, batched):
        ids = plain_greedy(backend.model, tok, prompt, n)
        new = ids[len(tok(prompt)["input_ids"]):]
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        assert text == tok.decode(new).strip()
    assert batched == [backend.generate([p], n)[0] for p in PROMPTS]


def test_generation_is_cut_at_the_first_stop_sequence(backend, tok):
    free = backend.generate(PROMPTS[:1], 12)[0]
    assert len(free) >= 3
    stop = free[1:3]   # a piece the model is known to write
    cut = backend.generate(PROMPTS[:1], 12, stop=(stop,))[0]
    assert cut == free[: free.index(stop)].strip()


def test_chat_renders_the_tokenizers_template(backend, tok):
    conversation = [{"role": "user", "content": "こんにちは"}]
    by_hand = "<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n"
    ids = plain_greedy(backend.model, tok, by_hand, 5)
    prompt_length = len(tok(by_hand, add_special_tokens=False)["input_ids"])
    new = ids[prompt_length:]
    new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
    assert backend.has_chat_template()
    assert backend.chat([conversation], 5) == [tok.decode(new).strip()]


def test_packed_loss_sums_equal_a_plain_cross_entropy(backend):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(backend.tokenizer), size=(3, 10)).astype(np.int32)
    rows[2, 6:] = PAD
    nll, count = backend.packed_loss_sums(rows)
    expected, expected_count = 0.0, 0
    for row in rows:
        tokens = torch.tensor(row[row != PAD], dtype=torch.long)
        with torch.no_grad():
            logits = backend.model(tokens[None]).logits[0]
        expected += float(torch.nn.functional.cross_entropy(logits[:-1], tokens[1:], reduction="sum"))
        expected_count += len(tokens) - 1
    assert count == expected_count == 9 + 9 + 5
    assert nll == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def answers_three(tok):
    """A tiny model trained until it answers "3" (then a blank line) to every JCommonsenseQA question."""
    model = tiny_model(tok, seed=1).train()
    prompts = [few_shot_prompt(get_task("jcommonsenseqa").instruction, [], ex.input)
               for ex in _examples("jcommonsenseqa")]
    sequences = [(tok(p)["input_ids"], tok(p + "3\n\n")["input_ids"]) for p in prompts]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = 0.0
        for context, whole in sequences:
            logits = model(torch.tensor([whole])).logits[0]
            loss = loss + torch.nn.functional.cross_entropy(logits[len(context) - 1: -1],
                                                            torch.tensor(whole[len(context):]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return HFBackend(model.eval(), tok)


def _examples(name):
    from eval.data import LoadReport
    context = RunContext(data_dir=FIXTURES, progress=no_progress)
    return get_task(name).load(context, 0, LoadReport())[0]


@pytest.mark.parametrize("mode", ["loglikelihood", "generate"])
def test_a_model_trained_to_answer_3_is_scored_on_the_questions_whose_label_is_3(answers_three, mode):
    context = RunContext(data_dir=FIXTURES, settings={"mode": mode, "shots": 0}, progress=no_progress)
    result = get_task("jcommonsenseqa").run(answers_three, context)
    labels = [ex.target for ex in _examples("jcommonsenseqa")]
    assert result["score"] == pytest.approx(labels.count("3") / len(labels)) == pytest.approx(0.2)


def test_the_trained_model_prefers_3_among_the_choices(answers_three):
    prompt = few_shot_prompt(get_task("jcommonsenseqa").instruction, [], _examples("jcommonsenseqa")[0].input)
    scores = answers_three.loglikelihood([(prompt, str(i)) for i in range(5)])
    assert scores.index(max(scores)) == 3


def test_unknown_backend_and_a_gguf_without_its_library_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="unknown backend 'onnx'"):
        load_backend("onnx", tmp_path)
    with pytest.raises(DataError, match="llama-cpp-python|not found"):
        load_backend("gguf", tmp_path / "model.gguf")
