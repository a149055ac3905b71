"""Fitting conversations into seq_len, and laying them out as rows: counts and placements worked out by hand."""
import numpy as np
import pytest

from chat.pack import ConversationStore, assign_rows, fit_turns, new_counts
from chat.template import Turn
from taid.data import PAD

# two turns: a 3-token prompt and a 2-token answer, then a 2-token prompt and a 3-token answer (10 tokens)
TURNS = [Turn([1, 2, 3], [4, 5]), Turn([6, 7], [8, 9, 10])]


def fit(turns, seq_len, truncation="turns"):
    counts = new_counts()
    fitted = fit_turns(turns, seq_len, truncation, counts)
    return fitted, {key: value for key, value in counts.items() if value}


def test_a_conversation_that_fits_is_kept_whole_with_answer_targets():
    (ids, targets), counts = fit(TURNS, 10)
    assert ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert targets.tolist() == [False, False, False, True, True, False, False, True, True, True]
    assert counts == {}


@pytest.mark.parametrize("truncation", ["turns", "drop"])
def test_a_trailing_turn_that_does_not_fit_is_dropped_whole(truncation):
    (ids, targets), counts = fit(TURNS, 9, truncation)
    assert ids.tolist() == [1, 2, 3, 4, 5] and targets.tolist() == [False, False, False, True, True]
    assert counts == {"turns_dropped": 1, "conversations_shortened": 1}


def test_a_first_answer_that_does_not_fit_is_cut_with_truncation_turns():
    (ids, targets), counts = fit(TURNS, 4, "turns")
    assert ids.tolist() == [1, 2, 3, 4] and targets.tolist() == [False, False, False, True]
    assert counts == {"answer_truncated": 1}


def test_a_first_answer_that_does_not_fit_drops_the_conversation_with_truncation_drop():
    assert fit(TURNS, 4, "drop") == (None, {"answer_too_long": 1})


@pytest.mark.parametrize("truncation", ["turns", "drop"])
@pytest.mark.parametrize("seq_len", [2, 3])
def test_a_prompt_that_leaves_no_room_for_an_answer_drops_the_conversation(truncation, seq_len):
    assert fit(TURNS, seq_len, truncation) == (None, {"prompt_too_long": 1})


def test_an_unknown_truncation_mode_is_refused():
    with pytest.raises(ValueError, match="chat.truncation must be one of"):
        fit(TURNS, 10, "cut")


def test_rows_are_assigned_one_per_conversation_or_packed_greedily_in_order():
    lengths = [5, 4, 3, 6, 2, 10]
    assert assign_rows(lengths, 10, packing=False) == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]
    # 5+4 fit, 3 does not → new row; 3+6 fit, 2 does not → new row; 2+10 does not → new row
    assert assign_rows(lengths, 10, packing=True) == [(0, 0), (0, 5), (1, 0), (1, 3), (2, 0), (3, 0)]


def conversations(n, seed=0, max_len=12):
    """Conversations whose every token says which conversation and position it is: 1000 * k + i."""
    rng = np.random.default_rng(seed)
    made = []
    for k in range(n):
        length = int(rng.integers(2, max_len + 1))
        ids = np.arange(length, dtype=np.int32) + 1000 * (k + 1)
        targets = rng.random(length) < 0.5
        made.append((ids, targets))
    return made


def stored(tmp_path, made, copies, seq_len, packing):
    store = ConversationStore(tmp_path / ".train")
    for (ids, targets), n in zip(made, copies):
        store.add(ids, targets, copies=n)
    counts = store.write(tmp_path, "train", seq_len, packing, seed=3)
    return np.load(tmp_path / "train.npy"), np.load(tmp_path / "train.targets.npy"), counts


@pytest.mark.parametrize("packing", [False, True])
def test_every_conversation_lands_whole_in_one_row_with_its_targets(tmp_path, packing):
    made = conversations(40)
    copies = [1, 2, 0, 1] * 10
    ids, targets, counts = stored(tmp_path, made, copies, 12, packing)
    assert ids.dtype == np.int32 and targets.dtype == np.bool_ and ids.shape == targets.shape
    assert ids.shape[1] == 12 and not targets[ids == PAD].any()
    found = []
    for row_ids, row_targets in zip(ids, targets):
        row = row_ids[row_ids != PAD]
        assert (row_ids[len(row):] == PAD).all(), "padding only at the tail"
        starts = np.flatnonzero(row % 1000 == 0)
        assert starts[0] == 0
        for start, end in zip(starts, list(starts[1:]) + [len(row)]):
            k = row[start] // 1000 - 1
            assert row[start:end].tolist() == made[k][0].tolist(), "a conversation is whole and in one row"
            assert row_targets[start:end].tolist() == made[k][1].tolist()
            found.append(int(k))
    expected = sorted(k for k, n in enumerate(copies) for _ in range(n))
    assert sorted(found) == expected
    assert counts["conversations"] == len(expected) == 40
    assert counts["tokens"] == sum(len(made[k][0]) for k in expected) == int((ids != PAD).sum())
    assert counts["target_tokens"] == sum(int(made[k][1].sum()) for k in expected) == int(targets.sum())
    assert counts["rows"] == len(ids)
    if not packing:
        assert len(ids) == len(expected)


def test_packing_fills_rows_better_than_one_conversation_per_row(tmp_path):
    made = conversations(40)
    (tmp_path / "single").mkdir()
    (tmp_path / "packed").mkdir()
    single = stored(tmp_path / "single", made, [1] * 40, 24, False)[2]
    packed = stored(tmp_path / "packed", made, [1] * 40, 24, True)[2]
    assert single["rows"] == 40 and packed["rows"] < 40 and packed["fill"] > single["fill"]
    assert packed["tokens"] == single["tokens"] and packed["target_tokens"] == single["target_tokens"]


def test_an_empty_split_writes_empty_arrays(tmp_path):
    ids, targets, counts = stored(tmp_path, [], [], 8, True)
    assert ids.shape == targets.shape == (0, 8)
    assert counts == {"conversations": 0, "rows": 0, "tokens": 0, "target_tokens": 0, "fill": 0.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npy", "train.targets.npy"]  # scratch removed
