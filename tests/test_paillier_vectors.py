"""SPEC.md Paillier test vectors: the code reproduces them byte for byte, and an independent
re-implementation from the SPEC text (hashlib, pow, cryptography's Ed25519 only) accepts them."""

from __future__ import annotations

import hashlib
import json
import math
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedvault.protocols.paillier.vectors import VECTORS, generate

V = json.loads(VECTORS.read_text())
N = int(V["key"]["n"], 16)
N2 = N * N


def test_vectors_reproduce_byte_for_byte():
    assert generate() == V


def test_djn_base_and_encryption_match_spec():
    nb = N.to_bytes((N.bit_length() + 7) // 8, "big")
    x = int.from_bytes(hashlib.shake_256(b"fedvault/paillier/djn-base/v1\x00" + nb).digest((N.bit_length() + 128 + 7) // 8),
                       "big") % N
    h = (-x * x) % N
    assert h == int(V["djn"]["h"], 16)
    h_s = pow(h, N, N2)
    assert h_s == int(V["djn"]["h_s"], 16)
    e = V["encrypt"]
    for m, a, c in zip(e["plaintexts"], e["exponents"], e["ciphertexts"]):
        assert (1 + int(m, 16) * N) * pow(h_s, int(a, 16), N2) % N2 == int(c, 16)


def _proof_check(cts: list[int], context: bytes, a: int, z_m: int, z_a: int) -> bool:
    w = (2 * N.bit_length() + 7) // 8
    d = hashlib.sha256(b"fedvault/paillier/popk-cts/v1\x00" + len(cts).to_bytes(4, "big")
                       + b"".join(c.to_bytes(w, "big") for c in cts)).digest()
    raw = hashlib.shake_256(b"fedvault/paillier/popk-rho/v1\x00" + len(context).to_bytes(4, "big") + context + d).digest(16 * len(cts))
    rhos = [int.from_bytes(raw[16 * j:16 * j + 16], "big") for j in range(len(cts))]
    big_c = math.prod(pow(c, r, N2) for c, r in zip(cts, rhos)) % N2
    e = int.from_bytes(hashlib.sha256(b"fedvault/paillier/popk-challenge/v1\x00" + len(context).to_bytes(4, "big")
                                      + context + d + big_c.to_bytes(w, "big") + a.to_bytes(w, "big")).digest(), "big") >> 128
    h_s = int(V["djn"]["h_s"], 16)
    return math.gcd(a, N) == 1 and 0 <= z_m < N and (1 + z_m * N) * pow(h_s, z_a, N2) % N2 == a * pow(big_c, e, N2) % N2


def test_proof_of_plaintext_knowledge_verifies_from_the_spec():
    cts = [int(c, 16) for c in V["encrypt"]["ciphertexts"]]
    p = V["proof"]
    args = (bytes.fromhex(p["context"]), int(p["A"], 16), int(p["z_m"], 16), int(p["z_a"], 16))
    assert _proof_check(cts, *args)
    assert not _proof_check(cts[:2] + [cts[3], cts[2]], *args)  # another statement
    assert not _proof_check(cts, b"other context", *args[1:])


def test_round_messages_follow_the_spec_layout():
    for mode, r in V["rounds"].items():
        p = r["params"]
        sid = bytes.fromhex(p["session_id"])
        h = hashlib.sha256(b"fedvault/paillier/session/v1\x00" + bytes([len(sid)]) + sid
                           + struct.pack(">II", p["round"], len(p["clients"])) + b"".join(struct.pack(">I", c) for c in p["clients"])
                           + struct.pack(">IBHHdIB", p["min_clients"], mode == "threshold", p["key_bits"], p["slot_bits"],
                                         p["clip"], 0, 0)).digest()[:16]
        assert h.hex() == r["session_tag"]
        types = [m["type"] for m in r["messages"]]
        assert types[:2] == ["UPLOAD", "UPLOAD"] and "AGGREGATE_REQUEST" in types
        assert ("AGGREGATE_PLAINTEXT" if mode == "holder" else "DECRYPTION_SHARE") in types
        w = (2 * N.bit_length() + 7) // 8
        for m in r["messages"]:
            data = bytes.fromhex(m["hex"])
            magic, version, mtype, flags, tag, rnd, sender = struct.unpack(">4sBBH16sII", data[:32])
            assert (magic, version, flags, tag.hex(), rnd) == (b"FVPA", 1, 0, r["session_tag"], 1)
            if m["type"] == "UPLOAD":
                fp, length, width, count = struct.unpack(">32sIHI", data[32:74])
                assert (fp.hex(), length, width) == (r["key_fingerprint"], 3, w)
                cts = [int.from_bytes(data[74 + i * w:74 + (i + 1) * w], "big") for i in range(count)]
                off = 74 + count * w
                a, z_m, z_a = (int.from_bytes(data[off + i * w:off + (i + 1) * w], "big") for i in range(3))
                ctx = bytes.fromhex(r["proof_context_client_1"]) if sender == 1 else None
                if ctx is not None:
                    assert _proof_check(cts, ctx, a, z_m, z_a)
                key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(r["identity_public_keys"][str(sender)]))
                key.verify(data[-64:], b"fedvault/paillier/upload/v1\x00" + data[:-64])
        assert r["contributors"] == [1, 2]
