"""Issue 12, Paillier: each attack against honest roles (server, key holder, share-holders).

Every test here fails on b8a9b93 (the attack succeeded, or the error was untyped / the
API to defend did not exist) and passes now.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedvault.protocols.driver import run_in_memory
from fedvault.protocols.errors import (AlreadyAnsweredError, CiphertextError, DecodeError, ProofError, ProtocolError,
                                       SignatureError, SumRangeError, ThresholdError)
from fedvault.protocols.paillier import (DirectoryDecryptLog, MemoryDecryptLog, PaillierParams, PublicSetup,
                                         setup_keys, simulate_round, simulation_parties)
from fedvault.protocols.paillier.messages import AggregatePlaintext, decode
from fedvault.secagg.paillier import seeded_random
from fedvault.secagg.paillier_threshold import deal

from _paillier_helpers import CLIENTS, SID, Round, cts, expected_total, inputs, params, setup


def _n2(r: Round) -> int:
    return r.s.public.public_key.nsquare


# -- attack 4: ciphertext cancellation ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_cancellation_upload_is_refused_by_server_and_decryptors(mode):
    """Colluder 15 uploads (c_11 * c_12)^-1, signed with its own key: the sum would be x_13 alone."""
    r = Round(mode, 20, who=(11, 12, 13))
    n2 = _n2(r)
    inverse = [pow(a * b % n2, -1, n2) for a, b in zip(cts(r.uploads[11]), cts(r.uploads[12]))]
    stolen_proof = r.uploads[11].proof  # no valid proof exists for it; try the closest things
    attempts = [r.forged_upload(15, inverse),
                dataclasses.replace(r.forged_upload(15, inverse), proof=stolen_proof)]
    for bad in attempts:
        bad = _resign(r, bad)
        with pytest.raises(ProofError):
            r.server().receive(bad.encode())
        decryptor = r.holder() if mode == "holder" else r.party(11)
        with pytest.raises(ProofError):
            decryptor.receive(r.request([r.uploads[11], r.uploads[12], r.uploads[13], bad]).encode())


def test_copied_or_rerandomised_honest_upload_is_refused():
    """The proof is bound to the sender: 15 cannot re-submit 11's ciphertexts (or a re-randomisation) as its own."""
    r = Round("holder", 21, who=(11, 12, 13))
    copy = _resign(r, dataclasses.replace(r.uploads[11], sender=15))
    with pytest.raises(ProofError):
        r.server().receive(copy.encode())
    enc = r.s.encryptor()
    n2 = _n2(r)
    rerand = [c * enc.randomizer(b"\x01" * enc.exponent_bytes) % n2 for c in cts(r.uploads[11])]
    bad = dataclasses.replace(r.forged_upload(15, rerand), proof=r.uploads[11].proof)
    with pytest.raises(ProofError):
        r.server().receive(_resign(r, bad).encode())


def _resign(r: Round, up):
    from fedvault.protocols.paillier.messages import signed

    return signed(up, r.ids[up.sender])


def test_colluder_with_known_plaintext_cannot_isolate_an_honest_update():
    """With proofs, a colluder's contribution is something it knows: the sum of >= min_clients is opened,
    and colluders learn only the honest hospitals' sum (here 11 + 12 + 13, never 13 alone)."""
    r = Round("holder", 22, who=(11, 12, 13))
    zero = r.known_plaintext_upload(15, [0] * r.uploads[11].count)
    s = r.server()
    for u in (r.uploads[11], r.uploads[12], r.uploads[13], zero):
        s.receive(u.encode())
    req = s.advance()
    out = r.holder().receive(req[0].encode())
    s.receive(out[0].encode())
    s.advance()
    # the colluder's plaintext 0 decodes as -clip per coordinate: the honest part is the sum of 11, 12, 13
    xs = {c: r.x[c] for c in (11, 12, 13)}
    lay = r.p.layout
    np.testing.assert_array_equal(s.slot_sums, sum(lay.quantise(x) for x in xs.values()))


# -- attack 5: decrypt once, durably ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_restarted_decryptor_never_answers_a_second_set(mode, tmp_path):
    r = Round(mode, 30, who=(11, 12, 13, 14))
    first = r.holder(DirectoryDecryptLog(tmp_path)) if mode == "holder" else r.party(15, DirectoryDecryptLog(tmp_path))
    req_a = r.request([r.uploads[c] for c in (11, 12, 13, 14)]).encode()
    req_b = r.request([r.uploads[c] for c in (11, 12, 13)]).encode()  # differs by hospital 14
    answer = first.receive(req_a)[0].encode()
    # the process restarts (a fresh object, no memory), or a second process shares the key and the log
    again = r.holder(DirectoryDecryptLog(tmp_path)) if mode == "holder" else r.party(15, DirectoryDecryptLog(tmp_path))
    with pytest.raises(AlreadyAnsweredError):
        again.receive(req_b)
    # the same set again is answered (the first answer was lost in transit): nothing new is revealed
    third = r.holder(DirectoryDecryptLog(tmp_path)) if mode == "holder" else r.party(15, DirectoryDecryptLog(tmp_path))
    assert decode(third.receive(req_a)[0].encode()).contributors == decode(answer).contributors
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["contributors"] == [11, 12, 13, 14]


