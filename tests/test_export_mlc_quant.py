"""MLC group quantization against words written by hand from the rule, its error bound (including the
clipping a float16-subnormal scale causes), and the bfloat16 encoding against tvm's."""
import numpy as np
import pytest

from export.mlc_format import QUANTIZATIONS
from export.mlc_quant import (bf16_decode, bf16_encode, dequantize, error_bound, pack_codes, quantize,
                              unpack_codes)

Q4F16, Q4F32 = QUANTIZATIONS["q4f16_1"], QUANTIZATIONS["q4f32_1"]

# one group of 32 with max|w| = 7, so scale = 1 and code = round(w + 7), halves to even
ROW = [7, -7, 0, 1, 2, 3.4, -3.6, 0.5,          # codes 14 0 7 8 9 10 3 8 (7.5 → 8)
       1.5, -0.5, 2.5, -2.5, 6.49, -6.51, 4, -4,  # codes 8 6 10 4 13 0 11 3 (8.5 → 8, 6.5 → 6, 9.5 → 10, 4.5 → 4)
       0, 0, 0, 0, 0, 0, 0, 0,                    # code 7 everywhere
       0.25, 0.75, -0.75, 5.5, -5.5, 6.6, -6.6, 3]  # codes 7 8 6 12 2 14 0 10 (12.5 → 12, 1.5 → 2)
# element r in bits 4r..4r+3: the hex digits are the codes read from the last element to the first
ROW_WORDS = [0x83A9870E, 0x3B0D4A68, 0x77777777, 0xA0E2C687]


@pytest.mark.parametrize("spec", [Q4F16, Q4F32], ids=lambda s: s.name)
def test_hand_made_rows_give_the_words_written_by_hand(spec):
    weight = np.array([ROW, np.array(ROW) / 8], dtype=np.float32)   # second row: scale 1/8, same codes
    q_weight, q_scale = quantize(weight, spec)
    assert q_weight.dtype == np.uint32 and q_weight.shape == (2, 4)
    assert q_weight.tolist() == [ROW_WORDS, ROW_WORDS]
    assert q_scale.dtype == np.dtype(spec.model_dtype) and q_scale.tolist() == [[1.0], [0.125]]


def test_a_partial_last_group_is_padded_with_zero_codes():
    tail = [3.5, -3.5, 0, 0.5, 1, -1, 0.25, 2]       # max 3.5 → scale 0.5; codes 14 0 7 8 9 5 8 11 (7.5 → 8)
    q_weight, q_scale = quantize(np.array([ROW + tail], dtype=np.float32), Q4F16)
    assert q_weight.shape == (1, 8) and q_scale.tolist() == [[1.0, 0.5]]
    assert q_weight[0].tolist() == ROW_WORDS + [0xB859870E, 0, 0, 0]
    restored = dequantize(q_weight, q_scale, 40, Q4F16)
    assert restored.shape == (1, 40)
    assert restored[0, 32:].tolist() == [3.5, -3.5, 0, 0.5, 1, -1, 0.5, 2]   # 0.25 → code 8 → 0.5


def test_pack_and_unpack_are_inverse():
    codes = np.random.default_rng(0).integers(0, 16, size=(3, 24)).astype(np.uint32)
    assert np.array_equal(unpack_codes(pack_codes(codes)), codes)
    assert pack_codes(np.arange(8, dtype=np.uint32)[None]).tolist() == [[0x76543210]]


@pytest.mark.parametrize("spec,f32_as_bf16", [(Q4F16, False), (Q4F32, False), (Q4F32, True)],
                         ids=["q4f16_1", "q4f32_1", "q4f32_1-bf16"])
def test_round_trip_is_within_half_a_scale_and_requantizes_to_itself(spec, f32_as_bf16):
    weight = (np.random.default_rng(1).standard_normal((16, 96)) * 0.05).astype(np.float32)
    q_weight, q_scale = quantize(weight, spec, f32_as_bf16=f32_as_bf16)
    if f32_as_bf16:
        assert np.array_equal(q_scale, bf16_decode(bf16_encode(q_scale)))   # scales sit on the bf16 grid
    restored = dequantize(q_weight, q_scale, 96, spec)
    scales = np.repeat(q_scale.astype(np.float64), 32, axis=1)
    assert np.all(np.abs(weight - restored) <= scales / 2)
    assert np.all(error_bound(weight, q_scale, spec) == scales / 2)         # no element clipped
    codes = unpack_codes(q_weight).astype(np.float64)
    assert np.array_equal(restored, (codes - 7) * scales)
    # ŵ lies on the grid and keeps its group's max at ±7 s: quantizing it again changes nothing
    again_q, again_s = quantize(restored.astype(np.float32), spec, f32_as_bf16=f32_as_bf16)
    assert np.array_equal(again_q, q_weight) and np.array_equal(again_s, q_scale)


def test_a_subnormal_float16_scale_clips_and_the_bound_says_by_how_much():
    tiny = 2.0 ** -24                                   # the smallest float16 subnormal
    group = np.zeros(32, dtype=np.float32)
    group[0], group[1] = 9.8 * tiny, -0.4 * tiny        # max/7 = 1.4·2^-24, stored as 2^-24
    q_weight, q_scale = quantize(group[None], Q4F16)
    assert q_scale.tolist() == [[tiny]]
    restored = dequantize(q_weight, q_scale, 32, Q4F16)
    assert restored[0, 0] == 7 * tiny                   # 9.8 + 7 rounds to 17, clipped to 14
    error = abs(float(group[0]) - restored[0, 0])
    assert error == pytest.approx(2.8 * tiny) and error > tiny / 2
    bound = error_bound(group[None], q_scale, Q4F16)
    assert bound[0, 0] == pytest.approx(2.8 * tiny) and bound[0, 1] == tiny / 2
    assert np.all(np.abs(group - restored) <= bound)


def test_a_zero_group_has_scale_zero_and_code_seven():
    q_weight, q_scale = quantize(np.zeros((1, 32), dtype=np.float32), Q4F32)
    assert q_scale.tolist() == [[0.0]] and q_weight.tolist() == [[0x77777777] * 4]


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.full((1, 32), np.nan, dtype=np.float32), Q4F16)
    with pytest.raises(ValueError, match="overflows float16"):
        quantize(np.full((1, 32), 1e6, dtype=np.float32), Q4F16)
    with pytest.raises(ValueError, match="2-D"):
        quantize(np.zeros(32, dtype=np.float32), Q4F16)


def test_bf16_encoding_by_hand_and_against_tvm():
    values = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 3.4e38, -3.4e38, 0.0], dtype=np.float32)
    # 1 + 2^-8 is a tie that rounds to even (down); 1 + 3·2^-8 a tie that rounds up; beyond bf16's
    # largest value the bits are truncated (clipping to it) instead of rounding to infinity
    assert bf16_encode(values).tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F7F, 0xFF7F, 0x0000]
    from tvm.contrib import tvmjs
    sample = (np.random.default_rng(2).standard_normal(1000) * 10).astype(np.float32)
    assert np.array_equal(bf16_encode(sample), tvmjs._convert_f32_to_bf16(sample))
    assert np.array_equal(bf16_decode(bf16_encode(sample)), tvmjs._convert_bf16_to_f32(bf16_encode(sample)))
