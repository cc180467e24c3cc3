"""Packed Paillier building blocks: phe interop both ways, DJN table, CRT, homomorphic sums."""

from __future__ import annotations

import numpy as np
import pytest
from gmpy2 import mpz, powmod
from hypothesis import given, settings, strategies as st
from phe import paillier as phe

import fedvault.secagg.paillier as sp
from fedvault.secagg.paillier import (CapacityError, CiphertextError, CrtDecryptor, EncryptedVector, FastEncryptor,
                             KeyMismatchError, PackingLayout, decrypt_number, decrypt_vector, encrypt_vector,
                             seeded_random, to_phe)


@pytest.fixture(scope="module")
def keys():
    return sp.generate_keypair(512)


@pytest.fixture(scope="module")
def encryptor(keys):
    return FastEncryptor(keys[0])


@pytest.fixture(scope="module")
def decryptor(keys):
    return CrtDecryptor(keys[1])


@pytest.mark.parametrize("short", [False, True])
def test_our_raw_ciphertexts_decrypt_with_phe(keys, short):
    pk, sk = keys
    enc = FastEncryptor(pk, short_exponent=short)
    for m in [0, 1, 2 ** 100 + 7, pk.n - 1]:
        assert sk.raw_decrypt(int(enc.encrypt_int(m))) == m


@pytest.mark.parametrize("value", [0, 17, -17, 3.5, -1234.25, 2 ** 40])
def test_encoded_numbers_interoperate_both_ways(keys, encryptor, decryptor, value):
    pk, sk = keys
    ours = encryptor.encrypt_number(value)
    assert sk.decrypt(ours) == pytest.approx(value)          # ours -> phe
    assert decrypt_number(decryptor, pk.encrypt(value)) == pytest.approx(value)   # phe -> ours
    assert decrypt_number(sk, ours + pk.encrypt(1)) == pytest.approx(value + 1)   # mixed sum


def test_to_phe_wraps_raw_ciphertext(keys, encryptor):
    pk, sk = keys
    assert sk.decrypt(to_phe(pk, encryptor.encrypt_int(41)) + 1) == 42


def test_crt_decryption_matches_phe(keys, decryptor):
    pk, sk = keys
    for m in [0, 5, pk.n // 2]:
        c = pk.raw_encrypt(m)
        assert decryptor.decrypt_int(mpz(c)) == sk.raw_decrypt(c) == m


def test_fixed_base_table_equals_plain_exponentiation(keys):
    enc = FastEncryptor(keys[0])
    rng = seeded_random(b"table")
    for _ in range(5):
        a = rng(enc.exponent_bytes)
        assert enc.randomizer(a) == powmod(enc.h_s, int.from_bytes(a, "big"), enc.n2)
    assert enc.h_s == powmod(enc.h, enc.n, enc.n2) and enc.exponent_bits == 256


def test_ciphertexts_are_randomised_and_replayable(keys, encryptor):
    a = encryptor.encrypt_int(5, seeded_random(b"s"))
    assert a == encryptor.encrypt_int(5, seeded_random(b"s"))
    assert a != encryptor.encrypt_int(5, seeded_random(b"t"))


def test_plaintext_outside_range_refused(keys, encryptor):
    with pytest.raises(sp.EncodingError):
        encryptor.encrypt_int(keys[0].n)


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_encrypted_packed_sums_of_up_to_k_clients_are_exact(keys, encryptor, decryptor, data):
    k_max = data.draw(st.integers(1, 12))
    bits = data.draw(st.integers(2, 20))
    layout = PackingLayout(512, bits, k_max, 1.5)
    k = data.draw(st.integers(1, k_max))
    d = data.draw(st.integers(1, 2 * layout.slots + 3))
    elems = st.one_of(st.floats(-3, 3, allow_nan=False), st.sampled_from([-1.5, 1.5, 0.0, -3.0, 3.0]))
    xs = [np.array(data.draw(st.lists(elems, min_size=d, max_size=d))) for _ in range(k)]
    rng = seeded_random(b"prop")
    vecs = [encrypt_vector(encryptor, layout, x, rng=rng) for x in xs]
    sums, summands = decrypt_vector(decryptor, vecs)
    want = sum(layout.quantise(x).astype(object) for x in xs)
    assert summands == k and [int(s) for s in sums] == list(want)
    total = layout.dequantise_sum(sums, k)
    assert np.all(np.abs(total - sum(np.clip(x, -1.5, 1.5) for x in xs)) <= layout.error_bound(k) * (1 + 1e-9))
    extra = encrypt_vector(encryptor, layout, xs[0], rng=rng)
    with pytest.raises(CapacityError):  # K+1 summands: refused, never silently overflowed
        EncryptedVector.sum(vecs + [extra] * (k_max + 1 - k))
    with pytest.raises(CapacityError):
        decrypt_vector(decryptor, vecs + [extra] * (k_max + 1 - k))


def test_vector_serialisation_round_trip_and_range_check(keys, encryptor):
    pk, _ = keys
    layout = PackingLayout(512, 16, 4, 1.0)
    v = encrypt_vector(encryptor, layout, np.linspace(-1, 1, 100))
    data = v.to_bytes()
    assert len(data) == v.nbytes == layout.ciphertexts_for(100) * 128
    back = EncryptedVector.from_bytes(pk, layout, 100, 1, data)
    assert back.ciphertexts == v.ciphertexts
    with pytest.raises(CiphertextError):
        EncryptedVector.from_bytes(pk, layout, 100, 1, b"\xff" * len(data))
    with pytest.raises(CiphertextError):
        EncryptedVector.from_bytes(pk, layout, 100, 1, data[:-1])


def test_mixing_keys_or_layouts_refused(keys, encryptor, decryptor):
    other_pk, other_sk = sp.generate_keypair(512)
    lay = PackingLayout(512, 16, 4, 1.0)
    a = encrypt_vector(encryptor, lay, np.zeros(10))
    b = encrypt_vector(FastEncryptor(other_pk, short_exponent=True), lay, np.zeros(10))
    with pytest.raises(KeyMismatchError):
        a + b
    with pytest.raises(KeyMismatchError):
        a + encrypt_vector(encryptor, PackingLayout(512, 15, 4, 1.0), np.zeros(10))
    with pytest.raises(KeyMismatchError):
        decrypt_vector(CrtDecryptor(other_sk), a)


def test_process_pool_gives_same_ciphertexts_and_sums(keys, encryptor, decryptor, monkeypatch):
    monkeypatch.setattr(sp, "PARALLEL_MIN", 4)
    layout = PackingLayout(512, 16, 3, 1.0)
    x = np.sin(np.arange(40 * layout.slots))
    one = encrypt_vector(encryptor, layout, x, rng=seeded_random(b"p"), workers=1)
    two = encrypt_vector(encryptor, layout, x, rng=seeded_random(b"p"), workers=2)
    assert one.ciphertexts == two.ciphertexts
    s1, _ = decrypt_vector(decryptor, [one, two], workers=1)
    s2, _ = decrypt_vector(decryptor, [one, two], workers=2)
    assert (s1 == s2).all() and (s1 == 2 * layout.quantise(x)).all()


def test_keypair_from_primes_matches_phe():
    p, q = 0xF7E75FDC469067FFDC4E847C51F452DF, 0xE85CED54AF57E53E092113E62F436F4F
    pk, sk = sp.keypair_from_primes(p, q)
    assert isinstance(pk, phe.PaillierPublicKey) and pk.n == p * q
    assert sk.decrypt(pk.encrypt(99)) == 99
    with pytest.raises(sp.ParameterError):
        sp.keypair_from_primes(p, p)
