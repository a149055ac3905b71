"""MLC's 4-bit group quantization (q4f16_1, q4f32_1) and the float encodings of the tensor cache, in numpy.

A weight [N, K] is cut into groups of 32 along K (the input dimension). Each group stores one scale
s = max|w| / 7, rounded to the dtype it is stored in, and codes q = clip(round(w / s + 7), 0, 14) packed
eight to a uint32 with element r in bits 4r..4r+3: q_weight [N, ceil(K/32) * 4] uint32, q_scale
[N, ceil(K/32)]. Dequantized: ŵ = (q - 7) · s. When K is not a multiple of 32 the last group is padded;
its padding codes are 0, as mlc_llm's packing writes them, and never read back.

Unlike mlc_llm, which divides in the model dtype (float16 for q4f16_1), the codes are computed exactly
(float64) against the scale as stored, so the error bound below holds with no slack. Rounding is half to
even, as mlc_llm's quantizer on CPU (LLVM nearbyint); its CUDA build rounds halves away from zero.

Error bound, per element, with s the stored scale of its group:
    |w - ŵ| ≤ max(s / 2, |w| - 7 s)
The second term is positive only where |w| > 7.5 s, i.e. a code would leave [-7, 7] and is clipped. With
s = round(max|w| / 7) that needs the rounding of s to lose more than 1/15 of its value, which only a
float16 subnormal scale can (group max|w| below 7 · 2^-14 ≈ 4.3e-4), or a scale that underflows to 0
(max|w| < 2^-25 · 7: every code 7, ŵ = 0). Clipping is symmetric: there is no -8 code in this scheme.
"""
import numpy as np

BLOCK_ELEMENTS = 1 << 22   # weights quantized per step (float64 temporaries of 32 MiB each)
_BF16_LIMIT = np.float32(np.frombuffer(np.uint32(0x7F7F0000).tobytes(), np.float32)[0])  # largest bf16


def group_count(k, group_size=32):
    return -(-k // group_size)


def pad_groups(weight, group_size=32):
    """[N, K] → [N, G, group_size], zero-padded along K."""
    n, k = weight.shape
    padded = np.zeros((n, group_count(k, group_size) * group_size), dtype=weight.dtype)
    padded[:, :k] = weight
    return padded.reshape(n, -1, group_size)


def quantize(weight, spec, f32_as_bf16=False):
    """(q_weight uint32 [N, G*4], q_scale [N, G]) of a float weight [N, K] under ``spec`` (a GroupQuant).
    ``f32_as_bf16``: float32 scales will be stored as bfloat16 (the "f32-to-bf16" record format), so the
    codes are computed against the bf16-rounded scales; float16 scales are stored as they are."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"quantize: expected a 2-D weight, got shape {weight.shape}")
    n, k = weight.shape
    groups = group_count(k, spec.group_size)
    q_weight = np.empty((n, groups * spec.words_per_group), dtype=np.uint32)
    q_scale = np.empty((n, groups), dtype=spec.model_dtype)
    block = max(1, BLOCK_ELEMENTS // max(k, 1))   # rows at a time: bounds the float64 temporaries
    for start in range(0, n, block):
        rows = slice(start, start + block)
        q_weight[rows], q_scale[rows] = _quantize_rows(weight[rows], spec, f32_as_bf16)
    return q_weight, q_scale


def _quantize_rows(weight, spec, f32_as_bf16):
    if not np.all(np.isfinite(weight)):
        raise ValueError("quantize: the weight holds NaN or infinite values")
    groups = pad_groups(weight.astype(np.float64), spec.group_size)
    with np.errstate(over="ignore"):   # an overflow is refused just below
        scale = (np.abs(groups).max(axis=-1) / spec.max_int).astype(spec.model_dtype)
    if not np.all(np.isfinite(scale)):
        raise ValueError(f"quantize: a group's max|w| overflows {spec.model_dtype} scales")
    if f32_as_bf16 and scale.dtype == np.float32:
        scale = bf16_round(scale)
    stored = scale.astype(np.float64)[..., None]
    ratio = np.divide(groups, stored, out=np.zeros_like(groups), where=stored > 0)
    codes = np.clip(np.rint(ratio + spec.max_int), 0, 2 * spec.max_int).astype(np.uint32)
    codes = codes.reshape(weight.shape[0], -1)
    codes[:, weight.shape[1]:] = 0
    return pack_codes(codes, spec.elems_per_word, spec.bits), scale


def pack_codes(codes, elems_per_word=8, bits=4):
    """uint32 codes [N, W*8] → words [N, W], code r of each word in bits 4r..4r+3."""
    n = codes.shape[0]
    shifts = (np.arange(elems_per_word, dtype=np.uint32) * bits)
    words = codes.reshape(n, -1, elems_per_word).astype(np.uint32) << shifts
    return np.bitwise_or.reduce(words, axis=-1).astype(np.uint32)


def unpack_codes(words, elems_per_word=8, bits=4):
    """words [N, W] → uint32 codes [N, W*8]."""
    shifts = (np.arange(elems_per_word, dtype=np.uint32) * bits)
    codes = (words[..., None].astype(np.uint32) >> shifts) & np.uint32((1 << bits) - 1)
    return codes.reshape(words.shape[0], -1)


def dequantize(q_weight, q_scale, k, spec):
    """ŵ [N, K] in float64 (exact: a small integer times the stored scale)."""
    codes = unpack_codes(q_weight, spec.elems_per_word, spec.bits).astype(np.float64) - spec.max_int
    scales = np.repeat(np.asarray(q_scale, dtype=np.float64), spec.group_size, axis=1)
    return (codes * scales)[:, :k]


def error_bound(weight, q_scale, spec):
    """The per-element bound max(s/2, |w| - 7 s) of the module docstring, in float64."""
    k = weight.shape[1]
    scales = np.repeat(np.asarray(q_scale, dtype=np.float64), spec.group_size, axis=1)[:, :k]
    return np.maximum(scales / 2, np.abs(weight.astype(np.float64)) - spec.max_int * scales)


# -- bfloat16 as the tensor cache stores float32 tensors in "f32-to-bf16" format

def bf16_encode(values):
    """float32 → uint16 bfloat16 bits: round to nearest even inside bf16's range, truncate outside it
    (so out-of-range values, e.g. attention mask constants, clip to the largest bf16)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32)
    in_range = (values < _BF16_LIMIT) & (values > -_BF16_LIMIT)
    bias = np.where(in_range, ((bits >> 16) & 1) + np.uint32(0x7FFF), np.uint32(0)).astype(np.uint32)
    return ((bits + bias) >> 16).astype(np.uint16)


def bf16_decode(bits):
    """uint16 bfloat16 bits → float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def bf16_round(values):
    """float32 values rounded to the bfloat16 grid, as they read back from an "f32-to-bf16" record."""
    return bf16_decode(bf16_encode(values)).reshape(np.shape(values))