def test_decrypt_log_claim_is_atomic_and_first_wins(tmp_path):
    a, b = DirectoryDecryptLog(tmp_path), DirectoryDecryptLog(tmp_path)
    a.claim(SID, 1, b"set-1")
    with pytest.raises(AlreadyAnsweredError):
        b.claim(SID, 1, b"set-2")
    b.claim(SID, 1, b"set-1")
    b.claim(SID, 2, b"set-2")  # another round is independent
    assert not list(tmp_path.glob(".claim-*"))  # no temporary files left behind


def test_refused_request_consumes_nothing():
    """A malicious request is refused *before* the claim: the honest request is still answered."""
    r = Round("holder", 31, who=(11, 12, 13))
    log = MemoryDecryptLog()
    bad = r.forged_upload(14, cts(r.uploads[11]))
    with pytest.raises(ProtocolError):
        r.holder(log).receive(r.request([r.uploads[11], r.uploads[12], _resign(r, bad)]).encode())
    with pytest.raises(ThresholdError):
        r.holder(log).receive(r.request([r.uploads[11], r.uploads[12]]).encode())
    out = r.holder(log).receive(r.request([r.uploads[c] for c in (11, 12, 13)]).encode())
    assert decode(out[0].encode()).contributors == (11, 12, 13)


# -- attack 6: threshold policy -------------------------------------------------------------------
def test_minority_threshold_is_refused_everywhere():
    with pytest.raises(ThresholdError):
        setup_keys(params("threshold", threshold=2), rng=seeded_random(b"t"))
    pub, _ = deal(4, 2, 512, rng=seeded_random(b"deal-2-of-4"))  # dealt elsewhere: t = l/2
    with pytest.raises(ThresholdError, match="disjoint quorums"):
        PublicSetup("threshold", pub.public_key, parties=(11, 12, 13, 14), threshold_key=pub)
    assert setup("threshold").public.threshold * 2 > len(setup("threshold").public.parties)


# -- attack 11: non-unit ciphertexts, oversize plaintexts, typed errors ----------------------------
@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_non_unit_ciphertext_is_refused_and_attributed(mode):
    r = Round(mode, 40, who=(11, 12, 13))
    n = r.s.public.public_key.n
    for c in (n, 0, n * n, n * 7):
        bad = r.forged_upload(14, [c] + cts(r.uploads[11])[1:])
        with pytest.raises((CiphertextError, DecodeError)):
            r.server().receive(bad.encode())
        decryptor = r.holder() if mode == "holder" else r.party(15)
        with pytest.raises((CiphertextError, DecodeError, ProtocolError)):
            decryptor.receive(r.request([r.uploads[11], r.uploads[12], r.uploads[13], bad]).encode())
        assert decryptor.stage.value == "aborted"
    if mode == "threshold":  # end to end: honest shares still combine, the culprit is named
        xs = inputs(20, (11, 12, 13))
        server, parties = simulation_parties(r.p, r.s, xs, seed=b"n")
        parties[14] = _Sends(r.forged_upload(14, [n] + cts(r.uploads[11])[1:]))
        st = run_in_memory(server, parties)
        assert list(st.refused) == [14] and "CiphertextError" in st.refused[14][0]
        np.testing.assert_array_equal(server.result().total, expected_total(r.p, xs))


@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_oversize_plaintext_gives_a_typed_abort_not_a_crash(mode):
    """A colluder encrypts a plaintext beyond the packing, or a slot beyond what clipped inputs give (it
    knows it, so its proof is valid): the decryptor still answers (its claim was made before decrypting,
    and nothing it checks depends on the plaintext -- such a check would leak one bit per retry); the
    server detects the out-of-range sum and aborts with a typed error."""
    r = Round(mode, 41, who=(11, 12, 13))
    lay = r.p.layout
    count = r.uploads[11].count
    for m in (1 << (lay.slots * lay.slot_bits), 5 << lay.value_bits):
        big = r.known_plaintext_upload(14, [m] * count)
        server, parties = simulation_parties(r.p, r.s, {c: r.x[c] for c in (11, 12, 13)}, seed=b"o")
        parties[14] = _Sends(big)
        with pytest.raises(SumRangeError):
            run_in_memory(server, parties)
        r = Round(mode, 41, who=(11, 12, 13))  # a fresh deployment: the decryptor answered round 41 already


def test_holder_answer_with_a_partial_element_is_a_decode_error():
    """b8a9b93: a bare ValueError from numpy when the holder's sums were not a multiple of 8 bytes."""
    r = Round("holder", 42, who=(11, 12, 13))
    ok = AggregatePlaintext(r.p.session_tag, r.p.round, 0, (11, 12, 13), 64, bytes(128), bytes(64)).encode()
    head = ok[:-64 - 128 - 6]
    import struct

    broken = head + struct.pack(">HI", 64, 2) + bytes(127) + bytes(64)
    with pytest.raises(DecodeError):
        decode(broken)


