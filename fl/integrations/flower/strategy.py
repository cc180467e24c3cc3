"""A Flower Message-API strategy whose training rounds go through fedvault's secure aggregation.

:class:`SecureFedAvg` *is* a :class:`flwr.serverapp.strategy.FedAvg` (Flower's
Message-API strategy base), used the same way::

    strategy = SecureFedAvg(registry, SecAggConfig(clip=max_records * update_clip), fraction_evaluate=1.0)
    result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=3, timeout=600,
                            train_config=ConfigRecord({"lr": 0.5}), evaluate_fn=central_eval)

What changes is one step of :meth:`start`: Flower's ``configure_train`` →
``send_and_receive`` → ``aggregate_train`` (the server sees every update) becomes
one :func:`~fl.integrations.flower.workflow.secure_round` (the server sees only the
sum of the hospitals' weighted updates ``[n_k delta_k, n_k]``), after which the
global model moves by the weighted mean delta (``fl.strategies`` — FedAvg by
default, or FedAvgM/FedAdam/FedYogi: any sum-based server optimiser).  Everything
else is Flower's: ``timeout`` (the stage timeouts default to it), ``train_config``
(sent to the hospitals with the model), federated evaluation
(``configure_evaluate``/``aggregate_evaluate`` with ``fraction_evaluate`` etc.,
plain ``"evaluate"`` messages answered by the ClientApp's own ``@app.evaluate()``),
centralised ``evaluate_fn``, the :class:`~flwr.serverapp.strategy.Result`, and
progress and metrics in Flower's log stream.

``configure_train``/``aggregate_train`` refuse to run: a wrapper that calls them
(e.g. Flower's server-side DP wrappers, which clip individual updates the server
must never see) cannot be combined with secure aggregation; fedvault's DP is
applied by each hospital (DP-SGD, and client-level noise added before masking).
"""

from __future__ import annotations

import os
import secrets
import time
from logging import INFO, WARNING
from typing import Any, Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from . import wire
from .node import Registry
from .workflow import Misconfigured, RoundAborted, SecAggConfig, discover, secure_round


