"""``aggregation.mode = "paillier"``: packed Paillier (:mod:`protocols.paillier`) driven in memory.

Keys are set up once per study (``aggregation.keys``): ``"holder"`` — a designated key
holder outside the hospitals decrypts; ``"threshold"`` — t-of-n threshold decryption
among the hospitals (t = aggregation.threshold, default a strict majority). In both
modes a decryptor opens only the homomorphic sum of at least ``training.min_clients``
signed contributions that it recomputes itself.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Mapping

import numpy as np

from fedvault.fl.aggregation import AggregateResult, session_id
from fedvault.fl.config import Config
from fedvault.fl.errors import FederationError


class PaillierAggregator:
    name = "paillier"

    def __init__(self, cfg: Config, all_clients: list[str]):
        self.cfg = cfg
        self.ids = {name: i + 1 for i, name in enumerate(sorted(all_clients))}
        self.setup = None
        self.setup_seconds = 0.0

    def _params(self, session: bytes, round: int, clients: tuple[int, ...], clip: float, value_bits: int):
        from fedvault.protocols.paillier import PaillierParams

        a = self.cfg.aggregation
        return PaillierParams(
            session_id=session,
            round=round,
            clients=clients,
            min_clients=min(max(2, self.cfg.training.min_clients), len(clients)),
            keys=a.keys,
            key_bits=a.key_bits,
            slot_bits=value_bits,
            clip=float(clip),
            threshold=a.threshold,
            short_exponent=a.short_exponent,
        )

    def _keys(self):
        if self.setup is None:
            from fedvault.protocols.paillier import setup_keys

            t0 = time.perf_counter()
            all_ids = tuple(sorted(self.ids.values()))
            p = self._params(session_id(self.cfg.seed, "paillier/setup"), 0, all_ids, 1.0,
                             self.cfg.aggregation.slot_bits)
            self.setup = setup_keys(p, rng=os.urandom)
            self.setup_seconds = time.perf_counter() - t0
        return self.setup

    def aggregate(
        self, round: int, inputs: Mapping[str, np.ndarray], *, clip: float, bits: int | None = None,
        purpose: str = "update",
    ) -> AggregateResult:
        from fedvault.protocols.paillier import simulate_round

        names = sorted(inputs)
        if len(names) < 2:
            raise FederationError("Paillier aggregation needs at least 2 hospitals in a round; "
                                  "a decryptor never opens a single hospital's update")
        ids = tuple(self.ids[n] for n in names)
        back = {self.ids[n]: n for n in names}
        # Wide values (statistics, bits=64) get the widest slots the packing allows.
        headroom = (len(ids) - 1).bit_length()
        value_bits = (63 - headroom) if bits and bits > 32 else self.cfg.aggregation.slot_bits
        session = session_id(self.cfg.seed, f"paillier/{purpose}")
        params = self._params(session, round, ids, clip, value_bits)
        setup = self._keys()
        seed = hashlib.sha256(session + round.to_bytes(8, "big")).digest()
        res = simulate_round(params, setup, {self.ids[n]: np.asarray(inputs[n], np.float64) for n in names},
                             seed=seed)
        secs = dict(res.seconds)
        if self.setup_seconds:
            secs["key_setup"], self.setup_seconds = self.setup_seconds, 0.0
        return AggregateResult(
            total=np.asarray(res.total, dtype=np.float64),
            contributors=[back[i] for i in res.contributors],
            upload_bytes={back[i]: int(b) for i, b in res.upload_bytes.items()},
            seconds=secs,
        )
