"""A Flower strategy whose training rounds go through fedvault's secure aggregation.

Drop-in for ``flwr.serverapp.strategy.FedAvg(...).start(grid, arrays, num_rounds)``::

    strategy = SecureFedAvg(registry, SecAggConfig(clip=max_records * update_clip))
    result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=3)

Each round is one :func:`~fl.integrations.flower.workflow.secure_round`: the
hospitals' weighted updates ``[n_k delta_k, n_k]`` are summed under SecAgg(+) and the
global model moves by the weighted mean delta (``fl.strategies`` — FedAvg by default,
or FedAvgM/FedAdam/FedYogi: any sum-based server optimiser).  The server never sees
an individual update; :attr:`history` records per round who took part, who dropped
at which stage and who declined (privacy budget).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result


from . import wire
from .node import Registry
from .workflow import RoundAborted, SecAggConfig, secure_round

log = logging.getLogger("fedvault.flower")


class SecureFedAvg:
    """FedAvg (or any ``fl.strategies`` sum-based optimiser) over fedvault SecAgg(+).

    registry
        The consortium registry (identity keys the server checks signatures with).
    secagg
        :class:`SecAggConfig` (clip, graph, threshold, stage timeout, min_clients).
    server_optimizer
        An object with ``step(weights, total) -> weights`` (default ``fl.strategies.FedAvg()``).
    on_stage
        ``(round, stage) -> None`` progress callback (e.g. for monitoring).
    """

    def __init__(self, registry: Registry, secagg: SecAggConfig, *, server_optimizer: Any = None,
                 on_stage: Callable[[int, str], None] | None = None):
        self.registry = registry
        self.secagg = secagg
        if server_optimizer is None:
            from fedvault.fl.strategies import FedAvg

            server_optimizer = FedAvg()
        self.optimizer = server_optimizer
        self.on_stage = on_stage
        self.session_id = os.urandom(16)
        self.history: list[dict[str, Any]] = []

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` secure rounds; a round that aborts leaves the model unchanged."""
        result = Result()
        arrays = initial_arrays
        weights = wire.flatten(arrays)
        if evaluate_fn is not None:
            m = evaluate_fn(0, arrays)
            if m is not None:
                result.evaluate_metrics_serverapp[0] = m
        for rnd in range(1, num_rounds + 1):
            try:
                out = secure_round(
                    grid, self.registry, self.secagg, round=rnd, weights=arrays, session_id=self.session_id,
                    on_stage=None if self.on_stage is None else (lambda s, r=rnd: self.on_stage(r, s)),
                )
            except RoundAborted as e:
                log.warning("fedvault: %s; the global model is unchanged", e)
                self.history.append({"round": rnd, "aborted": str(e)})
                continue
            weights = self.optimizer.step(weights, out.total)
            arrays = wire.unflatten(weights, arrays)
            result.arrays = arrays
            result.train_metrics_clientapp[rnd] = MetricRecord(
                {"records": float(out.total[-1]), "participants": len(out.survivors)})
            self.history.append({
                "round": rnd, "participants": out.survivors, "dropped": out.dropped, "refused": out.refused,
                "server_seconds": out.server_seconds, "wall_seconds": out.wall_seconds,
                "upload_bytes": out.upload_bytes, "stage_seconds": out.stage_seconds, "total": out.total.tolist(), "records": float(out.total[-1]),
            })
            log.info("fedvault round %d: %d hospitals in the sum, dropped %s, refused %s", rnd,
                     len(out.survivors), {k: v for k, v in out.dropped.items() if v}, list(out.refused))
            if evaluate_fn is not None:
                m = evaluate_fn(rnd, arrays)
                if m is not None:
                    result.evaluate_metrics_serverapp[rnd] = m
        result.arrays = arrays
        return result
