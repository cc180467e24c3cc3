"""Fixed-point encoding and masking: exact sums, documented error bound, uniform-looking masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from fedvault.secagg.encoding import FixedPointEncoder, ring_dtype
from fedvault.secagg.errors import EncodingError, ParameterError
from fedvault.secagg.masking import mask_input, pair_seed, plain_sum
from fedvault.secagg.prg import DeterministicRandom, MaskExpander
from fedvault.secagg import keys as K


@st.composite
def cohort(draw):
    bits = draw(st.sampled_from([16, 20, 31, 32, 33, 48, 63, 64]))
    n = draw(st.integers(1, 12))
    clip = draw(st.sampled_from([0.5, 1.0, 3.0, 100.0]))
    dim = draw(st.integers(1, 40))
    try:
        enc = FixedPointEncoder(clip, bits, n)
    except ParameterError:
        return None
    vals = st.floats(-clip, clip, allow_nan=False, allow_infinity=False)
    xs = [np.array(draw(st.lists(vals, min_size=dim, max_size=dim))) for _ in range(n)]
    return enc, xs


def _exact_fixed_point_sum(enc: FixedPointEncoder, xs) -> np.ndarray:
    """Sum of round(x * 2^f) computed with Python integers (the reference)."""
    f = enc.fractional_bits
    out = []
    for k in range(len(xs[0])):
        s = sum(int(np.rint(math.ldexp(float(x[k]), f))) for x in xs)
        out.append(math.ldexp(s, -f) if abs(s) <= 2**53 else float(s) * 2.0**-f)
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(cohort(), st.binary(min_size=32, max_size=32))
def test_masked_sum_decodes_to_exact_fixed_point_sum(case, seed):
    if case is None:
        return
    enc, xs = case
    n, dim = len(xs), len(xs[0])
    rng = DeterministicRandom(seed)
    mask_keys = [K.generate_x25519(rng) for _ in range(n)]
    pubs = [K.public_bytes(k) for k in mask_keys]
    ex = MaskExpander(dim, enc.bits)
    masked = []
    for i in range(n):
        seeds = {j: pair_seed(mask_keys[i], pubs[j], b"ctx", i, j) for j in range(n) if j != i}
        self_seed = rng(32)
        y = mask_input(enc.encode(xs[i]), i, self_seed, seeds, ex)
        # remove the self mask as the server would after reconstruction
        minus = ex.expand(self_seed, b"self" + i.to_bytes(4, "big"))
        masked.append(ex.finish(y - minus))
    total = enc.decode_sum(plain_sum(masked, dim, enc.bits), n)
    assert np.array_equal(total, _exact_fixed_point_sum(enc, xs))
    exact = np.sum(np.array(xs, dtype=np.longdouble), axis=0)
    assert np.all(np.abs(total - exact) <= enc.error_bound(n) * (1 + 1e-9) + np.abs(exact) * 2.0**-52)


@settings(max_examples=80, deadline=None)
@given(st.integers(16, 64), st.integers(1, 5000), st.floats(1e-3, 1e6), st.data())
def test_auto_frac_bits_is_largest_without_overflow(bits, n, clip, data):
    try:
        enc = FixedPointEncoder(clip, bits, n)
    except ParameterError:
        assert n * math.ceil(clip) > 2 ** (bits - 1) - 1  # even f = 0 overflows
        return
    f = enc.fractional_bits
    assert n * math.ceil(math.ldexp(clip, f)) <= 2 ** (bits - 1) - 1
    assert n * math.ceil(math.ldexp(clip, f + 1)) > 2 ** (bits - 1) - 1
    # worst case: every summand at +clip or -clip decodes without wrapping
    for v in (clip, -clip):
        e = enc.encode(np.full(3, v))
        s = plain_sum([e] * n, 3, bits)
        assert np.all(np.abs(enc.decode_sum(s, n) - n * v) <= enc.error_bound(n) + abs(n * v) * 2.0**-52)


def test_dtype_and_ranges():
    assert FixedPointEncoder(1.0, 16, 4).encode(np.zeros(2)).dtype == np.uint32
    assert FixedPointEncoder(1.0, 33, 4).encode(np.zeros(2)).dtype == np.uint64
    assert ring_dtype(64) == np.uint64
    enc = FixedPointEncoder(1.0, 20, 4)
    assert int(enc.encode(np.array([-1.0]))[0]) < 2**20
    with pytest.raises(ParameterError):
        FixedPointEncoder(1.0, 65, 4)
    with pytest.raises(ParameterError):
        FixedPointEncoder(1.0, 16, 2**20)  # 2^20 summands of 1.0 overflow 16 bits
    with pytest.raises(ParameterError):
        FixedPointEncoder(1.0, 32, 10, frac_bits=40)
    with pytest.raises(ParameterError):
        enc.decode_sum(np.zeros(1, np.uint32), 5)  # more summands than the encoder allows


def test_large_clip_for_feature_statistics():
    enc = FixedPointEncoder(2.0**40, 64, 1000)
    x = np.array([2.0**40, -(2.0**40), 123456.789, 0.0])
    assert enc.fractional_bits >= 10
    s = plain_sum([enc.encode(x)] * 1000, 4, 64)
    assert np.allclose(enc.decode_sum(s, 1000), 1000 * x, rtol=0, atol=enc.error_bound(1000) + 1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.0000001, -2.0])
def test_encode_refuses_nonfinite_and_out_of_range(bad):
    enc = FixedPointEncoder(1.0, 32, 4)
    with pytest.raises(EncodingError):
        enc.encode(np.array([0.0, bad]))


def test_check_encoded():
    enc = FixedPointEncoder(1.0, 20, 4)
    with pytest.raises(EncodingError):
        enc.check_encoded(np.array([1 << 20], dtype=np.uint32))
    with pytest.raises(EncodingError):
        enc.check_encoded(np.array([1], dtype=np.uint64))
    enc.check_encoded(np.array([(1 << 20) - 1], dtype=np.uint32))


@pytest.mark.parametrize("bits", [32, 64, 24])
def test_one_masked_vector_looks_uniform_while_sum_is_exact(bits):
    """The server's view of one client (chi-square on bytes) vs what it computes (the exact sum)."""
    enc = FixedPointEncoder(1.0, bits, 3)
    dim = 8192
    x = [np.zeros(dim), np.full(dim, 0.5), np.linspace(-1, 1, dim)]  # highly structured inputs
    rng = DeterministicRandom(b"u" * 32)
    sk = [K.generate_x25519(rng) for _ in range(3)]
    ex = MaskExpander(dim, bits)
    ys, self_seeds = [], []
    for i in range(3):
        seeds = {j: pair_seed(sk[i], K.public_bytes(sk[j]), b"ctx", i, j) for j in range(3) if j != i}
        self_seeds.append(rng(32))
        ys.append(mask_input(enc.encode(x[i]), i, self_seeds[-1], seeds, ex))

    def byte_pvalue(v: np.ndarray) -> float:
        # only the low `bits` bits of each word are ring data
        raw = v.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : bits // 8].ravel()
        return chisquare(np.bincount(raw, minlength=256)).pvalue

    assert byte_pvalue(ys[0]) > 1e-4  # a zero vector, masked: uniform-looking
    assert byte_pvalue(enc.encode(x[2])) < 1e-6  # the unmasked encoding is not
    acc = plain_sum(ys, dim, bits)
    for i in range(3):
        ex.add(acc, self_seeds[i], b"self" + i.to_bytes(4, "big"), -1)
    total = enc.decode_sum(ex.finish(acc), 3)
    assert np.array_equal(total, enc.decode_sum(plain_sum([enc.encode(v) for v in x], dim, bits), 3))
    assert np.max(np.abs(total - sum(x))) <= enc.error_bound(3)
