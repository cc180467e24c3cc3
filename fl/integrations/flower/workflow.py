"""The server side: one SecAgg(+) round driven through Flower's Grid.

:func:`secure_round` sends each protocol stage as Flower messages, feeds the
replies' wire bytes to :class:`protocols.secagg.Server`, closes the stage when
``grid.send_and_receive`` returns (all replies in, or ``stage_timeout`` passed: a
node that did not answer has dropped), and returns only the aggregate::

    enrol (proposal) ---> advertise (+ model hash) ---> share ---> masked_input (+ global model, train config)
      ---> consistency ---> unmask
     |            nodes that error or stay silent at any stage are dropped; SecAgg+ recovers
     +- a node over its privacy budget answers with an error and is left out of the round
     +- a node the proposal does not fit (model size, clip) refuses: the round stops with
        :class:`Misconfigured` before any hospital trains or is charged

What the server (and Flower's SuperLink, which only relays) learns is what
:mod:`protocols.secagg.server` says: the sum of the survivors' encoded vectors, who
dropped when, the mask keys of clients dropped after sharing.  A refused or
malformed reply is logged (never its bytes) and ignored; the round goes on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedvault.fl.errors import FederationError
from fedvault.protocols.errors import AbortError, ProtocolError
from fedvault.protocols.secagg import SecAggParams, Server, ServerStage
from fedvault.protocols.secagg.messages import ForwardedShares
from fedvault.protocols.secagg.threat import ThreatModel

from . import wire
from .node import Registry

log = logging.getLogger("fedvault.flower")


@dataclass(frozen=True)
class SecAggConfig:
    """Server-side settings of fedvault's secure aggregation on Flower.

    graph, threshold, bits
        As in :class:`protocols.secagg.SecAggParams` (threshold ``None``: a strict
        majority of the smallest neighbourhood).
    clip
        Public per-coordinate bound of every client's vector (``max_records *
        update_clip`` for weighted updates ``[n_k delta_k, n_k]``).
    stage_timeout
        Seconds each stage waits for replies; a node silent that long has dropped.
    train_timeout
        Seconds the masked-input stage waits (hospitals train then); default ``stage_timeout``.
    poll_interval
        Seconds between polls for replies (Flower's own ``send_and_receive`` polls every 3 s).
    enrol_timeout
        Seconds the enrolment waits (default ``stage_timeout``): the first message of a
        run may start a cold ClientApp process on every node.
    min_clients
        Fewest enrolled hospitals to start a round (at least 2).
    threads
        Threads for mask regeneration on the server.
    """

    clip: float
    graph: str = "complete"
    threshold: int | None = None
    threat_model: ThreatModel | None = None  # degree/threshold derived from it (protocols.secagg.threat)
    bits: int = 32
    stage_timeout: float = 60.0
    enrol_timeout: float | None = None
    train_timeout: float | None = None
    poll_interval: float = 0.5
    min_clients: int = 3
    threads: int = 2


@dataclass
class RoundOutcome:
    """What one secure round yields: the sum and who is in it (no individual vector)."""

    total: np.ndarray
    survivors: list[str]
    dropped: dict[str, list[str]]
    refused: dict[str, str]
    server_seconds: float
    wall_seconds: float
    upload_bytes: int
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _send_and_receive(grid: Grid, messages: list[Message], timeout: float, poll: float) -> list[Message]:
    """``grid.send_and_receive`` with a shorter poll interval."""
    ids = set(grid.push_messages(messages))
    end = time.monotonic() + timeout
    out: list[Message] = []
    while ids:
        got = list(grid.pull_messages(ids))
        out.extend(got)
        ids.difference_update(m.metadata.reply_to_message_id for m in got)
        if not ids or time.monotonic() >= end:
            break
        time.sleep(poll)
    return out


TRAIN_STAGE = "masked_input"  # the stage whose message carries the model: hospitals train, then mask


class RoundAborted(FederationError, RuntimeError):
    """Too few hospitals enrolled or survived; nothing was revealed."""


class Misconfigured(RoundAborted):
    """Hospitals refused the server's proposal (model size, clip, roster) at enrolment; nobody trained.
    The message lists each hospital's reason; fix the server's configuration."""


def secure_round(
    grid: Grid,
    registry: Registry,
    config: SecAggConfig,
    *,
    round: int,
    weights: ArrayRecord,
    session_id: bytes | None = None,
    nodes: Iterable[int] | None = None,
    on_stage: Callable[[str], None] | None = None,
    train_config: ConfigRecord | None = None,
) -> RoundOutcome:
    """Run one secure-aggregation round over ``grid`` and return the survivors' sum.

    The vector each client contributes has ``len(flatten(weights)) + 1`` values.
    ``session_id`` (1-64 bytes) names the run; a fresh random one by default.
    ``on_stage(stage)`` is called before each stage is sent (progress reporting).
    ``train_config`` travels to the hospitals with the model.  Raises
    :class:`Misconfigured` if hospitals refuse the proposal at enrolment (nobody
    trained), :class:`RoundAborted` if the round cannot complete.
    """
    t_start = time.perf_counter()
    ssec = 0.0
    up = 0
    stage_s: dict[str, float] = {}
    node_ids = sorted(nodes if nodes is not None else grid.get_node_ids())
    session_id = session_id or os.urandom(16)
    if not 1 <= len(session_id) <= 64:
        raise ValueError("session_id must be 1-64 bytes")

    def exchange(stage: str, outbox: dict[int, Message], train: bool = False) -> list[Message]:
        if on_stage is not None:
            on_stage(stage)
        t = time.perf_counter()
        wait = config.stage_timeout if stage != wire.ENROL else (config.enrol_timeout or config.stage_timeout)
        if train:
            wait = config.train_timeout or config.stage_timeout
        replies = _send_and_receive(grid, list(outbox.values()), wait, config.poll_interval)
        stage_s[stage] = time.perf_counter() - t
        return replies

    def message(node: int, content) -> Message:
        return wire.instruction(content, node, wire.MESSAGE_TYPE, str(round))

    dim = wire.flatten(weights).shape[0] + 1
    bits = config.bits
    roster = registry.fingerprint()
    enrol_fields = {"dim": dim, "clip": float(config.clip), "bits": bits, "graph": config.graph}

    # Enrol: who takes part (budget refusals and misconfigurations come back as errors).
    refused: dict[str, str] = {}
    misconfigured: dict[str, str] = {}
    node_of: dict[int, int] = {}
    for r in exchange(wire.ENROL, {n: message(n, wire.request(wire.ENROL, round, fields=enrol_fields))
                                   for n in node_ids}):
        src = r.metadata.src_node_id
        if r.has_error():
            reason = str(r.error.reason)
            (misconfigured if reason.startswith("fedvault/misconfigured") else refused)[f"node {src}"] = reason
            continue
        rec = r.content.config_records[wire.RECORD]
        cid = int(rec["client"])
        if cid not in registry.members or cid in node_of:
            log.warning("fedvault: node %s claims unknown or duplicate client id %s; ignored", src, cid)
            continue
        if str(rec.get("roster", "")) != roster:
            misconfigured[f"node {src} ({registry.name(cid)})"] = "its roster is not the server's (re-install the roster)"
            continue
        node_of[cid] = src
    if misconfigured:
        raise Misconfigured(f"round {round}: hospitals refused the server's proposal before training: "
                            + "; ".join(f"{k}: {v}" for k, v in sorted(misconfigured.items())))
    if len(node_of) < max(2, config.min_clients):
        raise RoundAborted(f"round {round}: only {len(node_of)} hospitals enrolled (min_clients = "
                           f"{config.min_clients}); refused: {refused}")
    model = wire.model_hash(weights)
    params = SecAggParams(session_id=wire.bound_session(session_id, model, roster), round=round,
                          clients=tuple(sorted(node_of)), threshold=config.threshold, graph=config.graph, bits=bits,
                          threat_model=config.threat_model,
                          clip=float(config.clip), dim=dim)
    advertise = wire.params_record(params, session_id, model, roster)
    t = time.perf_counter()
    server = Server(params, {i: registry.members[i].identity for i in params.clients}, threads=config.threads)
    ssec += time.perf_counter() - t

    # The protocol's own stages, driven generically: whatever the server role sends when a stage
    # closes goes to the nodes; the stage name on the wire is the server's stage (logs, progress).
    stage = "advertise"
    outbox = {i: message(node_of[i], wire.request(stage, round, fields=advertise)) for i in params.clients}
    while True:
        replies = exchange(stage, outbox, train=stage == TRAIN_STAGE)
        t = time.perf_counter()
        for r in replies:
            if r.has_error():
                log.info("fedvault: node %s dropped at %s: %s", r.metadata.src_node_id, stage, r.error.reason)
                continue
            data = bytes(r.content.config_records[wire.RECORD]["wire"])
            up += len(data)
            try:
                server.receive(data)
            except ProtocolError as e:
                log.warning("fedvault: refused a %s reply from node %s: %s", stage, r.metadata.src_node_id, e)
        try:
            nxt = server.advance()
        except AbortError as e:
            raise RoundAborted(f"round {round}: {e}") from None
        ssec += time.perf_counter() - t
        if server.stage is ServerStage.DONE:
            break
        stage = server.stage.value
        outbox = {}
        for i, m in nxt.items():
            trains = isinstance(m, ForwardedShares)  # the shares a client needs before its masked input
            outbox[i] = message(node_of[i], wire.request(
                TRAIN_STAGE if trains else stage, round, wire=m.encode(), weights=weights if trains else None,
                config=(train_config or ConfigRecord({"server-round": round})) if trains else None))
        if any(isinstance(m, ForwardedShares) for m in nxt.values()):
            stage = TRAIN_STAGE
    assert server.result is not None
    t = time.perf_counter()
    total = params.encoder.decode_sum(server.result, len(server.survivors))
    ssec += time.perf_counter() - t
    name = registry.name
    return RoundOutcome(
        total=np.asarray(total, dtype=np.float64),
        survivors=[name(i) for i in server.survivors],
        dropped={s: [name(i) for i in ids] for s, ids in server.dropped.items()},
        refused=refused,
        server_seconds=ssec,
        wall_seconds=time.perf_counter() - t_start,
        upload_bytes=up,
        stage_seconds=stage_s,
    )
