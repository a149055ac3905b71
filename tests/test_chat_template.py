"""Chat template and assistant-only targets, on a tiny SentencePiece tokenizer trained here with the ChatML
template the tokenizer stage gives it. Expected strings are written out by hand."""
import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from chat.formats import to_messages
from chat.pack import fit_turns, new_counts
from chat.template import CHATML_TEMPLATE, TemplateError, Turn, render, require_chat_template, split_turns, \
    tokenize_conversations
from stages.tokenizer import train_sentencepiece

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "train.jsonl.gz"
END = "<|im_end|>\n"

CONVERSATION = [
    {"role": "system", "content": "あなたは親切なアシスタントです。"},
    {"role": "user", "content": "こんにちは。"},
    {"role": "assistant", "content": "こんにちは。ご用件は何でしょうか。"},
    {"role": "user", "content": "2024年5月3日は何曜日ですか。"},
    {"role": "assistant", "content": "2024年5月3日は金曜日です。"},
]
CHATML_RENDERING = (
    "<|im_start|>system\nあなたは親切なアシスタントです。<|im_end|>\n"
    "<|im_start|>user\nこんにちは。<|im_end|>\n"
    "<|im_start|>assistant\nこんにちは。ご用件は何でしょうか。<|im_end|>\n"
    "<|im_start|>user\n2024年5月3日は何曜日ですか。<|im_end|>\n"
    "<|im_start|>assistant\n2024年5月3日は金曜日です。<|im_end|>\n"
)

# rows in the three formats, with the prompts and answers each turn must decode to, written out by hand
ROWS = [
    ({"messages": CONVERSATION}, "messages", [
        ("<|im_start|>system\nあなたは親切なアシスタントです。<|im_end|>\n<|im_start|>user\nこんにちは。<|im_end|>\n"
         "<|im_start|>assistant\n", "こんにちは。ご用件は何でしょうか。<|im_end|>\n"),
        ("<|im_start|>user\n2024年5月3日は何曜日ですか。<|im_end|>\n<|im_start|>assistant\n",
         "2024年5月3日は金曜日です。<|im_end|>\n")]),
    ({"conversations": [{"from": "human", "value": "富士山の高さは何メートルですか。"},
                        {"from": "gpt", "value": "富士山の高さは3776メートルです。"},
                        {"from": "human", "value": "では、北岳は?"},
                        {"from": "gpt", "value": "北岳の高さは3193メートルです。富士山より583メートル低いです。"}]},
     "sharegpt", [
         ("<|im_start|>user\n富士山の高さは何メートルですか。<|im_end|>\n<|im_start|>assistant\n",
          "富士山の高さは3776メートルです。<|im_end|>\n"),
         ("<|im_start|>user\nでは、北岳は?<|im_end|>\n<|im_start|>assistant\n",
          "北岳の高さは3193メートルです。富士山より583メートル低いです。<|im_end|>\n")]),
    ({"instruction": "次の英語を日本語に訳してください。", "input": "I like cats.", "output": "「私は猫が好きです。」と訳せます。"},
     "alpaca", [
         ("<|im_start|>user\n次の英語を日本語に訳してください。\n\nI like cats.<|im_end|>\n<|im_start|>assistant\n",
          "「私は猫が好きです。」と訳せます。<|im_end|>\n")]),
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tokenizer stage's SentencePiece tokenizer, trained on part of the sample corpus, as saved."""
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f][:1000]
    out = tmp_path_factory.mktemp("tokenizer")
    train_sentencepiece(texts, 2000, out)
    return AutoTokenizer.from_pretrained(out)


def decode(tokenizer, ids):
    return tokenizer.decode(list(ids))


def test_the_trained_tokenizer_is_saved_with_the_chatml_template(tokenizer):
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert require_chat_template(tokenizer, "tiny") == CHATML_TEMPLATE


@pytest.mark.parametrize("marker", ["<|im_start|>", "<|im_end|>"])
def test_chatml_markers_are_single_ids_even_inside_text(tokenizer, marker):
    ids = tokenizer(f"前{marker}後", add_special_tokens=False)["input_ids"]
    marker_ids = [i for i in ids if tokenizer.convert_ids_to_tokens(i) == marker]
    assert len(marker_ids) == 1
    assert tokenizer(marker, add_special_tokens=False)["input_ids"] == marker_ids


def test_chatml_rendering_of_a_multi_turn_conversation_with_a_system_message(tokenizer):
    assert render(tokenizer, CONVERSATION) == CHATML_RENDERING
    assert render(tokenizer, CONVERSATION[:4], add_generation_prompt=True) == (
        CHATML_RENDERING[: CHATML_RENDERING.rindex("2024年5月3日は金曜日")])


