"""The chat template, and which tokens of a rendered conversation are training targets (the answers).

The tokenizer's own chat template is used when it has one (Qwen2.5's, say). The tiny default's SentencePiece
tokenizer gets ``CHATML_TEMPLATE`` (Qwen2's ChatML without a default system message), set by the tokenizer stage.

Targets are found without knowing the template. For message i, an answer, the rendering of ``messages[:i]`` with
the generation prompt must be a prefix of the rendering of ``messages[:i + 1]``; the difference is the answer
with whatever the template puts after it up to the next message (for ChatML ``content<|im_end|>\\n``). The whole
rendering is tokenized once and cut at those character positions by the tokens' offsets, so the pieces' ids are
exactly the ids of the whole rendering.
"""
import bisect
import hashlib
from dataclasses import dataclass

CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class TemplateError(ValueError):
    """A chat template (or tokenizer) the targets cannot be found with."""


@dataclass
class Turn:
    prompt: list   # token ids from the end of the previous answer up to this answer: system, user, generation prompt
    answer: list   # the answer's token ids, up to the next message: the training targets


def check_single_token_markers(tokenizer, markers=CHATML_MARKERS):
    """The ids of ``markers``, refused unless each one tokenizes to exactly one id."""
    ids = []
    for marker in markers:
        encoded = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise TemplateError(f"chat marker {marker!r} tokenizes to {len(encoded)} ids {encoded}, not one")
        ids.append(encoded[0])
    return ids


def require_chat_template(tokenizer, name):
    """The tokenizer's chat template, refused when it has none or cannot give token offsets."""
    if not tokenizer.chat_template:
        raise TemplateError(f"tokenizer {name} has no chat template; train the tokenizer again (the tiny one gets "
                            "ChatML) or use a tokenizer that has one")
    if not tokenizer.is_fast:
        raise TemplateError(f"tokenizer {name} is not a fast tokenizer: answers are cut by token offsets")
    return tokenizer.chat_template


def template_sha256(tokenizer):
    template = tokenizer.chat_template
    return hashlib.sha256(str(template).encode()).hexdigest() if template else None


def render(tokenizer, messages, add_generation_prompt=False):
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def answer_spans(tokenizer, messages):
    """(rendered text, [(start, end)] character span of every answer); raises TemplateError when the template's
    renderings of the conversation's prefixes are not prefixes of one another."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a conversation to train on must end with an answer")
    text = render(tokenizer, messages)
    spans, previous_end = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[:i + 1])
        if not through.startswith(before) or not text.startswith(through) or len(before) < previous_end:
            raise TemplateError(
                f"the chat template is not prefix-consistent at message {i + 1}: rendering the messages before an "
                f"answer (with the generation prompt) must be a prefix of rendering them with the answer, and that "
                f"of the whole conversation; got {before[-60:]!r} vs {through[-80:]!r}")
        if len(through) == len(before):
            raise TemplateError(f"the chat template renders the answer at message {i + 1} as nothing")
        spans.append((len(before), len(through)))
        previous_end = len(through)
    return text, spans


def split_turns(ids, offsets, spans):
    """Cut one conversation's ids into turns at the answers' character spans; None when a token crosses a cut
    (its characters would be part prompt, part answer)."""
    starts = [start for start, _ in offsets]
    cuts = []
    for boundary in (position for span in spans for position in span):
        cut = bisect.bisect_left(starts, boundary)
        if cut > 0 and offsets[cut - 1][1] > boundary:
            return None
        cuts.append(cut)
    if cuts[-1] != len(ids):
        raise ValueError("tokens after the last answer: a conversation to train on ends with an answer")
    turns, previous = [], 0
    for start, end in zip(cuts[::2], cuts[1::2]):
        turns.append(Turn(prompt=list(ids[previous:start]), answer=list(ids[start:end])))
        previous = end
    return turns


def tokenize_conversations(tokenizer, conversations, places=None):
    """Turns of each conversation (a list of message lists), tokenized in one batch: the prompt and answer ids
    of its turns laid end to end equal the ids of its whole rendering. None for a conversation where a token
    crosses an answer's boundary (the caller counts it). ``places`` name the conversations in errors."""
    rendered = []
    for number, messages in enumerate(conversations):
        try:
            rendered.append(answer_spans(tokenizer, messages))
        except TemplateError as error:
            raise TemplateError(f"{places[number]}: {error}" if places else str(error)) from None
    if not rendered:
        return []
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    return [split_turns(ids, offsets, spans) for (_, spans), ids, offsets
            in zip(rendered, encoded["input_ids"], encoded["offset_mapping"])]
