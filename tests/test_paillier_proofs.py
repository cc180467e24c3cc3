"""secagg/paillier_proofs.py: the batched proof of plaintext knowledge (completeness, binding, refusals)."""

from __future__ import annotations

import functools

import pytest
from gmpy2 import mpz
from hypothesis import given, settings, strategies as st

from fedvault.secagg.paillier import FastEncryptor, generate_keypair, seeded_random
from fedvault.secagg.paillier_proofs import (PlaintextProof, ProofError, djn_hs, multi_exp, prove_plaintexts,
                                             verify_plaintexts)


@functools.lru_cache(maxsize=None)
def _key():
    pk, _ = generate_keypair(512)
    return pk, FastEncryptor(pk)


def _proven(plaintexts, seed=b"s", ctx=b"ctx"):
    pk, enc = _key()
    cts, exps = enc.encrypt_ints_with_exponents(plaintexts, seeded_random(seed))
    proof = prove_plaintexts(enc.n, enc.h_s, 8 * enc.exponent_bytes, cts, plaintexts, exps, context=ctx,
                             rng=seeded_random(seed + b"p"))
    return pk, enc, cts, proof


def _verify(enc, cts, proof, ctx=b"ctx"):
    verify_plaintexts(enc.n, djn_hs(enc.n), 8 * enc.exponent_bytes, cts, proof, context=ctx)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2**500), min_size=1, max_size=12), st.binary(min_size=1, max_size=8))
def test_honest_proofs_verify(ms, seed):
    n = _key()[0].n
    pk, enc, cts, proof = _proven([m % n for m in ms], seed)
    _verify(enc, cts, proof)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2**500), min_size=2, max_size=6), st.integers(0, 10**6), st.integers(1, 2**64))
def test_any_change_to_statement_or_proof_is_refused(ms, where, delta):
    n = _key()[0].n
    pk, enc, cts, proof = _proven([m % n for m in ms])
    n2 = pk.nsquare
    j = where % len(cts)
    changed = list(cts)
    changed[j] = changed[j] * enc.randomizer(delta.to_bytes(enc.exponent_bytes, "big")) % n2  # re-randomised
    for bad_cts, bad_proof in [(changed, proof), (cts[:j] + cts[j + 1:] or cts[:1] * 2, proof),
                               (cts, PlaintextProof(proof.commitment, (proof.z_m + delta) % pk.n, proof.z_a)),
                               (cts, PlaintextProof(proof.commitment, proof.z_m, proof.z_a + delta)),
                               (cts, PlaintextProof(proof.commitment * 4 % n2, proof.z_m, proof.z_a))]:
        with pytest.raises(ProofError):
            _verify(enc, bad_cts, bad_proof)
    with pytest.raises(ProofError):
        _verify(enc, cts, proof, ctx=b"another sender")


def test_non_units_and_out_of_range_values_are_refused():
    pk, enc, cts, proof = _proven([1, 2, 3])
    n = pk.n
    for bad in (0, n, 3 * n, pk.nsquare, pk.nsquare + 1):
        with pytest.raises(ProofError, match="unit"):
            _verify(enc, [bad] + cts[1:], proof)
    with pytest.raises(ProofError):
        _verify(enc, cts, PlaintextProof(proof.commitment, n, proof.z_a))
    with pytest.raises(ProofError):
        _verify(enc, cts, PlaintextProof(proof.commitment, proof.z_m, 1 << 4000))
    with pytest.raises(ProofError):
        _verify(enc, cts, PlaintextProof(n, proof.z_m, proof.z_a))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2**100), st.integers(0, 2**128 - 1)), min_size=1, max_size=40))
def test_multi_exp_matches_naive(pairs):
    mod = mpz(2**127 - 1)
    want = 1
    for b, e in pairs:
        want = want * pow(b, e, int(mod)) % int(mod)
    assert multi_exp([b for b, _ in pairs], [e for _, e in pairs], mod, 128) == want
