"""Packed Paillier protocol: end-to-end rounds in both key modes, and every refusal."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedvault.protocols.errors import AbortError, DecodeError, ProtocolError, RefusedError, StageError
from fedvault.protocols.paillier import (AggregatePlaintext, AggregateRequest, DecryptionShareMessage, HolderDecryptor,
                                PaillierClient, PaillierParams, PaillierServer, ThresholdDecryptor, Upload,
                                setup_keys, simulate_round)
from fedvault.secagg.errors import ParameterError
from fedvault.secagg.paillier import FastEncryptor, seeded_random
from fedvault.secagg.paillier_threshold import ShareVerificationError, combine, deal, decryption_share, verify_share

CLIENTS = (11, 12, 13, 14, 15)
SID = b"study-A"


def params(keys: str, rnd: int = 1, **kw) -> PaillierParams:
    kw.setdefault("min_clients", 3)
    return PaillierParams(SID, rnd, CLIENTS, keys=keys, key_bits=512, clip=2.0, **kw)


@pytest.fixture(scope="module")
def holder_setup():
    return setup_keys(params("holder"), rng=seeded_random(b"holder-setup"))


@pytest.fixture(scope="module")
def threshold_setup():
    return setup_keys(params("threshold"), rng=seeded_random(b"threshold-setup"))


def inputs(d: int = 130, who=CLIENTS) -> dict[int, np.ndarray]:
    return {c: np.sin(np.arange(d) * (c % 7 + 1)) * 2.5 for c in who}  # some values beyond the clip


def expected_total(p: PaillierParams, xs: dict[int, np.ndarray]) -> np.ndarray:
    lay = p.layout
    return lay.dequantise_sum(sum(lay.quantise(x) for x in xs.values()), len(xs))


@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_round_decrypts_exact_sum_of_contributors(mode, holder_setup, threshold_setup):
    setup = holder_setup if mode == "holder" else threshold_setup
    p = params(mode, rnd=100)
    xs = inputs(who=(11, 13, 14, 15))  # 12 did not upload
    res = simulate_round(p, setup, xs, seed=b"round-100")
    assert res.contributors == (11, 13, 14, 15)
    np.testing.assert_array_equal(res.total, expected_total(p, xs))
    ref = sum(np.clip(x, -2, 2) for x in xs.values())
    assert np.max(np.abs(res.total - ref)) <= p.layout.error_bound(4) * (1 + 1e-9)
    n_ct = p.layout.ciphertexts_for(130)
    assert res.upload_bytes == {c: n_ct * 128 for c in xs}
    assert set(res.seconds) >= {"encrypt", "sum", "decrypt"}


def test_round_replays_byte_for_byte(holder_setup):
    p = params("holder", rnd=7)
    enc = holder_setup.encryptor()
    ids = holder_setup.simulated_identities(CLIENTS)
    ups = [PaillierClient(p, holder_setup.public, 11, ids[11], enc, seeded_random(b"s")).upload(np.ones(9))
           for _ in range(2)]
    assert ups[0] == ups[1]
    other = PaillierClient(p, holder_setup.public, 11, ids[11], enc, seeded_random(b"t")).upload(np.ones(9))
    assert other != ups[0]


def test_short_exponent_round(holder_setup):
    p = params("holder", rnd=101, short_exponent=True)
    xs = inputs(who=(11, 12, 13))
    np.testing.assert_array_equal(simulate_round(p, holder_setup, xs, seed=b"x").total, expected_total(p, xs))


# -- a malicious server against honest decryptors -------------------------------------------
class Round:
    """Honest clients' signed uploads for one round, for crafting malicious requests."""

    def __init__(self, setup, p: PaillierParams, who=CLIENTS) -> None:
        self.setup, self.p = setup, p
        self.ids = setup.simulated_identities(CLIENTS)
        self.pubs = {i: k.public_key() for i, k in self.ids.items()}
        enc = setup.encryptor()
        self.uploads = {c: PaillierClient(p, setup.public, c, self.ids[c], enc, seeded_random(bytes([c])))
                        .upload(inputs(20)[c]) for c in who}

    def request(self, ups: list[bytes], aggregate: bytes | None = None) -> bytes:
        if aggregate is None:
            server = PaillierServer(self.p, self.setup.public, self.pubs)
            for u in ups:
                server.receive_upload(u)
            return server.aggregate()
        return AggregateRequest(self.p.session_id, self.p.round, tuple(ups), aggregate).to_bytes()

    def holder(self) -> HolderDecryptor:
        return HolderDecryptor(self.p, self.setup.public, self.setup.holder_key, self.pubs)


