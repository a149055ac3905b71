import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from taid.data import PAD


def tiny_qwen2(vocab_size=64, hidden_size=16, layers=1, seed=0, tie=True):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(config)


def random_rows(n_rows, seq_len, vocab_size, seed=0, ragged=True):
    """Packed-format rows; with ``ragged`` some rows end in PAD so token counts differ between rows."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, vocab_size, size=(n_rows, seq_len)).astype(np.int32)
    if ragged:
        for i in range(0, n_rows, 3):
            rows[i, seq_len - 1 - (i % (seq_len - 2)):] = PAD
    return rows


@pytest.fixture
def rows():
    return random_rows(24, 12, 64)
