"""PRG, keys, Shamir sharing and the SecAgg+ graph."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedvault.secagg import graph as G
from fedvault.secagg import keys as K
from fedvault.secagg import shamir
from fedvault.secagg.errors import IntegrityError, ParameterError
from fedvault.secagg.prg import DeterministicRandom, MaskExpander, derive_key


# -- PRG ---------------------------------------------------------------------------------
def test_mask_expansion_is_deterministic_domain_separated_and_chunk_independent():
    seed = bytes(range(32))
    big = MaskExpander(300_000, 32)  # spans several keystream chunks
    a = big.expand(seed, b"self\x00\x00\x00\x01")
    assert np.array_equal(a, big.expand(seed, b"self\x00\x00\x00\x01"))
    assert not np.array_equal(a[:100], big.expand(seed, b"self\x00\x00\x00\x02")[:100])
    assert np.array_equal(MaskExpander(100, 32).expand(seed, b"self\x00\x00\x00\x01"), a[:100])


def test_mask_add_then_subtract_cancels_and_bits_are_masked():
    ex = MaskExpander(1000, 20)
    acc = np.arange(1000, dtype=np.uint32)
    ex.add(acc, bytes(32), b"d", 1)
    assert not np.array_equal(ex.finish(acc.copy()), np.arange(1000))
    ex.add(acc, bytes(32), b"d", -1)
    assert np.array_equal(ex.finish(acc), np.arange(1000))
    assert int(ex.expand(bytes(32), b"d").max()) < 2**20
    assert MaskExpander(5, 64).expand(bytes(32), b"d").dtype == np.uint64


def test_drbg_children_independent_and_reproducible():
    r = DeterministicRandom(b"s" * 32)
    assert r.child(b"a")(16) == DeterministicRandom(b"s" * 32).child(b"a")(16)
    assert r.child(b"a")(16) != r.child(b"b")(16)
    assert r(8) + r(8) == DeterministicRandom(b"s" * 32)(16)
    with pytest.raises(ParameterError):
        derive_key(b"short", b"x")


# -- keys --------------------------------------------------------------------------------
def test_agreement_is_symmetric_and_context_bound():
    rng = DeterministicRandom(b"k" * 32)
    a, b = K.generate_x25519(rng), K.generate_x25519(rng)
    s1 = K.agree(a, K.public_bytes(b), b"ctx")
    assert s1 == K.agree(b, K.public_bytes(a), b"ctx")
    assert s1 != K.agree(a, K.public_bytes(b), b"ctx2")
    with pytest.raises(IntegrityError):
        K.agree(a, bytes(32), b"ctx")  # low-order point: all-zero shared secret


def test_signatures_verify_and_reject_tampering():
    rng = DeterministicRandom(b"i" * 32)
    ident = K.generate_ed25519(rng)
    sig = K.sign(ident, b"message")
    K.verify(K.public_bytes(ident), sig, b"message")
    with pytest.raises(IntegrityError):
        K.verify(K.public_bytes(ident), sig, b"messagf")
    with pytest.raises(IntegrityError):
        K.verify(K.public_bytes(K.generate_ed25519(rng)), sig, b"message")
    with pytest.raises(IntegrityError):
        K.verify(K.public_bytes(ident), sig[:-1], b"message")


def test_clamped_private_key_round_trips_through_shamir():
    rng = DeterministicRandom(b"c" * 32)
    sk = K.generate_x25519(rng)
    raw = K.x25519_private_bytes(sk)
    assert int.from_bytes(raw, "big") < shamir.PRIME
    xs = [3, 7, 11, 12]
    got = shamir.combine({x: s for x, s in shamir.split(raw, 3, xs, rng).items() if x != 7}, 3)
    assert K.public_bytes(K.x25519_from_private_bytes(got)) == K.public_bytes(sk)


# -- Shamir ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 8), st.integers(0, 6), st.data())
def test_any_t_shares_recover_and_fewer_do_not(secret, t, extra, data):
    secret = bytes([secret[0] & 0x7F]) + secret[1:]
    n = t + extra
    xs = data.draw(st.lists(st.integers(1, 2**32), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, t, xs, DeterministicRandom(b"r" * 32))
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert shamir.combine({x: shares[x] for x in subset}, t) == secret
    if t > 1:
        # t-1 shares interpolate a lower-degree polynomial: not the secret (with overwhelming probability)
        assert shamir.combine({x: shares[x] for x in subset[: t - 1]}, t - 1) != secret
        with pytest.raises(ParameterError):
            shamir.combine({x: shares[x] for x in subset[: t - 1]}, t)


def test_shamir_rejects_bad_parameters():
    rng = DeterministicRandom(b"r" * 32)
    with pytest.raises(ParameterError):
        shamir.split(b"\xff" * 32, 2, [1, 2, 3], rng)  # >= p
    with pytest.raises(ParameterError):
        shamir.split(bytes(32), 4, [1, 2, 3], rng)
    with pytest.raises(ParameterError):
        shamir.split(bytes(32), 2, [1, 1, 3], rng)
    with pytest.raises(ParameterError):
        shamir.split(bytes(32), 2, [0, 1, 3], rng)


def test_lagrange_coefficients_are_cached():
    shamir.lagrange_at_zero.cache_clear()
    shamir.lagrange_at_zero((1, 2, 3))
    shamir.lagrange_at_zero((1, 2, 3))
    assert shamir.lagrange_at_zero.cache_info().hits == 1


# -- graph -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 10, 50, 200, 1000])
def test_sparse_graph_is_public_symmetric_and_log_degree(n):
    ids = list(range(5, 5 + n))
    g = G.build_graph("sparse", b"session", 7, ids)
    assert g == G.build_graph("sparse", b"session", 7, list(reversed(ids)))  # anyone recomputes it
    for i, nb in g.neighbours.items():
        assert i not in nb
        assert all(i in g.neighbours[j] for j in nb)
    r = G.sparse_cycles(n)
    if 2 * r >= n - 1:
        assert g.min_degree() == n - 1
    else:
        assert 2 <= g.min_degree() and g.max_degree() <= 2 * r
        if n >= 50:  # few repeated edges once n >> log n
            assert np.mean([len(v) for v in g.neighbours.values()]) > 1.7 * r
        assert g != G.build_graph("sparse", b"session", 8, ids)  # fresh graph per round
        assert g != G.build_graph("sparse", b"other", 7, ids)


def test_complete_graph_and_bad_ids():
    g = G.build_graph("complete", b"s", 0, [1, 2, 3])
    assert g.neighbours[2] == {1, 3}
    with pytest.raises(ParameterError):
        G.build_graph("complete", b"s", 0, [1, 1, 3])
    with pytest.raises(ParameterError):
        G.build_graph("star", b"s", 0, [1, 2, 3])
    with pytest.raises(ParameterError):
        G.check_ids([-1, 2])


@pytest.mark.parametrize("bits,dim", [(32, 100_003), (64, 70_001), (20, 4097 * 64 + 3)])
def test_threaded_expansion_equals_single_threaded(bits, dim):
    terms = [(bytes([k]) * 32, b"d%d" % k, 1 if k % 2 else -1) for k in range(5)]
    a = np.arange(dim, dtype=MaskExpander(1, bits).dtype)
    b = a.copy()
    MaskExpander(dim, bits, threads=1).add_many(a, terms)
    MaskExpander(dim, bits, threads=3).add_many(b, terms)
    assert np.array_equal(a, b)
