"""Fit tokenized conversations into ``seq_len`` and lay them out as the instruct stage's arrays.

A split is two arrays of ``[n_rows, seq_len]``: ``{split}.npy`` (int32 token ids, tail padding ``taid.data.PAD``)
and ``{split}.targets.npy`` (bool, True where the token at that position is an answer token, a training
target). Without packing each row holds one conversation; with packing whole conversations are placed greedily,
in order, into rows (a conversation never crosses rows). Conversations stream to scratch files while they are
read, so memory holds their lengths, not their tokens.
"""
from collections import Counter
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from chat.template import Turn
from taid.data import PAD

TRUNCATION_MODES = ("turns", "drop")


def fit_turns(turns, seq_len, truncation, counts):
    """(ids, targets) of a conversation's turns cut to at most ``seq_len`` tokens, or None when it must go.

    Whole turns are kept while they fit (trailing turns dropped: ``turns_dropped``, ``conversations_shortened``).
    When even the first answer does not fit: with ``truncation: turns`` the answer is cut
    (``answer_truncated``), with ``drop`` the conversation goes (``answer_too_long``); when the prompt before
    the first answer leaves no room for an answer token, it goes (``prompt_too_long``)."""
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"chat.truncation must be one of {list(TRUNCATION_MODES)}, got {truncation!r}")
    kept = whole_turns_that_fit(turns, seq_len)
    if kept:
        if len(kept) < len(turns):
            counts["turns_dropped"] += len(turns) - len(kept)
            counts["conversations_shortened"] += 1
        return as_arrays(kept)
    first = turns[0]
    room = seq_len - len(first.prompt)
    if room < 1:
        counts["prompt_too_long"] += 1
        return None
    if truncation == "drop":
        counts["answer_too_long"] += 1
        return None
    counts["answer_truncated"] += 1
    return as_arrays([Turn(first.prompt, first.answer[:room])])


def whole_turns_that_fit(turns, seq_len):
    kept, length = [], 0
    for turn in turns:
        length += len(turn.prompt) + len(turn.answer)
        if length > seq_len:
            break
        kept.append(turn)
    return kept


def as_arrays(turns):
    """int32 ids and bool targets (True on answer tokens) of turns laid end to end."""
    ids = np.array([token for turn in turns for token in turn.prompt + turn.answer], dtype=np.int32)
    targets = np.concatenate([np.repeat([False, True], [len(turn.prompt), len(turn.answer)]) for turn in turns])
    return ids, targets


def assign_rows(lengths, seq_len, packing):
    """(row, offset) of each conversation, in order: one row each, or greedily packed (a new row when the next
    conversation does not fit in the current one)."""
    if not packing:
        return [(row, 0) for row in range(len(lengths))]
    places, row, used = [], -1, seq_len
    for length in lengths:
        if used + length > seq_len:
            row, used = row + 1, 0
        places.append((row, used))
        used += length
    return places


class ConversationStore:
    """One split's conversations, streamed to scratch files as they come, then laid out as rows."""

    def __init__(self, scratch):
        self.scratch = Path(scratch)
        self.ids_file = self.scratch.with_suffix(".ids").open("wb")
        self.targets_file = self.scratch.with_suffix(".targets").open("wb")
        self.lengths, self.copies = [], []

    def add(self, ids, targets, copies=1):
        """Keep a conversation that is to appear ``copies`` times (0 is allowed: a weight below one)."""
        ids.astype(np.int32).tofile(self.ids_file)
        targets.astype(np.uint8).tofile(self.targets_file)
        self.lengths.append(len(ids))
        self.copies.append(copies)

    def write(self, out, split, seq_len, packing, seed):
        """Write ``{split}.npy`` and ``{split}.targets.npy`` into ``out``; the conversations (with their copies)
        are shuffled with ``seed`` before they are placed. Returns the split's counts."""
        self.ids_file.close()
        self.targets_file.close()
        order = np.repeat(np.arange(len(self.lengths)), self.copies)
        order = order[np.random.default_rng([seed, 2]).permutation(len(order))]
        lengths = np.asarray(self.lengths, dtype=np.int64)
        places = assign_rows(lengths[order].tolist(), seq_len, packing)
        n_rows = places[-1][0] + 1 if places else 0
        ids = open_memmap(Path(out) / f"{split}.npy", mode="w+", dtype=np.int32, shape=(n_rows, seq_len))
        targets = open_memmap(Path(out) / f"{split}.targets.npy", mode="w+", dtype=np.bool_, shape=(n_rows, seq_len))
        ids[:], targets[:] = PAD, False
        if len(order):
            self._copy_rows(order, places, ids, targets)
        counts = {"conversations": len(order), "rows": n_rows, "tokens": int(lengths[order].sum()),
                  "target_tokens": int(targets.sum()), "fill": round(float(lengths[order].sum()) / max(1, ids.size), 4)}
        ids.flush()
        targets.flush()
        del ids, targets
        self._remove_scratch()
        return counts

    def _copy_rows(self, order, places, ids, targets):
        stored_ids = np.memmap(self.scratch.with_suffix(".ids"), dtype=np.int32, mode="r")
        stored_targets = np.memmap(self.scratch.with_suffix(".targets"), dtype=np.uint8, mode="r")
        starts = np.concatenate([[0], np.cumsum(self.lengths)])
        for conversation, (row, offset) in zip(order.tolist(), places):
            start, end = starts[conversation], starts[conversation + 1]
            ids[row, offset: offset + end - start] = stored_ids[start:end]
            targets[row, offset: offset + end - start] = stored_targets[start:end]
        del stored_ids, stored_targets

    def _remove_scratch(self):
        for suffix in (".ids", ".targets"):
            self.scratch.with_suffix(suffix).unlink(missing_ok=True)


def new_counts():
    return Counter({key: 0 for key in ("turns_dropped", "conversations_shortened", "answer_truncated",
                                       "answer_too_long", "prompt_too_long", "token_crosses_turn_boundary")})