class SecureFedAvg(FedAvg):
    """FedAvg (or any ``fl.strategies`` sum-based optimiser) over fedvault SecAgg(+).

    registry
        The consortium roster (identity keys the server checks signatures with).
    secagg
        :class:`SecAggConfig` (clip, graph, threshold, stage timeouts, min_clients).
    fraction_train
        Fraction of the available nodes invited each round, drawn with the OS
        CSPRNG (at least ``secagg.min_clients``).
    fraction_evaluate, min_evaluate_nodes, min_available_nodes, evaluate_metrics_aggr_fn
        As in Flower's FedAvg (federated evaluation).
    server_optimizer
        An object with ``step(weights, total) -> weights`` (default ``fl.strategies.FedAvg()``).
    on_stage
        ``(round, stage) -> None`` progress callback (e.g. for monitoring).
    """

    def __init__(self, registry: Registry, secagg: SecAggConfig, *, fraction_train: float = 1.0,
                 fraction_evaluate: float = 0.0, min_evaluate_nodes: int = 2, min_available_nodes: int = 2,
                 evaluate_metrics_aggr_fn: Callable[..., MetricRecord] | None = None,
                 server_optimizer: Any = None, on_stage: Callable[[int, str], None] | None = None):
        super().__init__(fraction_train=fraction_train, fraction_evaluate=fraction_evaluate,
                         min_train_nodes=secagg.min_clients, min_evaluate_nodes=min_evaluate_nodes,
                         min_available_nodes=min_available_nodes, evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn)
        self.registry = registry
        self.secagg = secagg
        if server_optimizer is None:
            from fedvault.fl.strategies import FedAvg as SumFedAvg

            server_optimizer = SumFedAvg()
        self.optimizer = server_optimizer
        self.on_stage = on_stage
        self.session_id = os.urandom(16)
        self.history: list[dict[str, Any]] = []
        self._members: dict[int, int] | None = None  # client id -> node id (discovered once per run)

    # -- Flower's training hooks do not apply: the server never sees an individual update --
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        raise TypeError("SecureFedAvg trains through secure aggregation in start(); configure_train would send "
                        "plain training messages whose replies expose individual updates")

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None,
                                                                                      MetricRecord | None]:
        raise TypeError("SecureFedAvg never aggregates individual updates; see start()")

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Flower's federated evaluation: ``arrays`` and ``config`` to a ``fraction_evaluate`` sample
        (secret coins), as plain ``"evaluate"`` messages for the ClientApp's ``@app.evaluate()``."""
        if self.fraction_evaluate == 0.0:
            return []
        nodes = sorted(grid.get_node_ids())
        k = min(len(nodes), max(int(len(nodes) * self.fraction_evaluate), self.min_evaluate_nodes))
        chosen = sorted(secrets.SystemRandom().sample(nodes, k))
        config["server-round"] = server_round
        log(INFO, "configure_evaluate: sampled %s nodes (out of %s)", len(chosen), len(nodes))
        return [wire.instruction(RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config}), n,
                                 MessageType.EVALUATE, str(server_round)) for n in chosen]

    def summary(self) -> None:
        log(INFO, "\t├── fedvault secure aggregation: graph %s, clip %g, min clients %d, roster %s...",
            self.secagg.graph, self.secagg.clip, self.secagg.min_clients, self.registry.fingerprint()[:16])
        log(INFO, "\t├── Server optimiser: %s", type(self.optimizer).__name__)
        super().summary()

    def _sample(self, grid: Grid) -> list[int]:
        nodes = sorted(grid.get_node_ids())
        k = max(int(len(nodes) * self.fraction_train), self.secagg.min_clients)
        if k >= len(nodes):
            return nodes
        return sorted(secrets.SystemRandom().sample(nodes, k))  # secret coins: no party can steer who is in

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` secure rounds (a round that aborts leaves the model unchanged).

        ``timeout`` bounds each protocol stage unless ``secagg`` sets its own stage
        timeouts, and each federated evaluation.  Raises :class:`Misconfigured` if
        hospitals refuse the server's proposal when the round is advertised (nobody trained).
        """
        log(INFO, "Starting %s strategy:", type(self).__name__)
        log(INFO, "\t├── Number of rounds: %d", num_rounds)
        self.summary()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        secagg = self.secagg
        if timeout is not None and secagg.stage_timeout > timeout:
            from dataclasses import replace

            secagg = replace(secagg, stage_timeout=float(timeout))
        result = Result()
        arrays = initial_arrays
        weights = wire.flatten(arrays)
        t_start = time.time()
        if evaluate_fn is not None:
            m = evaluate_fn(0, arrays)
            log(INFO, "Initial global evaluation results: %s", m)
            if m is not None:
                result.evaluate_metrics_serverapp[0] = m
        for rnd in range(1, num_rounds + 1):
            log(INFO, "")
            log(INFO, "[ROUND %s/%s] fedvault secure aggregation", rnd, num_rounds)
            cfg = ConfigRecord(dict(train_config))
            cfg["server-round"] = rnd

            def stage(s: str, r: int = rnd) -> None:
                log(INFO, "\t├── fedvault round %d: %s", r, s)
                if self.on_stage is not None:
                    self.on_stage(r, s)

            try:
                nodes = set(grid.get_node_ids())
                if self._members is None or set(self._members.values()) != nodes:
                    self._members = discover(grid, self.registry, sorted(nodes),
                                             secagg.enrol_timeout or secagg.stage_timeout, secagg.poll_interval,
                                             on_stage=stage)
                out = secure_round(grid, self.registry, secagg, round=rnd, weights=arrays,
                                   session_id=self.session_id, nodes=self._sample(grid), on_stage=stage,
                                   train_config=cfg, members=self._members)
            except Misconfigured as e:
                log(WARNING, "fedvault: %s", e)
                self.history.append({"round": rnd, "aborted": str(e), "misconfigured": True})
                raise
            except RoundAborted as e:
                log(WARNING, "fedvault: %s; the global model is unchanged", e)
                self.history.append({"round": rnd, "aborted": str(e)})
                continue
            weights = self.optimizer.step(weights, out.total)
            arrays = wire.unflatten(weights, arrays)
            result.arrays = arrays
            train_metrics = MetricRecord({"records": float(out.total[-1]), "participants": len(out.survivors),
                                          "dropped": sum(len(v) for v in out.dropped.values()),
                                          "server-seconds": out.server_seconds})
            result.train_metrics_clientapp[rnd] = train_metrics
            self.history.append({
                "round": rnd, "participants": out.survivors, "dropped": out.dropped, "refused": out.refused,
                "server_seconds": out.server_seconds, "wall_seconds": out.wall_seconds,
                "upload_bytes": out.upload_bytes, "stage_seconds": out.stage_seconds, "total": out.total.tolist(),
                "records": float(out.total[-1]),
            })
            log(INFO, "\t└──> fedvault round %d: %d hospitals in the sum, dropped %s, refused %d; %s", rnd,
                len(out.survivors), {k: v for k, v in out.dropped.items() if v}, len(out.refused), train_metrics)

            # Federated evaluation (Flower's own path: plain "evaluate" messages, the app's @app.evaluate()).
            eval_msgs = list(self.configure_evaluate(rnd, arrays, ConfigRecord(dict(evaluate_config)), grid))
            agg = None
            if eval_msgs:
                agg = self.aggregate_evaluate(rnd, grid.send_and_receive(messages=eval_msgs, timeout=timeout))
            if agg is not None:
                log(INFO, "\t└──> Aggregated evaluation MetricRecord: %s", agg)
                result.evaluate_metrics_clientapp[rnd] = agg
            if evaluate_fn is not None:
                m = evaluate_fn(rnd, arrays)
                log(INFO, "\t└──> Global evaluation MetricRecord: %s", m)
                if m is not None:
                    result.evaluate_metrics_serverapp[rnd] = m
        result.arrays = arrays
        log(INFO, "")
        log(INFO, "Strategy execution finished in %.2fs", time.time() - t_start)
        return result
