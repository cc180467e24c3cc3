"""How the server obtains the sum of the hospitals' vectors.

Each aggregator takes every participant's vector and returns their sum and nothing
else a caller could use to read an individual vector:

* ``plaintext`` — the server adds the float vectors it receives (no protection; the
  reference point for accuracy and cost).
* ``masked`` / ``secagg`` — the SecAgg(+) protocol of :mod:`protocols.secagg`: vectors
  are clipped, fixed-point encoded into Z_(2^b) and pairwise-masked; the server learns
  only the sum of the survivors' vectors.
* ``paillier`` — packed Paillier of :mod:`protocols.paillier` (see that module).

The in-process simulation moves the protocol messages in memory; the message flow and
the bytes are those a networked deployment would send.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np

from fedvault.fl.config import Config
from fedvault.fl.errors import ConfigError, FederationError
from fedvault.secagg.errors import ParameterError


@dataclass
class AggregateResult:
    """The sum of the contributors' vectors, and what it cost."""

    total: np.ndarray
    contributors: list[str]
    upload_bytes: dict[str, int]
    dropped: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    noise: Any = None  # fl.distributed_dp.RoundNoise when client-level noise was added


class Aggregator(Protocol):
    name: str

    def aggregate(
        self, round: int, inputs: Mapping[str, np.ndarray], *, clip: float, bits: int | None = None,
        purpose: str = "update",
    ) -> AggregateResult:
        """Sum ``inputs`` (each within ``[-clip, clip]`` per coordinate).

        ``purpose`` ("stats", "update", "eval") separates protocol sessions, so the same
        round number can carry several aggregations without replay confusion.
        """
        ...


class PlaintextAggregator:
    """The server sees every vector (float32 on the wire) and adds them."""

    name = "plaintext"

    def aggregate(
        self, round: int, inputs: Mapping[str, np.ndarray], *, clip: float, bits: int | None = None,
        purpose: str = "update",
    ) -> AggregateResult:
        t0 = time.perf_counter()
        names = sorted(inputs)
        total = np.sum([np.clip(np.asarray(inputs[k], dtype=np.float64), -clip, clip) for k in names], axis=0)
        return AggregateResult(
            total=total,
            contributors=names,
            upload_bytes={k: int(np.asarray(inputs[k]).size * 4) for k in names},
            seconds={"server": time.perf_counter() - t0},
        )


def session_id(seed: int, label: str) -> bytes:
    """A per-study session id (derived from the seed so runs replay exactly)."""
    return hashlib.sha256(f"fedvault/session/{label}/{seed}".encode()).digest()[:16]


