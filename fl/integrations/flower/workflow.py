"""The server side: one SecAgg(+) round driven through Flower's Grid.

:func:`secure_round` sends each protocol stage as Flower messages, feeds the
replies' wire bytes to :class:`protocols.secagg.Server`, closes the stage when
``grid.send_and_receive`` returns (all replies in, or ``stage_timeout`` passed: a
node that did not answer has dropped), and returns only the aggregate::

    [enrol: which node is which roster member, once per run (:func:`discover`)]
    advertise (parameters + model hash) ---> ... the protocol's stages ... ---> masked_input
      (+ global model, train config: hospitals train here) ---> ... ---> unmask
     |            nodes that error or stay silent at any stage are dropped; SecAgg+ recovers
     +- at advertise, a node over its privacy budget answers with an error and is left out
     +- at advertise, a node the proposal does not fit (model size, clip) refuses: the round
        stops with :class:`Misconfigured` before any hospital trains or is charged

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
from typing import Callable, Iterable, Mapping

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
    poll_interval: float = 0.1
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


def discover(grid: Grid, registry: Registry, nodes: Iterable[int] | None = None, timeout: float = 60.0,
             poll: float = 0.1, on_stage: Callable[[str], None] | None = None) -> dict[int, int]:
    """Which node serves which roster member: ``{client id: node id}`` (one ``enrol`` exchange).

    A node whose roster is not the server's raises :class:`Misconfigured` (fix it before any round)."""
    if on_stage is not None:
        on_stage(wire.ENROL)
    node_ids = sorted(nodes if nodes is not None else grid.get_node_ids())
    roster = registry.fingerprint()
    msgs = [wire.instruction(wire.request(wire.ENROL, 0), n, wire.MESSAGE_TYPE, "0") for n in node_ids]
    out: dict[int, int] = {}
    bad: dict[str, str] = {}
    for r in _send_and_receive(grid, msgs, timeout, poll):
        src = r.metadata.src_node_id
        if r.has_error():
            log.warning("fedvault: node %s did not enrol: %s", src, r.error.reason)
            continue
        rec = r.content.config_records[wire.RECORD]
        cid = int(rec["client"])
        if cid not in registry.members or cid in out:
            log.warning("fedvault: node %s claims unknown or duplicate client id %s; ignored", src, cid)
            continue
        if str(rec.get("roster", "")) != roster:
            bad[f"node {src} ({registry.name(cid)})"] = "its roster is not the server's (re-install the roster)"
            continue
        out[cid] = src
    if bad:
        raise Misconfigured("hospitals refused the server's roster: " + "; ".join(f"{k}: {v}" for k, v in bad.items()))
    return out


class RoundAborted(FederationError, RuntimeError):
    """Too few hospitals enrolled or survived; nothing was revealed."""