# -- attack 12 (Paillier): what a malicious hospital can still do ---------------------------------
@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2 ** 64), st.integers(0, 3))
def test_malicious_hospital_moves_each_coordinate_by_at_most_max_shift_or_aborts(value, slot):
    """No range proofs (SECURITY.md): a hospital may add any known value to the packed sum (mod n), so each
    coordinate of the decoded sum can land anywhere in what the contributors' clipped inputs could give
    (a shift of at most ``max_shift`` steps), or the round aborts with SumRangeError; it never reads anything."""
    r = Round("holder", 43, who=(11, 12, 13), d=4)
    lay = r.p.layout
    m = (value % (1 << (lay.slot_bits + 2))) << (lay.slot_bits * slot)
    up = r.known_plaintext_upload(14, [m])
    server, parties = simulation_parties(r.p, r.s, {c: r.x[c] for c in (11, 12, 13)}, seed=b"m")
    parties[14] = _Sends(up)
    try:
        run_in_memory(server, parties)
    except SumRangeError:
        return
    honest = sum(lay.quantise(r.x[c]) for c in (11, 12, 13)).astype(np.int64)
    shift = server.slot_sums.astype(np.int64) - honest
    g = server.result().guarantee
    assert np.all(np.abs(shift) <= g["max_shift"])


# -- garbage is attributed, the round goes on -----------------------------------------------------
class _Sends:
    """A hospital that sends a fixed message (or bytes) instead of running the protocol."""

    def __init__(self, *msgs) -> None:
        self.msgs = list(msgs)
        self.stage = None

    done = True

    def start(self):
        return self.msgs

    def receive(self, data):
        return []


@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_garbage_sender_is_named_and_excluded(mode):
    p = params(mode, 50)
    xs = inputs(20, (11, 12, 13))
    server, parties = simulation_parties(p, setup(mode), xs, seed=b"g")
    parties[14] = _Sends(b"FVPA" + bytes(60), b"\x00" * 10)
    st = run_in_memory(server, parties)
    assert list(st.refused) == [14] and len(st.refused[14]) == 2
    np.testing.assert_array_equal(server.result().total, expected_total(p, xs))


def test_impersonation_and_replay_are_refused():
    r = Round("holder", 51, who=(11, 12, 13))
    as_13 = dataclasses.replace(r.uploads[14] if 14 in r.uploads else r.client(14).start()[0], sender=13)
    with pytest.raises(SignatureError):
        r.server().receive(as_13.encode())  # 14's signature does not make it 13's
    old = Round("holder", 52, who=(11,)).uploads[11]
    with pytest.raises(ProtocolError, match="round"):
        r.server().receive(old.encode())
    with pytest.raises(ProtocolError):  # a forged holder answer: not signed by the holder
        s = r.server()
        for c in (11, 12, 13):
            s.receive(r.uploads[c].encode())
        s.advance()
        s.receive(AggregatePlaintext(r.p.session_tag, r.p.round, 0, (11, 12, 13), 64, bytes(64), bytes(64)).encode())


def test_split_view_cannot_get_two_threshold_answers():
    """A server shows {11,12,13,14} to some share-holders and {11,12,13} to others: with 2t > l and every
    share-holder answering once, at most one of the two sets gathers t = 3 valid shares."""
    r = Round("threshold", 60, who=(11, 12, 13, 14))
    req_a = r.request([r.uploads[c] for c in (11, 12, 13, 14)]).encode()
    req_b = r.request([r.uploads[c] for c in (11, 12, 13)]).encode()
    logs = {i: MemoryDecryptLog() for i in CLIENTS}
    answers_a, answers_b = [], []
    for i in CLIENTS:
        if i in (11, 12, 13):
            answers_a.append(r.party(i, logs[i]).receive(req_a)[0])
        else:
            answers_b.append(r.party(i, logs[i]).receive(req_b)[0])
    for i in (11, 12, 13):  # asked again (even by a fresh role object) with the other set: refused
        with pytest.raises(AlreadyAnsweredError):
            r.party(i, logs[i]).receive(req_b)
    assert len(answers_a) >= r.s.public.threshold > len(answers_b)


def _claim_all(directory: str, tag: bytes, rounds: int, out) -> None:
    log = DirectoryDecryptLog(directory)
    won = []
    for r in range(rounds):
        try:
            log.claim(SID, r, tag)
            won.append(r)
        except AlreadyAnsweredError:
            pass
    out.put((tag, won))


def test_two_decryptor_processes_racing_on_one_log_never_both_answer(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path), tag, 40, q)) for tag in (b"set-A", b"set-B")]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    a, b = set(results[b"set-A"]), set(results[b"set-B"])
    assert not (a & b) and a | b == set(range(40))