def single_ciphertext(upload: bytes) -> bytes:
    return Upload.from_bytes(upload).ciphertexts


def test_single_hospital_ciphertext_forwarded_as_aggregate_is_refused(holder_setup, threshold_setup):
    r = Round(holder_setup, params("holder", rnd=2))
    dec = r.holder()
    with pytest.raises(RefusedError, match="at least 3"):
        dec.decrypt(r.request([r.uploads[11]], single_ciphertext(r.uploads[11])))
    # enough contributions, but the "aggregate" is one hospital's ciphertext
    with pytest.raises(RefusedError, match="not the sum"):
        dec.decrypt(r.request([r.uploads[c] for c in (11, 12, 13)], single_ciphertext(r.uploads[11])))
    # the same hospital's upload three times
    with pytest.raises(RefusedError, match="distinct"):
        dec.decrypt(r.request([r.uploads[11]] * 3, single_ciphertext(r.uploads[11])))
    # threshold parties refuse the same way
    t = Round(threshold_setup, params("threshold", rnd=2))
    party = ThresholdDecryptor(t.p, threshold_setup.public, 11, threshold_setup.shares[11], t.pubs,
                               seeded_random(b"p"))
    with pytest.raises(RefusedError):
        party.decrypt(t.request([t.uploads[12]], single_ciphertext(t.uploads[12])))
    # refusals revealed nothing and consumed nothing: an honest request is still answered
    ans = AggregatePlaintext.from_bytes(dec.decrypt(r.request([r.uploads[c] for c in (11, 12, 13)])))
    assert ans.contributors == (11, 12, 13)


def test_forged_replayed_and_foreign_uploads_refused(holder_setup):
    p = params("holder", rnd=3)
    r = Round(holder_setup, p)
    good = [r.uploads[c] for c in (11, 12)]
    # client 13's slot filled with a ciphertext signed by 14's key
    up = Upload.from_bytes(r.uploads[14])
    forged = dataclasses.replace(up, sender=13).to_bytes()
    with pytest.raises(RefusedError, match="not signed"):
        r.holder().decrypt(r.request(good + [forged], b""))
    # tampered ciphertext keeps the old signature
    raw = bytearray(up.ciphertexts)
    raw[5] ^= 1
    with pytest.raises(RefusedError, match="not signed"):
        r.holder().decrypt(r.request(good + [dataclasses.replace(up, ciphertexts=bytes(raw)).to_bytes()], b""))
    # replay of round 3 uploads into round 4
    r4 = Round(holder_setup, params("holder", rnd=4))
    with pytest.raises(RefusedError, match="another session or round"):
        r4.holder().decrypt(r4.request([r4.uploads[11], r4.uploads[12], r.uploads[13]], b""))
    # an upload from someone outside the round's clients
    small = params("holder", rnd=3).__class__(SID, 3, (11, 12, 13), 3, "holder", key_bits=512, clip=2.0)
    dec = HolderDecryptor(small, holder_setup.public, holder_setup.holder_key, r.pubs)
    with pytest.raises(RefusedError):
        dec.decrypt(r.request([r.uploads[c] for c in (11, 12, 14)], b""))


def test_one_decryption_per_round(holder_setup):
    p = params("holder", rnd=5)
    r = Round(holder_setup, p)
    answered: set = set()
    dec = HolderDecryptor(p, holder_setup.public, holder_setup.holder_key, r.pubs, answered=answered)
    dec.decrypt(r.request([r.uploads[c] for c in (11, 12, 13, 14)]))
    with pytest.raises(StageError):
        dec.decrypt(r.request([r.uploads[c] for c in (11, 12, 13)]))
    # a new decryptor object sharing the holder's record refuses too (differencing attack)
    again = HolderDecryptor(p, holder_setup.public, holder_setup.holder_key, r.pubs, answered=answered)
    with pytest.raises(RefusedError, match="already decrypted"):
        again.decrypt(r.request([r.uploads[c] for c in (11, 12, 13)]))


