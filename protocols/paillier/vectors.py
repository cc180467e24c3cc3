"""Test vectors for the Paillier part of ``protocols/SPEC.md``: produced by the code, checked by the tests.

``python -m fedvault.protocols.paillier.vectors`` rewrites ``protocols/vectors/paillier_v1.json``.
Every value derives from fixed seeds (512-bit keys: vectors only, never a deployment), so
another implementation can check the primitives and replay whole rounds byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedvault.secagg.paillier import FastEncryptor, djn_base, seeded_random
from fedvault.secagg.paillier_proofs import prove_plaintexts
from fedvault.secagg.paillier_threshold import generate_safe_prime

from . import PaillierParams, setup_keys, simulate_round
from .messages import decode
from .verify import proof_context

VECTORS = Path(__file__).parent.parent / "vectors" / "paillier_v1.json"
SEED = bytes(range(32))
KEY_BITS = 512


def _hex(b: bytes) -> str:
    return bytes(b).hex()


def _pub(k: Ed25519PrivateKey) -> str:
    return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def generate() -> dict[str, Any]:
    """All vectors as a JSON-ready dict."""
    rng = seeded_random(SEED + b"primes")
    p, q = generate_safe_prime(KEY_BITS // 2, rng), generate_safe_prime(KEY_BITS // 2, rng)
    out: dict[str, Any] = {"version": 1, "key": {"p": hex(p), "q": hex(q), "n": hex(p * q)}}
    n = p * q

    # -- DJN base, encryption, proof of plaintext knowledge (primitive level)
    from phe.paillier import PaillierPublicKey

    enc = FastEncryptor(PaillierPublicKey(n))
    out["djn"] = {"h": hex(djn_base(n)), "h_s": hex(int(enc.h_s)), "exponent_bytes": enc.exponent_bytes}
    plaintexts = [0, 1, 123456789, n - 1]
    exps = bytes(range(1, 1 + enc.exponent_bytes * len(plaintexts)))
    cts = enc._encrypt_with(plaintexts, exps)
    k = enc.exponent_bytes
    a_j = [int.from_bytes(exps[j * k:(j + 1) * k], "big") for j in range(len(plaintexts))]
    proof = prove_plaintexts(n, enc.h_s, 8 * k, cts, plaintexts, a_j, context=b"vector-context",
                             rng=seeded_random(SEED + b"proof"))
    out["encrypt"] = {"plaintexts": [hex(m) for m in plaintexts], "exponents": [hex(a) for a in a_j],
                      "ciphertexts": [hex(int(c)) for c in cts]}
    out["proof"] = {"context": _hex(b"vector-context"), "A": hex(proof.commitment), "z_m": hex(proof.z_m),
                    "z_a": hex(proof.z_a)}

    # -- whole rounds, wire bytes in order
    rounds = {}
    for mode in ("holder", "threshold"):
        params = PaillierParams(b"vector-session", 1, (1, 2, 3), min_clients=2, keys=mode, key_bits=KEY_BITS,
                                slot_bits=8, clip=1.0)
        if mode == "holder":
            setup = setup_keys(params, rng=seeded_random(SEED + b"setup"), primes=(p, q))
        else:
            setup = setup_keys(params, rng=seeded_random(SEED + b"deal"), primes=(p, q))
        inputs = {1: np.array([0.5, -0.25, 1.0]), 2: np.array([0.0, 0.75, -1.0]), 3: np.array([-0.5, 0.125, 0.25])}
        transcript: list = []
        res = simulate_round(params, setup, {1: inputs[1], 2: inputs[2]}, seed=SEED, transcript=transcript)
        ids = setup.simulated_identities(sorted(set(params.clients) | set(setup.public.decryptors())))
        rounds[mode] = {
            "params": {"session_id": _hex(params.session_id), "round": 1, "clients": [1, 2, 3], "min_clients": 2,
                       "keys": mode, "key_bits": KEY_BITS, "slot_bits": 8, "clip": 1.0},
            "session_tag": _hex(params.session_tag),
            "key_fingerprint": _hex(setup.public.fingerprint()),
            "layout": params.layout.describe(),
            "identity_public_keys": {str(i): _pub(key) for i, key in ids.items()},
            "proof_context_client_1": _hex(proof_context(params, 1, setup.public.fingerprint(), 3)),
            "inputs": {str(i): inputs[i].tolist() for i in (1, 2)},
            "messages": [{"direction": d, "party": c, "type": decode(data).TYPE.name, "hex": _hex(data)}
                         for d, c, data in transcript],
            "contributors": list(res.contributors),
            "total": res.total.tolist(),
            "guarantee": res.guarantee["line"],
        }
        if mode == "threshold":
            tk = setup.public.threshold_key
            rounds[mode]["threshold_key"] = {"t": tk.threshold, "l": tk.parties, "v": hex(tk.v),
                                             "verification_keys": {str(i): hex(v) for i, v in
                                                                   tk.verification_keys.items()}}
    out["rounds"] = rounds
    return out


def write(path: Path = VECTORS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(generate(), indent=1) + "\n")
    return path


if __name__ == "__main__":  # pragma: no cover
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS))
