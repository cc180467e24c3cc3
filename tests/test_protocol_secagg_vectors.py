"""SPEC.md test vectors: the code reproduces them byte for byte, and the primitives match an
independent re-implementation written from the SPEC text (hashlib/cryptography only)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedvault.protocols.secagg.vectors import VECTORS, generate

V = json.loads(VECTORS.read_text())


def test_vectors_reproduce_byte_for_byte():
    assert generate() == V


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def test_prg_matches_spec_description():
    for v in V["prg"]:
        key = _hkdf(bytes.fromhex(v["seed"]), b"fedvault/secagg/prg/v1" + bytes.fromhex(v["domain"]))
        width = 4 if v["bits"] <= 32 else 8
        ks = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(width * 6))
        words = [int.from_bytes(ks[k : k + width], "little") % (1 << v["bits"]) for k in range(0, len(ks), width)]
        assert words == v["words"]


def test_agreement_matches_spec_description():
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(V["agree"]["private_a"]))
    shared = a.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(V["agree"]["public_b"])))
    assert _hkdf(shared, b"fedvault/secagg/agree/v1" + bytes.fromhex(V["agree"]["context"])).hex() == V["agree"]["seed"]


def test_shamir_vector_interpolates_to_the_secret():
    p = int(V["shamir"]["prime"], 16)
    assert p == 2**256 - 189
    pts = [(int(x), int(s, 16)) for x, s in V["shamir"]["shares"].items()]
    for subset in (pts[:3], pts[2:], [pts[0], pts[2], pts[4]]):
        acc = 0
        for i, (xi, yi) in enumerate(subset):
            num = den = 1
            for j, (xj, _) in enumerate(subset):
                if i != j:
                    num, den = num * xj % p, den * (xj - xi) % p
            acc += yi * num * pow(den, -1, p)
        assert acc % p == int(V["shamir"]["secret"], 16)


def test_graph_seed_matches_spec_description():
    g = V["graph"]
    sid = bytes.fromhex(g["session_id"])
    h = hashlib.sha256(b"fedvault/secagg/graph/v1")
    h.update(struct.pack(">I", len(sid)) + sid + struct.pack(">II", g["round"], len(g["clients"])))
    h.update(b"".join(struct.pack(">I", i) for i in sorted(g["clients"])))
    assert h.hexdigest() == g["seed"]
    for i, nb in g["neighbours"].items():
        assert all(int(i) in g["neighbours"][str(j)] for j in nb)


def test_round_vector_headers_and_sum():
    r = V["round"]
    tag = bytes.fromhex(r["session_tag"])
    for m in r["messages"]:
        raw = bytes.fromhex(m["hex"])
        magic, version, mtype, flags, session, rnd, sender = struct.unpack(">4sBBH16sII", raw[:32])
        assert (magic, version, flags, session, rnd) == (b"FVSA", 1, 0, tag, r["params"]["round"])
        assert sender == (0xFFFFFFFF if m["direction"] == "down" else m["client"])
    bits = r["params"]["bits"]
    enc = sum(np.array(r["encoded_inputs"][str(i)], dtype=object) for i in r["survivors"]) % (1 << bits)
    assert list(enc) == r["encoded_total"]
    f = r["params"]["frac_bits"]
    signed = [w - (1 << bits) if w >= 1 << (bits - 1) else w for w in r["encoded_total"]]
    assert [s / 2**f for s in signed] == r["total"]
    assert r["survivors"] == [1, 2, 3] and r["drop"] == {"masked_input": [4]}


def test_session_tag_matches_spec_description():
    r = V["round"]
    p = r["params"]
    sid = bytes.fromhex(p["session_id"])
    h = hashlib.sha256(b"fedvault/secagg/session/v2")
    h.update(struct.pack(">B", len(sid)) + sid)
    h.update(struct.pack(">I", len(p["clients"])) + b"".join(struct.pack(">I", i) for i in p["clients"]))
    h.update(struct.pack(">I8sBBdBI", p["threshold"], p["graph"].encode().ljust(8, b"\0"), p["bits"], 0, p["clip"],
                         p["frac_bits"], p["dim"]))
    h.update(struct.pack(">IIIB", p["degree"], p["colluders"], p["dropouts"], 0))
    assert h.digest()[:16].hex() == r["session_tag"]


def test_traffic_formulas_in_spec():
    from fedvault.protocols.secagg import SecAggParams, simulate_round

    params = SecAggParams(b"s", 0, tuple(range(10)))
    res = simulate_round(params, {i: np.zeros(1000) for i in params.clients})
    deg, dim, w, n, tag = 9, 1000, 4, 10, 16
    assert res.upload_bytes[0] == (6 * 32 + 160 + (32 + tag) + (4 + 188 * deg + tag) + (8 + dim * w + tag)
                                   + (64 + tag) + (4 + 53 * deg + 8 + tag))
    assert res.download_bytes[0] == (5 * 32 + (32 + 4 + 36 * n) + (4 + 164 * (deg + 1) + 4 + 36 * n) + (4 + 188 * deg)
                                     + (4 + 4 * n) + (12 + 4 * deg + 68 * (deg + 1)))