def test_server_refuses_bad_uploads_and_too_few(holder_setup):
    p = params("holder", rnd=6)
    r = Round(holder_setup, p)
    server = PaillierServer(p, holder_setup.public, r.pubs)
    server.receive_upload(r.uploads[11])
    with pytest.raises(RefusedError):
        server.receive_upload(r.uploads[11])
    server.receive_upload(r.uploads[12])
    with pytest.raises(AbortError):
        server.aggregate()
    with pytest.raises(AbortError):
        simulate_round(p, holder_setup, inputs(who=(11, 12)), seed=b"x")


# -- threshold decryption ----------------------------------------------------------------
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
    # Even combining t-1 shares as if the threshold were t-1 does not yield the plaintext.
    pub, _, msgs, _, ds = dealt
    weaker = dataclasses.replace(pub, threshold=2)
    assert combine(weaker, [ds[1], ds[2]]) != msgs


def test_forged_share_detected(dealt):
    pub, _, _, cts, ds = dealt
    n2 = pub.public_key.nsquare
    honest = ds[2]
    bad_value = dataclasses.replace(honest, values=(honest.values[0] * 4 % n2,) + honest.values[1:])
    bad_z = dataclasses.replace(honest, z=honest.z + 1)
    stolen = dataclasses.replace(ds[3], index=2)  # party 3's share claimed as party 2's
    for forged in (bad_value, bad_z, stolen):
        with pytest.raises(ShareVerificationError):
            verify_share(pub, cts, forged, context=b"ctx")
    with pytest.raises(ShareVerificationError):  # an honest share replayed in another context
        verify_share(pub, cts, honest, context=b"other")


def test_server_discards_forged_share_and_needs_t_valid(threshold_setup):
    p = params("threshold", rnd=8)
    r = Round(threshold_setup, p)
    request = None
    server = PaillierServer(p, threshold_setup.public, r.pubs)
    for c in (11, 12, 13, 14):
        server.receive_upload(r.uploads[c])
    request = server.aggregate()
    answers = {c: ThresholdDecryptor(p, threshold_setup.public, c, threshold_setup.shares[c], r.pubs,
                                     seeded_random(bytes([c]))).decrypt(request) for c in CLIENTS}
    msg = DecryptionShareMessage.from_bytes(answers[11])
    vals = bytearray(msg.values)
    vals[-1] ^= 1
    assert server.receive_share(dataclasses.replace(msg, values=bytes(vals)).to_bytes()) is None
    assert 11 in server.rejected_shares
    assert server.receive_share(answers[12]) is None  # 1 valid share
    assert server.receive_share(answers[13]) is None  # 2 valid shares: t - 1
    total = server.receive_share(answers[15])
    xs = {c: inputs(20)[c] for c in (11, 12, 13, 14)}
    np.testing.assert_array_equal(total, expected_total(p, xs))


# -- parameters and wire format ------------------------------------------------------------
def test_parameter_refusals():
    with pytest.raises(ProtocolError):
        params("holder", min_clients=1)
    with pytest.raises(ProtocolError):
        params("threshold", threshold=1)
    with pytest.raises(ProtocolError):
        params("threshold", threshold=6)
    with pytest.raises(ProtocolError):
        PaillierParams(SID, 1, (1, 1, 2), 2, "holder", key_bits=512)
    with pytest.raises(ProtocolError):
        PaillierParams(SID, 1, (1, 2), 2, "masked", key_bits=512)
    assert params("threshold").t == 3


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
    with pytest.raises(ParameterError):
        setup_keys(p, primes=(safe[0], 2 * 91 + 1 + 2))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([Upload, AggregateRequest, AggregatePlaintext,
                                                  DecryptionShareMessage]))
def test_decoders_raise_only_decode_error(data, cls):
    try:
        cls.from_bytes(data)
    except DecodeError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_upload_raises_only_typed_errors(holder_setup, data):
    p = params("holder", rnd=9)
    r = Round(holder_setup, p, who=(11,))
    raw = bytearray(r.uploads[11])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    server = PaillierServer(p, holder_setup.public, r.pubs)
    try:
        server.receive_upload(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    except ProtocolError:
        pass