class SecAggAggregator:
    """SecAgg / SecAgg+ (:mod:`protocols.secagg`), driven in memory.

    Threat model: honest-but-curious server (the protocol's malicious-server checks
    apply too: signed keys, consistency round). The server learns the sum of the
    survivors' vectors and who survived; nothing about an individual vector.
    """

    name = "secagg"

    def __init__(self, cfg: Config, all_clients: list[str]):
        self.cfg = cfg
        self.ids = {name: i + 1 for i, name in enumerate(sorted(all_clients))}
        self.seed = cfg.seed
        self.rng = np.random.default_rng([cfg.seed, 0x5EC])  # only picks simulated dropouts

    def _threshold(self, n: int) -> int | None:
        """The configured t (capped at the round's size), or None: the protocol's default,
        a strict majority of the smallest neighbourhood of the masking graph."""
        t = self.cfg.aggregation.threshold
        return None if t is None else min(t, n)

    def _drops(self, ids: list[int]) -> dict[str, list[int]]:
        frac = self.cfg.aggregation.dropout
        if not frac:
            return {}
        from fedvault.protocols.secagg import STAGES  # the protocol's stage names

        alive = list(ids)
        drops: dict[str, list[int]] = {}
        for stage in STAGES:
            if stage == "reveal":  # (a loss there stops the round by design; the short stage is not simulated)
                continue
            k = int(self.rng.binomial(len(alive), frac))
            if k:
                gone = sorted(int(x) for x in self.rng.choice(alive, size=k, replace=False))
                drops[stage] = gone
                alive = [a for a in alive if a not in gone]
        return drops

    def aggregate(
        self, round: int, inputs: Mapping[str, np.ndarray], *, clip: float, bits: int | None = None,
        purpose: str = "update",
    ) -> AggregateResult:
        from fedvault.protocols.secagg import SecAggParams, simulate_round

        names = sorted(inputs)
        if len(names) < 2:
            raise FederationError(
                "secure aggregation needs at least 2 hospitals in a round (a sum of one is that hospital's update); "
                "lower the number refusing or raise their privacy budgets"
            )
        ids = [self.ids[n] for n in names]
        back = {self.ids[n]: n for n in names}
        session = session_id(self.seed, f"secagg/{purpose}")
        z = self.cfg.privacy.client_noise_multiplier if purpose == "update" else None
        frac_bits = None
        plan = None
        if z is not None:
            from fedvault.fl import distributed_dp

            bits_ = bits or self.cfg.aggregation.bits
            probe = SecAggParams(session_id=session, round=round, clients=tuple(ids),
                                 threshold=self._threshold(len(ids)), graph=self.cfg.aggregation.graph,
                                 threat_model=self.cfg.threat_model.protocol(),
                                 bits=bits_, clip=max(float(clip), 1.0))
            dim = len(next(iter(inputs.values()))) - 1
            plan = distributed_dp.plan_round(z, float(clip), bits_, len(ids), probe.t, dim)
            frac_bits = plan.frac_bits
            clip = max(float(clip), 1.0)
        try:
            params = SecAggParams(
                session_id=session,
                round=round,
                clients=tuple(ids),
                threshold=self._threshold(len(ids)),
                graph=self.cfg.aggregation.graph,
                threat_model=self.cfg.threat_model.protocol(),
                bits=bits or self.cfg.aggregation.bits,
                clip=float(clip),
                frac_bits=frac_bits,
            )
        except ParameterError as e:
            raise ConfigError(f"aggregation: {e}; adjust aggregation.threshold / graph / bits") from None
        drops = self._drops(ids) if purpose == "update" else {}
        seed = hashlib.sha256(session + round.to_bytes(8, "big")).digest()
        vectors = {self.ids[n]: np.asarray(inputs[n], dtype=np.float64) for n in names}
        if plan is not None:
            from fedvault.fl import distributed_dp

            # Each hospital encodes and adds its own integer noise before masking.
            vectors = {
                i: distributed_dp.noised_encoding(v, params.encoder, plan, seed + i.to_bytes(4, "big"), len(v) - 1)
                for i, v in vectors.items()
            }
        t0 = time.perf_counter()
        res = simulate_round(params, vectors, drop=drops, seed=seed)
        wall = time.perf_counter() - t0
        return AggregateResult(
            total=np.asarray(res.total, dtype=np.float64),
            contributors=[back[i] for i in res.survivors],
            upload_bytes={back[i]: int(b) for i, b in res.upload_bytes.items()},
            dropped={stage: [back[i] for i in v] for stage, v in res.dropped.items()},
            seconds={"server": float(res.server_seconds), "wall": wall},
            noise=plan,
        )


def make(cfg: Config, all_clients: list[str]) -> Aggregator:
    mode = cfg.aggregation.mode
    if mode == "plaintext":
        return PlaintextAggregator()
    if mode in ("masked", "secagg"):
        return SecAggAggregator(cfg, all_clients)
    if mode == "paillier":
        from fedvault.fl.paillier_aggregation import PaillierAggregator

        return PaillierAggregator(cfg, all_clients)
    raise FederationError(f"unknown aggregation mode {mode!r}")
