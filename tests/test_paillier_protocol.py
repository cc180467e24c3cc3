"""Packed Paillier protocol: honest rounds in both key modes through the driver, replay, threshold crypto."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fedvault.protocols.errors import AbortError, ProtocolError, StageError, ThresholdError
from fedvault.protocols.paillier import (ClientStage, DecryptorStage, PaillierParams, ServerStage, setup_keys,
                                         simulate_round)
from fedvault.protocols.paillier.messages import AggregatePlaintext
from fedvault.protocols.session import ClientRole, ServerRole
from fedvault.secagg.errors import ParameterError
from fedvault.secagg.paillier import FastEncryptor, seeded_random
from fedvault.secagg.paillier_threshold import ShareVerificationError, combine, deal, decryption_share, verify_share

from _paillier_helpers import CLIENTS, SID, Round, expected_total, inputs, params, setup


@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_round_decrypts_exact_sum_of_contributors(mode):
    p = params(mode, rnd=100)
    xs = inputs(who=(11, 13, 14, 15))  # 12 did not upload
    res = simulate_round(p, setup(mode), xs, seed=b"round-100")
    assert res.contributors == (11, 13, 14, 15)
    np.testing.assert_array_equal(res.total, expected_total(p, xs))
    ref = sum(np.clip(x, -2, 2) for x in xs.values())
    assert np.max(np.abs(res.total - ref)) <= p.layout.error_bound(4) * (1 + 1e-9)
    n_ct = p.layout.ciphertexts_for(130)
    # header 32 + fingerprint 32 + length 4 + width 2 + count 4 + ciphertexts + proof (3 elements) + signature 64
    upload = 32 + 32 + 4 + 2 + 4 + (n_ct + 3) * 128 + 64
    if mode == "holder":
        assert res.upload_bytes == {c: upload for c in xs}
    else:  # a share-holder also sends its decryption share
        assert all(res.upload_bytes[c] > upload for c in xs)
    assert set(res.seconds) >= {"encrypt", "sum", "decrypt"}
    assert res.guarantee["protocol"] == "paillier" and res.guarantee["min_sum"] == 3
    assert "proof of plaintext knowledge" in res.guarantee["line"]


@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_decryptor_dropout(mode):
    p = params(mode, rnd=102)
    xs = inputs(who=(11, 12, 13))
    if mode == "threshold":  # two share-holders vanish: t = 3 of 5 still answer
        res = simulate_round(p, setup(mode), xs, seed=b"d", drop={"decrypt": [14, 15]})
        np.testing.assert_array_equal(res.total, expected_total(p, xs))
        assert res.dropped == {"decrypt": [14, 15]}
        with pytest.raises(AbortError, match="valid decryption shares"):
            simulate_round(params(mode, rnd=103), setup(mode), xs, seed=b"d", drop={"decrypt": [13, 14, 15]})
    else:
        with pytest.raises(AbortError, match="key holder did not answer"):
            simulate_round(p, setup(mode), xs, seed=b"d", drop={"decrypt": [0]})


def test_roles_implement_the_session_interfaces():
    r = Round("threshold", 104, who=(11, 12, 13))
    assert isinstance(r.server(), ServerRole)
    assert isinstance(r.client(11), ClientRole) and isinstance(r.party(12), ClientRole)
    assert r.server().stage is ServerStage.UPLOAD and r.client(11).stage is ClientStage.READY
    assert r.party(12).stage is DecryptorStage.WAITING


def test_round_replays_byte_for_byte():
    r = Round("holder", 7, who=(11,))
    again = r.client(11).start()[0]
    assert again.encode() == r.uploads[11].encode()
    assert r.client(11, rng=b"other").start()[0].encode() != again.encode()
    t1, t2 = [], []
    for t in (t1, t2):
        simulate_round(params("holder", 105), setup("holder"), inputs(9, (11, 12, 13)), seed=b"s", transcript=t)
    assert t1 == t2


def test_short_exponent_round():
    p = params("holder", rnd=101, short_exponent=True)
    xs = inputs(who=(11, 12, 13))
    np.testing.assert_array_equal(simulate_round(p, setup("holder"), xs, seed=b"x").total, expected_total(p, xs))


def test_stage_errors():
    r = Round("holder", 106, who=(11, 12, 13))
    c = r.client(11)
    c.start()
    with pytest.raises(StageError):
        c.start()
    s = r.server()
    with pytest.raises(StageError):  # a plaintext answer before the decrypt stage
        s.receive(AggregatePlaintext(r.p.session_tag, r.p.round, 0, (11,), 64, bytes(64), bytes(64)))
    with pytest.raises(AbortError):
        s.advance()
    assert s.stage is ServerStage.ABORTED


# -- threshold decryption primitive --------------------------------------------------------
@pytest.fixture(scope="module")
def dealt():
    pub, shares = deal(5, 3, 512, rng=seeded_random(b"deal"))
    enc = FastEncryptor(pub.public_key)
    msgs = [0, 1, 2 ** 200 + 3, pub.public_key.n - 1]
    cts = [enc.encrypt_int(m, seeded_random(bytes([i]))) for i, m in enumerate(msgs)]
    ds = {s.index: decryption_share(s, cts, context=b"ctx", rng=seeded_random(b"r")) for s in shares}
    return pub, shares, msgs, cts, ds


def test_any_t_of_n_shares_decrypt_and_t_minus_1_fail(dealt):
    pub, shares, msgs, cts, ds = dealt
    for subset in itertools.combinations(sorted(ds), 3):
        for i in subset:
            verify_share(pub, cts, ds[i], context=b"ctx")
        assert combine(pub, [ds[i] for i in subset]) == msgs
    for subset in itertools.combinations(sorted(ds), 2):
        with pytest.raises(ParameterError):
            combine(pub, [ds[i] for i in subset])
        with pytest.raises(ParameterError):  # repeating a share does not count twice
            combine(pub, [ds[i] for i in subset] + [ds[subset[0]]])


def test_t_minus_1_shares_with_wrong_threshold_give_garbage(dealt):
    pub, _, msgs, _, ds = dealt
    weaker = dataclasses.replace(pub, threshold=2)
    assert combine(weaker, [ds[1], ds[2]]) != msgs


def test_forged_share_detected(dealt):
    pub, _, _, cts, ds = dealt
    n2 = pub.public_key.nsquare
    honest = ds[2]
    bad_value = dataclasses.replace(honest, values=(honest.values[0] * 4 % n2,) + honest.values[1:])
    bad_z = dataclasses.replace(honest, z=honest.z + 1)
    stolen = dataclasses.replace(ds[3], index=2)
    for forged in (bad_value, bad_z, stolen):
        with pytest.raises(ShareVerificationError):
            verify_share(pub, cts, forged, context=b"ctx")
    with pytest.raises(ShareVerificationError):
        verify_share(pub, cts, honest, context=b"other")


# -- parameters ----------------------------------------------------------------------------
def test_parameter_refusals():
    with pytest.raises(ProtocolError):
        params("holder", min_clients=1)
    with pytest.raises(ThresholdError):
        params("threshold", threshold=1)
    with pytest.raises(ProtocolError):
        PaillierParams(SID, 1, (1, 1, 2), 2, "holder", key_bits=512)
    with pytest.raises(ProtocolError):
        PaillierParams(SID, 1, (1, 2), 2, "masked", key_bits=512)
    with pytest.raises(ProtocolError):
        PaillierParams(SID, 1, (1, 2**32 - 1), 2, "holder", key_bits=512)  # the server's id
    assert params("threshold").t == 3


def test_session_tag_binds_every_parameter():
    base = params("holder")
    variants = [params("holder", rnd=2), params("holder", min_clients=4), params("holder", slot_bits=20),
                params("holder", short_exponent=True), PaillierParams(SID, 1, CLIENTS, 3, "holder", key_bits=512, clip=1.0),
                PaillierParams(b"other", 1, CLIENTS, 3, "holder", key_bits=512, clip=2.0),
                PaillierParams(SID, 1, CLIENTS[:4], 3, "holder", key_bits=512, clip=2.0)]
    tags = {v.session_tag for v in variants}
    assert base.session_tag not in tags and len(tags) == len(variants)


def test_setup_accepts_precomputed_primes():
    from fedvault.secagg.paillier_threshold import generate_safe_prime

    p = params("threshold")
    rng = seeded_random(b"primes")
    safe = (generate_safe_prime(256, rng), generate_safe_prime(256, rng))
    s = setup_keys(p, rng=seeded_random(b"x"), primes=safe)
    assert s.public.public_key.n == safe[0] * safe[1]
    res = simulate_round(p, s, inputs(who=(11, 12, 13)), seed=b"s")
    np.testing.assert_array_equal(res.total, expected_total(p, inputs(who=(11, 12, 13))))
    with pytest.raises(ParameterError):  # 29 is prime but (29-1)/2 = 14 is not
        setup_keys(p, primes=(safe[0], 29))


def test_client_dropout_at_upload():
    p = params("holder", rnd=107)
    xs = inputs(9, (11, 12, 13, 14))
    res = simulate_round(p, setup("holder"), xs, seed=b"u", drop={"upload": [13]})
    assert res.contributors == (11, 12, 14) and res.dropped == {"upload": [13]}
    np.testing.assert_array_equal(res.total, expected_total(p, {c: xs[c] for c in (11, 12, 14)}))
    with pytest.raises(AbortError, match="verified uploads"):
        simulate_round(params("holder", rnd=108), setup("holder"), xs, seed=b"u", drop={"upload": [11, 12]})
