"""Packing documents into fixed-length rows, the seeded sample order, and batches built from rows."""

import numpy as np
import pytest
import torch

from taid.data import PAD, Split, load_split, pack_documents, sample_order, to_batch, unpack

EOS = 7


def expected_stream(docs, eos):
    """Each document's tokens followed by EOS, end to end."""
    out = []
    for doc in docs:
        out += list(doc) + [eos]
    return out


def random_docs(rng, n_docs, max_len=20, vocab=50):
    return [rng.integers(0, vocab, size=int(rng.integers(0, max_len))).tolist() for _ in range(n_docs)]


# ----------------------------------------------------------------------------- packing
def test_pack_by_hand():
    packed = pack_documents([[1, 2, 3], [4], [5, 6]], eos_id=0, seq_len=4)
    # stream 1 2 3 0 4 0 5 6 0 -> 9 tokens, 3 rows of 4
    assert packed.dtype == np.int32
    assert packed.tolist() == [[1, 2, 3, 0], [4, 0, 5, 6], [0, PAD, PAD, PAD]]


@pytest.mark.parametrize("seq_len", [2, 3, 5, 16, 64, 1000])
@pytest.mark.parametrize("seed", range(4))
def test_pack_round_trip_shape_and_padding(seed, seq_len):
    rng = np.random.default_rng(seed)
    docs = random_docs(rng, int(rng.integers(1, 12)))
    stream = expected_stream(docs, EOS)
    packed = pack_documents(docs, EOS, seq_len)
    assert packed.shape == (-(-len(stream) // seq_len), seq_len)
    assert unpack(packed).tolist() == stream
    flat = packed.reshape(-1)
    assert flat[: len(stream)].tolist() == stream      # rows are consecutive cuts of the stream
    assert np.all(flat[len(stream):] == PAD)           # only the tail of the last row is padding
    assert len(flat) - len(stream) < seq_len
    assert not np.any(packed[:-1] == PAD)


def test_exact_multiple_has_no_padding():
    docs = [[1, 2, 3, 4, 5], [6, 7], []]               # 6 + 3 + 1 = 10 tokens with EOS
    packed = pack_documents(docs, eos_id=9, seq_len=5)
    assert packed.shape == (2, 5)
    assert not np.any(packed == PAD)
    assert packed.tolist() == [[1, 2, 3, 4, 5], [9, 6, 7, 9, 9]]


def test_empty_document_still_gets_eos():
    assert unpack(pack_documents([[], [3], []], eos_id=0, seq_len=8)).tolist() == [0, 3, 0, 0]


@pytest.mark.parametrize("seq_len", [1, 0, -4])
def test_seq_len_below_two_raises(seq_len):
    with pytest.raises(ValueError):
        pack_documents([[1, 2, 3]], eos_id=0, seq_len=seq_len)


# ----------------------------------------------------------------------------- sample order
@pytest.mark.parametrize("n_rows", [1, 2, 7, 50])
def test_every_row_once_per_epoch(n_rows):
    epochs = 4
    order = sample_order(n_rows, seed=11, start=0, count=epochs * n_rows)
    assert order.dtype == np.int64 and len(order) == epochs * n_rows
    for e in range(epochs):
        assert sorted(order[e * n_rows:(e + 1) * n_rows].tolist()) == list(range(n_rows))


def test_epochs_are_shuffled_differently():
    order = sample_order(50, seed=11, start=0, count=150).reshape(3, 50)
    assert not np.array_equal(order[0], order[1]) and not np.array_equal(order[1], order[2])
    assert not np.array_equal(order[0], np.arange(50))


@pytest.mark.parametrize("seed", range(5))
def test_reading_in_pieces_gives_the_same_stream(seed):
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 20))
    total = int(rng.integers(1, 6 * n_rows + 2))
    whole = sample_order(n_rows, seed=seed, start=0, count=total)
    # split [0, total) at random cut points, some of them crossing epoch boundaries
    cuts = sorted({0, total, *rng.integers(0, total + 1, size=6).tolist()})
    pieces = [sample_order(n_rows, seed=seed, start=a, count=b - a) for a, b in zip(cuts, cuts[1:])]
    assert np.concatenate(pieces).tolist() == whole.tolist()