class Misconfigured(RoundAborted):
    """Hospitals refused the server's proposal (model size, clip, roster) before training; nobody trained or was charged.
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
    members: Mapping[int, int] | None = None,
) -> RoundOutcome:
    """Run one secure-aggregation round over ``grid`` and return the survivors' sum.

    The vector each client contributes has ``len(flatten(weights)) + 1`` values.
    ``session_id`` (1-64 bytes) names the run; a fresh random one by default.
    ``on_stage(stage)`` is called before each stage is sent (progress reporting).
    ``train_config`` travels to the hospitals with the model.  ``members``
    (``{client id: node id}``, from :func:`discover`) saves the discovery exchange;
    without it the round starts with one.  Raises :class:`Misconfigured` if
    hospitals refuse the proposal (nobody trained: a hospital checks it, and its
    budget, when the round is advertised, before any training), :class:`RoundAborted`
    if the round cannot complete.
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
    refused: dict[str, str] = {}
    if members is None:
        members = discover(grid, registry, node_ids, config.enrol_timeout or config.stage_timeout,
                           config.poll_interval, on_stage=on_stage)
    node_of = {c: n for c, n in members.items() if n in set(node_ids)}
    if len(node_of) < max(2, config.min_clients):
        raise RoundAborted(f"round {round}: only {len(node_of)} hospitals are connected (min_clients = "
                           f"{config.min_clients})")
    model = wire.model_hash(weights)
    names_of = {n: registry.name(c) for c, n in node_of.items()}

    def replies_of(stage: str, replies: list[Message]) -> list[Message]:
        """The protocol replies; refusals sorted into ``refused`` (budget) or a Misconfigured stop."""
        ok, misconfigured = [], {}
        for r in replies:
            if not r.has_error():
                ok.append(r)
                continue
            reason, src = str(r.error.reason), r.metadata.src_node_id
            who = names_of.get(src, f"node {src}")
            if reason.startswith("fedvault/misconfigured"):
                misconfigured[who] = reason
            elif reason.startswith("fedvault/budget"):
                refused[who] = reason
            log.info("fedvault: %s left at %s: %s", who, stage, reason)
        if misconfigured:  # before anyone trained (training comes with the forwarded shares)
            raise Misconfigured(f"round {round}: hospitals refused the server's proposal before training: "
                                + "; ".join(f"{k}: {v}" for k, v in sorted(misconfigured.items())))
        return ok

    # Advertise the round to the cohort.  A hospital checks its budget and the proposal here, before
    # anything is trained; if some decline, the round is advertised once more to the others only
    # (fresh keys, another session tag), so that decliners do not count as dropouts.
    cohort = dict(node_of)
    for attempt in (1, 2):
        if len(cohort) < max(2, config.min_clients):
            raise RoundAborted(f"round {round}: only {len(cohort)} hospitals take part (min_clients = "
                               f"{config.min_clients}); refused: {refused}")
        params = SecAggParams(session_id=wire.bound_session(session_id, model, roster), round=round,
                              clients=tuple(sorted(cohort)), threshold=config.threshold, graph=config.graph,
                              bits=bits, threat_model=config.threat_model, clip=float(config.clip), dim=dim)
        advertise = wire.params_record(params, session_id, model, roster)
        outbox = {i: message(cohort[i], wire.request("advertise", round, fields=advertise)) for i in params.clients}
        before = set(refused)
        replies = replies_of("advertise", exchange("advertise", outbox))
        declined = {c for c, n in cohort.items() if names_of[n] in set(refused) - before}
        if not declined or attempt == 2:
            break
        cohort = {c: n for c, n in cohort.items() if c not in declined}
    t = time.perf_counter()
    server = Server(params, {i: registry.members[i].identity for i in params.clients}, threads=config.threads)
    ssec += time.perf_counter() - t

    # The protocol's own stages, driven generically: whatever the server role sends when a stage
    # closes goes to the nodes; the stage name on the wire is the server's stage (logs, progress).
    stage = "advertise"
    while True:
        t = time.perf_counter()
        for r in replies:
            data = bytes(r.content.config_records[wire.RECORD]["wire"])
            up += len(data)
            try:
                server.receive(data)
            except ProtocolError as e:
                log.warning("fedvault: refused a %s reply from node %s: %s", stage, r.metadata.src_node_id, e)
        try:
            nxt = server.advance()
        except AbortError as e:
            raise RoundAborted(f"round {round}: {e}; refused: {refused}") from None
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
        replies = replies_of(stage, exchange(stage, outbox, train=stage == TRAIN_STAGE))
    assert server.result is not None
    t = time.perf_counter()
    total = params.encoder.decode_sum(server.result, len(server.survivors))
    ssec += time.perf_counter() - t
    name = registry.name
    return RoundOutcome(
        total=np.asarray(total, dtype=np.float64),
        survivors=[name(i) for i in server.survivors],
        dropped={s: [name(i) for i in ids if name(i) not in refused] for s, ids in server.dropped.items()},
        refused=refused,
        server_seconds=ssec,
        wall_seconds=time.perf_counter() - t_start,
        upload_bytes=up,
        stage_seconds=stage_s,
    )
