"""Sum given vectors through one protocol session of the round engine (tests, benchmarks, statistics).

Not the federation's path — :mod:`fl.engine` runs studies. This helper answers "what does
protocol X make of these exact contributions?": every input is contributed by a
:class:`~fl.hospital.VectorParticipant`, so fixed-point encoding, client-level noise
(``privacy.client_noise_multiplier``) and masking or encryption happen on the party's
side exactly as for a hospital (:func:`fl.hospital.client_role`), and the server role
sees only protocol messages. ``PlaintextAggregator()``, ``SecAggAggregator(cfg, names)``
and ``PaillierAggregator(cfg, names)`` keep the names of the aggregators the engine
replaced.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from fedvault.fl.config import Config, from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import ClientNoise, KeyHolder, VectorParticipant
from fedvault.fl.transports.memory import InMemoryTransport, simulated_stages
from fedvault.protocols.errors import AbortError

__all__ = ["AggregateResult", "SessionAggregator", "PlaintextAggregator", "SecAggAggregator", "PaillierAggregator"]


@dataclass
class AggregateResult:
    """The sum of the contributors' vectors, and what it cost."""

    total: np.ndarray
    contributors: list[str]
    upload_bytes: dict[str, int]
    dropped: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    noise: ClientNoise | None = None  # client-level noise parameters of the session, if any
    guarantee: dict[str, Any] | None = None


class SessionAggregator:
    """One protocol session per :meth:`aggregate` call, between the named parties.

    ``all_clients``: every party of the study (ids are assigned in sorted order, as in the
    engine); None: the inputs' names at each call. Paillier keys are set up once.
    """

    def __init__(self, cfg: Config, all_clients: Sequence[str] | None = None) -> None:
        self.cfg = cfg
        self.names = sorted(all_clients) if all_clients is not None else None
        self._paillier: Any = None
        self._drop_rng = np.random.default_rng([cfg.seed, 0x5EC])

    def _drops(self, ids: list[int], stages: Sequence[str]) -> dict[str, list[int]]:
        """Simulated dropouts (``aggregation.dropout``) per stage; override to script them."""
        frac = self.cfg.aggregation.dropout
        if not frac:
            return {}
        alive, drops = list(ids), {}
        for stage in stages:
            k = int(self._drop_rng.binomial(len(alive), frac))
            if k:
                gone = sorted(int(x) for x in self._drop_rng.choice(alive, size=k, replace=False))
                drops[stage] = gone
                alive = [a for a in alive if a not in gone]
        return drops

    def _keys(self, ids: Mapping[str, int]) -> Any:
        if self._paillier is None:
            from fedvault.protocols.paillier import PaillierParams, setup_keys

            a = self.cfg.aggregation
            p0 = PaillierParams(session_id=b"fedvault/paillier/setup", round=0, clients=tuple(sorted(ids.values())),
                                min_clients=min(max(2, self.cfg.training.min_clients), len(ids)), keys=a.keys,
                                key_bits=a.key_bits, slot_bits=a.slot_bits, clip=1.0, threshold=a.threshold,
                                short_exponent=a.short_exponent)
            self._paillier = setup_keys(p0, rng=os.urandom, holder=0)
        return self._paillier

    def aggregate(self, round: int, inputs: Mapping[str, np.ndarray], *, clip: float, bits: int | None = None,
                  purpose: str = "update") -> AggregateResult:
        """Sum ``inputs`` (``{name: vector}``, each within ``[-clip, clip]`` per coordinate).

        Raises ``AbortError`` when the protocol cannot complete (nothing revealed).
        """
        from fedvault.protocols.secagg import simulation_identities
        from fedvault.secagg import keys as K

        names = self.names if self.names is not None else sorted(inputs)
        ids = {n: i + 1 for i, n in enumerate(names)}
        seed = hashlib.sha256(b"fedvault/aggregation-identities/v1" + self.cfg.seed.to_bytes(8, "big")).digest()
        identities = simulation_identities(seed, [0, *ids.values()])
        keys = {i: K.public_bytes(k) for i, k in identities.items()}
        vectors = {n: np.asarray(v, dtype=np.float64) for n, v in inputs.items()}
        parties: dict[str, Any] = {}
        ks = self._keys(ids) if self.cfg.aggregation.mode == "paillier" else None
        for idx, n in enumerate(names):
            vp = VectorParticipant(n, ids[n], lambda r, w, _n=n: vectors[_n], self.cfg, idx, identity=identities[ids[n]])
            if ks is not None:
                vp.key_share = ks.shares.get(ids[n])
            parties[n] = vp
        if ks is not None and ks.public.mode == "holder":
            parties["key_holder"] = KeyHolder(0, ks.holder_key, identities[0],
                                              min_clients=max(2, self.cfg.training.min_clients))
        mode = make_mode(self.cfg, ids, ks.public if ks is not None else None)
        dim = len(next(iter(vectors.values())))
        setup, server = open_session(self.cfg, mode, round, purpose, sorted(inputs), weights=np.zeros(dim - 1),
                                     clip=clip, bits=bits, dim=dim, identity_keys=keys)
        transport = InMemoryTransport(parties, roster=names)
        if purpose == "update":
            fixed = self._drops(sorted(setup.contributors), simulated_stages(server))
            transport._drops = lambda _server, _ids: fixed  # type: ignore[method-assign]
        out = transport.run_session(setup, server)
        if out.aborted is not None:
            raise AbortError(out.aborted)
        return AggregateResult(total=out.total, contributors=out.contributors, upload_bytes=out.upload_bytes,
                               dropped=out.dropped, seconds=out.seconds, noise=setup.client_noise,
                               guarantee=out.guarantee or setup.guarantee)


class PlaintextAggregator(SessionAggregator):
    """The server sees and adds every vector (no protection)."""

    def __init__(self) -> None:
        super().__init__(from_dict({"privacy": {"enabled": False}, "aggregation": {"mode": "plaintext"}}))


class SecAggAggregator(SessionAggregator):
    """SecAgg / SecAgg+ with ``cfg``'s parameters (threat model, graph, bits, client-level noise)."""

    def __init__(self, cfg: Config, all_clients: Sequence[str]) -> None:
        if cfg.aggregation.mode not in ("secagg", "masked"):
            cfg = cfg.replace(aggregation={"mode": "secagg"})
        super().__init__(cfg, all_clients)


class PaillierAggregator(SessionAggregator):
    """Packed Paillier with ``cfg``'s key mode (holder or threshold); keys set up once."""

    def __init__(self, cfg: Config, all_clients: Sequence[str]) -> None:
        if cfg.aggregation.mode != "paillier":
            cfg = cfg.replace(aggregation={"mode": "paillier"})
        super().__init__(cfg, all_clients)