def test_piece_spanning_several_epochs_from_an_offset():
    n_rows = 6
    whole = sample_order(n_rows, seed=3, start=0, count=40)
    assert sample_order(n_rows, seed=3, start=5, count=30).tolist() == whole[5:35].tolist()
    assert sample_order(n_rows, seed=3, start=12, count=0).tolist() == []


def test_different_seeds_give_different_orders():
    a = sample_order(100, seed=1, start=0, count=100)
    b = sample_order(100, seed=2, start=0, count=100)
    assert sorted(a.tolist()) == sorted(b.tolist())
    assert not np.array_equal(a, b)
    assert np.array_equal(a, sample_order(100, seed=1, start=0, count=100))  # and the same seed, the same


# ----------------------------------------------------------------------------- batches
def test_to_batch_by_hand():
    rows = np.array(
        [
            [5, 6, 7, 8, 9],
            [1, 2, 3, PAD, PAD],
            [4, PAD, PAD, PAD, PAD],
        ],
        dtype=np.int32,
    )
    batch = to_batch(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 0, 0], [4, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert batch["mask"].tolist() == [
        [True, True, True, True],
        [True, True, False, False],     # 3 -> PAD is not a target; PAD positions are not inputs
        [False, False, False, False],
    ]
    labels, mask = batch["labels"], batch["mask"]
    assert labels[mask].tolist() == [6, 7, 8, 9, 2, 3]
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long


def test_targets_keep_only_positions_that_predict_a_target_token_by_hand():
    # chat rows: prompt tokens (not targets), then the assistant's answer (targets)
    tokens = np.array([[10, 11, 12, 13, 14], [20, 21, 22, PAD, PAD]], dtype=np.int32)
    targets = np.array([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=bool)
    split = Split(tokens, targets, ids=np.array([7, 3]), name="valid")
    batch = to_batch(split)
    assert batch["mask"].tolist() == [[False, True, True, False], [True, True, False, False]]
    assert batch["labels"][batch["mask"]].tolist() == [12, 13, 21, 22]
    assert batch["sample_ids"].tolist() == [7, 3] and batch["split"] == "valid"
    assert split.kept_mask().sum() == 4
    picked = split[np.array([1])]  # rows keep their sample ids and targets when indexed
    assert picked.ids.tolist() == [3] and picked.targets.tolist() == [[False, True, True, False, False]]


def test_load_split_reads_targets_when_the_directory_has_them(tmp_path):
    tokens = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.save(tmp_path / "train.npy", tokens)
    np.save(tmp_path / "valid.npy", tokens)
    np.save(tmp_path / "valid.targets.npy", tokens % 2 == 0)
    train, valid = load_split(tmp_path, "train"), load_split(tmp_path, "valid")
    assert train.targets is None and train.kept_mask().all()
    assert valid.kept_mask().tolist() == [[False, True, False], [False, True, False], [False, True, False]]
    assert valid.ids.tolist() == [0, 1, 2] and valid.name == "valid"


@pytest.mark.parametrize("seed", range(3))
def test_to_batch_properties_on_packed_rows(seed):
    rng = np.random.default_rng(seed)
    packed = pack_documents(random_docs(rng, 10), EOS, seq_len=9)
    batch = to_batch(packed)
    rows = torch.as_tensor(packed.astype(np.int64))
    real = rows != PAD
    assert batch["input_ids"].shape == rows.shape
    assert batch["labels"].shape == batch["mask"].shape == (rows.shape[0], rows.shape[1] - 1)
    assert not torch.any(batch["input_ids"] == PAD) and torch.all(batch["input_ids"][~real] == 0)
    assert torch.equal(batch["input_ids"][real], rows[real])
    assert torch.equal(batch["attention_mask"].bool(), real)
    mask = batch["mask"]
    for b in range(rows.shape[0]):
        for s in range(rows.shape[1] - 1):
            keep = rows[b, s] != PAD and rows[b, s + 1] != PAD
            assert bool(mask[b, s]) == bool(keep)
            if keep:
                assert batch["labels"][b, s] == rows[b, s + 1]
