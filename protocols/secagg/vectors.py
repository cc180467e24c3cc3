"""Test vectors for ``protocols/SPEC.md``: produced by the code, checked by the tests.

``python -m fedvault.protocols.secagg.vectors`` rewrites ``protocols/vectors/secagg_v2.json``.
Every value is derived from fixed seeds, so another implementation can replay the
primitives and a whole round and compare bytes.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedvault.secagg import keys as K
from fedvault.secagg import shamir
from fedvault.secagg.graph import build_graph, graph_seed
from fedvault.secagg.masking import pair_domain, self_domain
from fedvault.secagg.prg import DeterministicRandom, MaskExpander

from .messages import decode
from . import SecAggParams, simulate_round, simulation_identities
from .threat import ThreatModel

VECTORS = Path(__file__).parent.parent / "vectors" / "secagg_v2.json"
SEED = bytes(range(32))


def _hex(b: bytes) -> str:
    return bytes(b).hex()


def generate() -> dict[str, Any]:
    """All vectors as a JSON-ready dict."""
    out: dict[str, Any] = {"version": 2}

    # -- PRG: seed + domain -> mask words
    prg = []
    for bits, domain in ((32, self_domain(7)), (20, pair_domain(3, 9)), (64, b"self\x00\x00\x00\x01")):
        words = MaskExpander(6, bits).expand(SEED, domain)
        prg.append({"seed": _hex(SEED), "domain": _hex(domain), "bits": bits, "words": [int(w) for w in words]})
    out["prg"] = prg

    # -- DRBG used for simulations (not part of the wire protocol, but needed to replay the round)
    out["drbg"] = {"seed": _hex(SEED), "label": "", "first_48_bytes": _hex(DeterministicRandom(SEED)(48)),
                   "child": "client/1", "child_first_16_bytes": _hex(DeterministicRandom(SEED).child(b"client/1")(16))}

    # -- X25519 agreement -> seed
    rng = DeterministicRandom(SEED, b"agree")
    a, b = K.generate_x25519(rng), K.generate_x25519(rng)
    out["agree"] = {
        "private_a": _hex(K.x25519_private_bytes(a)),
        "public_b": _hex(K.public_bytes(b)),
        "context": _hex(b"ctx"),
        "seed": _hex(K.agree(a, K.public_bytes(b), b"ctx")),
    }

    # -- Shamir 3-of-5 over p = 2^256 - 189 with x = id + 1
    rng = DeterministicRandom(SEED, b"shamir")
    secret = bytes([0x12]) + bytes(range(31))
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5], rng)
    out["shamir"] = {"prime": hex(shamir.PRIME), "secret": _hex(secret), "threshold": 3,
                     "shares": {str(x): _hex(s) for x, s in shares.items()}}

    # -- sparse graph
    ids = list(range(100, 116))
    g = build_graph("sparse", b"vector-session", 5, ids)
    out["graph"] = {"session_id": _hex(b"vector-session"), "round": 5, "clients": ids,
                    "seed": _hex(graph_seed(b"vector-session", 5, ids)),
                    "neighbours": {str(i): sorted(g.neighbours[i]) for i in ids}}

    # -- a whole round with one dropout, wire bytes in order
    params = SecAggParams(b"vector-session", 1, (1, 2, 3, 4), threshold=2, bits=32, clip=1.0,
                          threat_model=ThreatModel(colluders=0))
    inputs = {i: np.array([0.5, -0.25, 0.125 * i]) for i in params.clients}
    transcript: list = []
    res = simulate_round(params, inputs, drop={"masked_input": [4]}, seed=SEED, transcript=transcript)
    idents = simulation_identities(SEED, params.clients)
    p = params.with_dim(3)
    out["round"] = {
        "params": {"session_id": _hex(params.session_id), "round": 1, "clients": list(params.clients),
                   "threshold": 2, "graph": "complete", "bits": 32, "clip": 1.0, "frac_bits": p.encoder.fractional_bits,
                   "dim": 3, "degree": 3, "colluders": 0, "dropouts": 1},
        "guarantee": p.guarantee().as_dict(),
        "session_tag": _hex(p.session_tag),
        "seed": _hex(SEED),
        "identity_public_keys": {str(i): _hex(K.public_bytes(k)) for i, k in idents.items()},
        "inputs": {str(i): v.tolist() for i, v in inputs.items()},
        "encoded_inputs": {str(i): [int(w) for w in p.encoder.encode(v)] for i, v in inputs.items()},
        "drop": {"masked_input": [4]},
        "messages": [{"direction": d, "client": c, "type": decode(data).TYPE.name, "hex": _hex(data)}
                     for d, c, data in transcript],
        "survivors": list(res.survivors),
        "encoded_total": [int(w) for w in res.encoded_total],
        "total": res.total.tolist(),
    }
    return out


def write(path: Path = VECTORS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(generate(), indent=1) + "\n")
    return path


if __name__ == "__main__":  # pragma: no cover
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS))
