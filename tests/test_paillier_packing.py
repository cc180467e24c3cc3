"""Packing layout: exact integer slot sums, capacity refusal, clipping edges (no encryption)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedvault.secagg.errors import EncodingError, ParameterError
from fedvault.secagg.paillier_packing import CapacityError, PackingLayout


@st.composite
def layout_and_clients(draw):
    key_bits = draw(st.sampled_from([512, 1024, 2048]))
    value_bits = draw(st.integers(2, 30))
    k_max = draw(st.integers(1, 40))
    layout = PackingLayout(key_bits, value_bits, k_max, 1.0)
    k = draw(st.integers(1, k_max))
    length = draw(st.integers(1, 3 * layout.slots + 1))
    top = (1 << value_bits) - 1
    us = [np.array(draw(st.lists(st.integers(0, top), min_size=length, max_size=length)), dtype=np.uint64)
          for _ in range(k)]
    return layout, us


@settings(max_examples=60, deadline=None)
@given(layout_and_clients())
def test_sum_of_packed_plaintexts_unpacks_to_exact_integer_sums(case):
    layout, us = case
    packed = [layout.pack(u) for u in us]
    summed = [sum(col) for col in zip(*packed)]
    assert all(m.bit_length() <= layout.key_bits - 1 for m in summed)  # M < 2^(|n|-1) < n
    got = layout.unpack(summed, us[0].size)
    want = np.sum(np.stack([u.astype(object) for u in us]), axis=0)
    assert [int(g) for g in got] == [int(w) for w in want]


def test_worst_case_k_summands_fit_exactly_in_slot():
    layout = PackingLayout(2048, 16, 10, 1.0)
    assert (layout.slot_bits, layout.slots) == (20, 102)  # the example layout
    top = np.full(250, (1 << 16) - 1, dtype=np.uint64)
    summed = [sum(col) for col in zip(*[layout.pack(top)] * 10)]
    assert (layout.unpack(summed, 250) == 10 * ((1 << 16) - 1)).all()


def test_k_plus_one_summands_refused_when_decoding():
    layout = PackingLayout(1024, 8, 3, 1.0)
    with pytest.raises(CapacityError):
        layout.dequantise_sum(np.zeros(3), 4)


@pytest.mark.parametrize("clip", [0.5, 1.0, 3.0])
def test_negatives_and_clipping_edges_round_trip(clip):
    layout = PackingLayout(1024, 16, 4, clip)
    x = np.array([-clip, clip, 0.0, -clip * 7, clip * 7, -clip / 3, clip / 3, -1e-9])
    u = layout.quantise(x)
    assert u[0] == 0 and u[1] == (1 << 16) - 1 and u[3] == 0 and u[4] == (1 << 16) - 1
    back = layout.dequantise_sum(layout.unpack(layout.pack(u), x.size), 1)
    clipped = np.clip(x, -clip, clip)
    assert np.allclose(back[[0, 1, 3, 4]], clipped[[0, 1, 3, 4]], rtol=0, atol=1e-12)
    assert np.max(np.abs(back - clipped)) <= layout.error_bound(1) + 1e-15


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=50), st.integers(2, 24))
def test_quantisation_error_within_documented_bound(values, bits):
    layout = PackingLayout(1024, bits, 1, 2.0)
    x = np.array(values)
    back = layout.dequantise_sum(layout.quantise(x), 1)
    assert np.all(np.abs(back - np.clip(x, -2, 2)) <= layout.error_bound(1) * (1 + 1e-9))


@pytest.mark.parametrize("bits", [53, 55, 60])
def test_wide_values_never_exceed_their_slot(bits):
    layout = PackingLayout(1024, bits, 8, 1.0)
    u = layout.quantise(np.array([1.0, 5.0, -1.0, 0.999999999]))
    top = (1 << bits) - 1
    assert top - (1 << (bits - 50)) <= int(u.max()) <= top and int(u.min()) == 0
    summed = [sum(col) for col in zip(*[layout.pack(u)] * 8)]
    assert [int(v) for v in layout.unpack(summed, 4)] == [8 * int(v) for v in u]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_refused(bad):
    with pytest.raises(EncodingError):
        PackingLayout(1024, 16, 4, 1.0).quantise(np.array([0.0, bad]))


def test_bad_parameters_refused():
    with pytest.raises(ParameterError):
        PackingLayout(1024, 60, 100, 1.0)  # 60 + 7 bits > 63
    with pytest.raises(ParameterError):
        PackingLayout(1024, 16, 0, 1.0)
    with pytest.raises(ParameterError):
        PackingLayout(1024, 16, 4, float("nan"))


def test_plaintext_beyond_layout_refused():
    layout = PackingLayout(512, 16, 2, 1.0)
    with pytest.raises(EncodingError):
        layout.unpack([1 << (layout.slots * layout.slot_bits)], 1)