def test_turns_laid_end_to_end_are_the_ids_of_the_whole_rendering(tokenizer):
    messages = CONVERSATION + [{"role": "user", "content": "半角 ABC と\n改行、全角カナの文です。"},
                               {"role": "assistant", "content": "はい、 ABC と改行\n\nも そのまま です。"}]
    turns = tokenize_conversations(tokenizer, [messages])[0]
    ids = [token for turn in turns for token in turn.prompt + turn.answer]
    assert ids == tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
    assert ids == list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))


@pytest.mark.parametrize("row, fmt, expected", ROWS, ids=[fmt for _, fmt, _ in ROWS])
def test_targets_are_exactly_the_answers_in_every_format(tokenizer, row, fmt, expected):
    _, messages, _ = to_messages(row, fmt)
    turns = tokenize_conversations(tokenizer, [messages])[0]
    assert [(decode(tokenizer, t.prompt), decode(tokenizer, t.answer)) for t in turns] == expected
    ids, targets = fit_turns(turns, 512, "turns", new_counts())
    assert decode(tokenizer, ids[targets]) == "".join(answer for _, answer in expected)
    assert decode(tokenizer, ids[~targets]) == "".join(prompt for prompt, _ in expected)


def test_the_tokenizers_own_template_decides_the_targets(tokenizer):
    own = copy.deepcopy(tokenizer)
    own.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    turns = tokenize_conversations(own, [CONVERSATION])[0]
    assert [decode(own, t.answer) for t in turns] == ["こんにちは。ご用件は何でしょうか。</s>\n",
                                                      "2024年5月3日は金曜日です。</s>\n"]
    assert decode(own, turns[1].prompt) == "<|user|>\n2024年5月3日は何曜日ですか。</s>\n<|assistant|>\n"


QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
QWEN_LIKE_TEMPLATE = (  # Qwen2.5's template without tools: a default system message when none is given
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")


def byte_level_bpe(texts):
    """A small byte-level BPE tokenizer with Qwen2's pre-tokenizer: most kanji become several byte tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_LIKE_TEMPLATE
    return tokenizer


def test_a_byte_level_bpe_tokenizer_with_a_qwen_like_template():
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        tok = byte_level_bpe([json.loads(line)["text"] for line in f][:300])
    messages = [{"role": "user", "content": "「麒麟」は何と読みますか? 𠮷も。"},
                {"role": "assistant", "content": "「きりん」と読みます。 ABC 123"},
                {"role": "user", "content": "ありがとう。"}, {"role": "assistant", "content": "どういたしまして!"}]
    turns = tokenize_conversations(tok, [messages])[0]
    assert [(decode(tok, t.prompt), decode(tok, t.answer)) for t in turns] == [
        ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
         "<|im_start|>user\n「麒麟」は何と読みますか? 𠮷も。<|im_end|>\n<|im_start|>assistant\n",
         "「きりん」と読みます。 ABC 123<|im_end|>\n"),
        ("<|im_start|>user\nありがとう。<|im_end|>\n<|im_start|>assistant\n", "どういたしまして!<|im_end|>\n")]
    ids = [token for turn in turns for token in turn.prompt + turn.answer]
    assert ids == tok(render(tok, messages), add_special_tokens=False)["input_ids"]


def test_a_template_that_is_not_prefix_consistent_is_refused(tokenizer):
    odd = copy.deepcopy(tokenizer)  # marks the last message, so an answer renders differently once followed
    odd.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if loop.last %} (最後)"
                         "{% endif %}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(TemplateError, match="chat.jsonl:7: the chat template is not prefix-consistent at message 3"):
        tokenize_conversations(odd, [CONVERSATION], ["chat.jsonl:7"])


def test_a_tokenizer_without_a_chat_template_is_refused_by_name(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(TemplateError, match="tokenizer models/other has no chat template"):
        require_chat_template(bare, "models/other")


def test_split_turns_cuts_at_character_spans():
    # text "ABCDEFGHIJ", tokens AB|C|DE|FG|HIJ
    offsets = [(0, 2), (2, 3), (3, 5), (5, 7), (7, 10)]
    assert split_turns([1, 2, 3, 4, 5], offsets, [(3, 10)]) == [Turn([1, 2], [3, 4, 5])]
    assert split_turns([1, 2, 3, 4, 5], offsets, [(2, 5), (7, 10)]) == [Turn([1], [2, 3]), Turn([4], [5])]
    with pytest.raises(ValueError, match="after the last answer"):
        split_turns([1, 2, 3, 4, 5], offsets, [(2, 5)])


def test_a_token_across_an_answer_boundary_is_reported_as_none():
    offsets = [(0, 2), (2, 5), (5, 6)]   # the answer starts at character 3, inside the second token
    assert split_turns([7, 8, 9], offsets, [(3, 6)]) is None


def test_fitted_arrays_have_matching_shapes_and_types(tokenizer):
    turns = tokenize_conversations(tokenizer, [CONVERSATION])[0]
    ids, targets = fit_turns(turns, 512, "turns", new_counts())
    assert ids.dtype == np.int32 and targets.dtype == np.bool_ and ids.shape == targets.shape
