"""Every fact the GGUF export relies on, in one place: what it can convert, what it writes and how llama.cpp
reads it back. Names and numbers come from the ``gguf`` package (its enums are pinned to llama.cpp's headers);
only the mappings from Hugging Face's side are written out here."""
import gguf
from gguf import GGMLQuantizationType as GGML
from gguf import LlamaFileType as FileType

# Hugging Face architecture (config.json "architectures") → llama.cpp architecture.
ARCHITECTURES = {
    "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2,
    "LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA,
}

# llama.cpp runs LLAMA's RoPE on interleaved pairs where transformers rotates halves, so q and k rows are
# reordered on the way in (convert_hf_to_gguf's ``permute``); Qwen2 uses the NeoX (halves) layout as is.
PERMUTED_QK_ARCHS = {gguf.MODEL_ARCH.LLAMA}

# The types a conversion writes directly: matrices in that type, 1-D tensors (norms, biases) always F32.
OUT_TYPES = {
    "f16": (GGML.F16, FileType.MOSTLY_F16),
    "bf16": (GGML.BF16, FileType.MOSTLY_BF16),
    "f32": (GGML.F32, FileType.ALL_F32),
}

# The types llama.cpp's quantizer makes from the F16 file (its llama_ftype numbers are gguf's LlamaFileType).
QUANTS = {
    "q8_0": FileType.MOSTLY_Q8_0,
    "q5_k_m": FileType.MOSTLY_Q5_K_M,
    "q4_k_m": FileType.MOSTLY_Q4_K_M,
}

# Byte-level BPE tokenizers: the pre-tokenizer's split regex (tokenizer.json) → llama.cpp's pre-tokenizer name.
BPE_PRE_TOKENIZERS = {
    # Qwen2 / Qwen2.5: digits one by one
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "qwen2",
    # Llama 3: digits in groups of up to three
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "llama-bpe",
}

# SentencePiece-style tokenizers: transformers' Metaspace prepend scheme → llama.cpp's add_space_prefix.
# llama.cpp prefixes a space to every stretch of text that starts the input or follows a special token, or
# to none. transformers' "first" (LlamaTokenizer's default) prefixes the start of the input only, which
# llama.cpp cannot express; it is written as no prefix, so that chat prompts (which open with a special
# token) tokenize exactly and a plain prompt lacks its leading "▁" (the verifier reports it). The exact
# match is "never": LlamaTokenizer(add_prefix_space=False).
PREPEND_SCHEMES = {"always": True, "never": False, "first": False}
INEXACT_PREPEND_SCHEMES = {"first"}

SENTENCEPIECE_BPE = 2   # TrainerSpec.ModelType.BPE

# SentencePiece's piece types (sentencepiece_model.proto) → GGUF token types.
SENTENCEPIECE_TYPES = {
    1: gguf.TokenType.NORMAL,
    2: gguf.TokenType.UNKNOWN,
    3: gguf.TokenType.CONTROL,
    4: gguf.TokenType.USER_DEFINED,
    5: gguf.TokenType.UNUSED,
    6: gguf.TokenType.BYTE,
}

# Score of a piece that is not in the SentencePiece model (an added token, padding of the embedding rows).
ADDED_TOKEN_SCORE = -1000.0

# Keys every verified file must carry (the {arch} ones are formatted with the file's architecture).
REQUIRED_KEYS = (
    gguf.Keys.General.ARCHITECTURE,
    gguf.Keys.General.FILE_TYPE,
    gguf.Keys.LLM.CONTEXT_LENGTH,
    gguf.Keys.LLM.EMBEDDING_LENGTH,
    gguf.Keys.LLM.BLOCK_COUNT,
    gguf.Keys.LLM.FEED_FORWARD_LENGTH,
    gguf.Keys.Attention.HEAD_COUNT,
    gguf.Keys.Attention.HEAD_COUNT_KV,
    gguf.Keys.Attention.LAYERNORM_RMS_EPS,
    gguf.Keys.Rope.FREQ_BASE,
    gguf.Keys.Tokenizer.MODEL,
    gguf.Keys.Tokenizer.LIST,
    gguf.Keys.Tokenizer.TOKEN_TYPE,
)


def supported(table):
    return ", ".join(sorted(table))
