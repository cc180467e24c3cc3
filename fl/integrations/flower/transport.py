"""Flower as a transport of fedvault's one round engine (:class:`fl.engine.RoundEngine`).

Server side, :class:`FlowerTransport` implements :class:`fl.engine.Transport` over a
Flower :class:`~flwr.serverapp.Grid`; node side, :class:`EngineNode` answers its
messages inside a plain ClientApp (``EngineNode(load_party).register(app)``).  The
engine does everything it does in the simulation (client sampling with secret coins,
refusals, client-level noise parameters, every aggregation mode, per-site evaluation,
federated statistics, early stopping, personalisation, the history record); Flower
only moves messages::

    ask   (round)                          -> the party's refusal (budget) or nothing
    join  (the RoundSetup: public fields,  -> party.join(setup) on the node: train, clip,
           model as an ArrayRecord)           weight, encode, noise, mask/encrypt; the
                                              client role's first messages
    step  (one server message)             -> the client role's replies
    personalise (final model)              -> the party's own metrics

A setup crosses as plain record fields (:func:`setup_record` / :func:`setup_from`), never
as pickled objects: the node rebuilds the protocol parameters from values, takes identity
keys (and Paillier's public key setup) from its *own* material, never from the server,
and :meth:`fl.hospital.Hospital.check_setup` compares the rest with its own config and
recomputes the model's SHA-256.

Role state between messages.  A node keeps each session's live client role in its
ClientApp process (keyed by the session token) and, given a vault directory
(``Party.vault``), saves it there after every message before the reply leaves
(:mod:`.snapshot`: atomic, 0600, deleted when the session ends): a fresh process (a
SuperNode may start one per message) restores it and continues — nothing is replayed,
nobody trains twice.  A role that is neither live nor saved answers ``fedvault/refused:
... role lost`` and the party counts as dropped.  Roles whose randomness is a seeded
stream (``privacy.reproducible = true``) cannot be saved mid-stream; they live in the
process only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from logging import WARNING
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from flwr.common import log

from . import snapshot, wire

RECORD = "fedvault.engine"
SETUP = "fedvault.setup"
MODEL = "fedvault.model"
ACTION = "fedvault_engine"
MESSAGE_TYPE = f"train.{ACTION}"
REFUSED = ErrorCode.MOD_FAILED_PRECONDITION
STANDARDISATION = "fedvault.standardisation"  # Context.state: the study's feature transform (public)

# Live client roles of this process: (node key, session token) -> role.
_ROLES: dict[tuple[str, bytes], Any] = {}
# The vault file each live role was saved as by this process: (node key, token) -> (inode, mtime_ns).
# A file that changed since was written by another process of the same node (Flower's simulation
# engine runs several ClientApp processes and gives a node's messages to any of them): that role is
# newer than the live one, which is then stale.
_SAVED: dict[tuple[str, bytes], tuple[int, int]] = {}


# -- the setup on the wire ----------------------------------------------------------------
def _params_record(protocol: str, params: Any) -> dict:
    if protocol == "secagg":
        return dict(params.to_record())
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()
            if v is not None}


def _params_from(protocol: str, rec: Mapping[str, Any]) -> Any:
    if protocol == "secagg":
        from fedvault.protocols.secagg import SecAggParams

        return SecAggParams.from_record(rec)
    if protocol == "paillier":
        from fedvault.protocols.paillier import PaillierParams

        cls = PaillierParams
    elif protocol == "plaintext":
        from fedvault.protocols.plaintext import PlaintextParams

        cls = PlaintextParams
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in rec.items() if k in names}
    if "clients" in kw:
        kw["clients"] = tuple(int(c) for c in kw["clients"])
    if "session_id" in kw:
        kw["session_id"] = bytes(kw["session_id"])
    return cls(**kw)


def setup_record(setup: Any) -> RecordDict:
    """The setup as Flower records: public values only (its identity keys and key setup are not sent)."""
    names = sorted(setup.parties)
    fields = {
        "round": int(setup.round), "purpose": setup.purpose, "protocol": setup.protocol,
        "party_names": names, "party_ids": [int(setup.parties[n]) for n in names],
        "contributors": sorted(int(c) for c in setup.contributors), "model_sha256": setup.model_sha256,
        "update_clip": float(setup.update_clip), "round_seed": bytes(setup.round_seed),
        "prox_mu": float(setup.prox_mu), "guarantee": json.dumps(setup.guarantee, default=str),
        "client_noise": json.dumps(dataclasses.asdict(setup.client_noise)) if setup.client_noise else "",
    }
    params = {f"p.{k}": v for k, v in _params_record(setup.protocol, setup.params).items()}
    return RecordDict({SETUP: ConfigRecord({**fields, **params}),
                       MODEL: ArrayRecord({"w": Array(np.asarray(setup.weights, dtype=np.float64))})})


def setup_from(rd: RecordDict, identity_keys: Mapping[int, bytes], public: Any = None) -> Any:
    """The :class:`fl.engine.RoundSetup` a node rebuilds, with ITS identity keys and key setup."""
    from fedvault.fl.engine import RoundSetup
    from fedvault.fl.hospital import ClientNoise

    rec = rd.config_records[SETUP]
    protocol = str(rec["protocol"])
    params = _params_from(protocol, {k[2:]: rec[k] for k in rec.keys() if k.startswith("p.")})
    noise = json.loads(str(rec["client_noise"])) if rec["client_noise"] else None
    return RoundSetup(
        round=int(rec["round"]), purpose=str(rec["purpose"]), protocol=protocol, params=params,
        parties=dict(zip([str(n) for n in rec["party_names"]], [int(i) for i in rec["party_ids"]])),
        contributors=frozenset(int(c) for c in rec["contributors"]),
        weights=np.asarray(rd.array_records[MODEL]["w"].numpy(), dtype=np.float64),
        model_sha256=str(rec["model_sha256"]), update_clip=float(rec["update_clip"]),
        round_seed=bytes(rec["round_seed"]), identity_keys=dict(identity_keys), public=public,
        client_noise=ClientNoise(**noise) if noise else None, prox_mu=float(rec["prox_mu"]),
        guarantee=json.loads(str(rec["guarantee"])),
    )


def _wire_list(msgs: Sequence[Any] | None) -> list[bytes]:
    return [m.encode() if hasattr(m, "encode") else bytes(m) for m in (msgs or [])]


# -- node side ------------------------------------------------------------------------------
@dataclasses.dataclass
class Party:
    """What a node needs to take part: the engine party (a :class:`fl.hospital.Hospital`, a key
    holder, ...), the identity keys of ITS roster, Paillier's key setup if any (or a function returning
    it), ``save`` (called after every training, e.g. to persist the ledger) and ``vault`` (a private
    directory on the node: the session's role is saved there after every message, so it survives a
    fresh ClientApp process; see the module docstring)."""

    party: Any
    identity_keys: Mapping[int, bytes]
    public: Any = None
    save: Callable[[], None] | None = None
    vault: Any = None


class EngineNode:
    """The node side of :class:`FlowerTransport`: ``EngineNode(load_party).register(app)``.

    ``load_party(context) -> Party`` is called once per process and node (cached).
    """

    def __init__(self, load_party: Callable[[Context], Party]):
        self.load_party = load_party
        self._parties: dict[str, Party] = {}

    def register(self, app: ClientApp) -> ClientApp:
        app.train(ACTION)(self.handle)
        return app

    def _party(self, context: Context) -> tuple[str, Party]:
        key = f"{context.run_id}/{context.node_id}"
        if key not in self._parties:
            self._parties[key] = self.load_party(context)
        return key, self._parties[key]

    def handle(self, msg: Message, context: Context) -> Message:
        from fedvault.dp.errors import PrivacyError
        from fedvault.protocols.errors import ProtocolError

        rec = msg.content.config_records.get(RECORD)
        if rec is None:
            return Message(Error(REFUSED, "fedvault/refused: not a fedvault engine message"), reply_to=msg)
        stage = str(rec["stage"])
        try:
            key, p = self._party(context)
            out: dict[str, Any] = {"stage": stage, "name": str(p.party.name)}
            if stage == "hello":
                out["party"] = int(getattr(p.party, "party", -1))
                if callable(getattr(p.party, "public_info", None)):  # what the hospital releases about itself
                    out["info"] = json.dumps(p.party.public_info(), default=float)
            elif stage == "ask":
                reason = p.party.refusal(int(rec["round"]))
                if p.save is not None:
                    p.save()
                if reason is not None:
                    return Message(Error(REFUSED, f"fedvault/budget: {reason}"), reply_to=msg)
            elif stage == "ledger":
                pass  # the ledger is attached below
            elif stage == "standardise":
                if not callable(getattr(p.party, "standardise", None)):
                    raise ProtocolError("this party takes no feature standardisation")
                plan = json.loads(str(rec["plan"]))
                p.party.standardise(plan)  # checks it against the party's own config, applies it to its records
                context.state[STANDARDISATION] = ConfigRecord({"plan": json.dumps(plan)})  # a fresh process re-applies
            elif stage == "join":
                setup = setup_from(msg.content, p.identity_keys, p.public() if callable(p.public) else p.public)
                token = bytes(rec["session"])
                try:
                    role = p.party.join(setup)  # trains (and charges the ledger) once per session
                finally:
                    if p.save is not None:
                        p.save()
                out["wire"] = _wire_list(role.start())
                self._keep(key, p, token, role)
            elif stage == "step":
                token = bytes(rec["session"])
                role = self._live(key, p, token) or self._restore(p, token)
                if role is None:
                    raise ProtocolError("the client role of this session is not in this process and was not "
                                        "saved (role lost); the party leaves the session")
                out["wire"] = _wire_list(role.receive(bytes(rec["wire"])))
                if getattr(role, "done", False):
                    self._forget(key, p, context, token)
                    out["done"] = True  # the role is gone: the server need not send this node "end"
                else:
                    self._keep(key, p, token, role)
            elif stage == "end":
                self._forget(key, p, context, bytes(rec["session"]))
            elif stage == "personalise":
                w = np.asarray(msg.content.array_records[MODEL]["w"].numpy(), dtype=np.float64)
                metrics = p.party.personalize(w, int(rec["round"])) if hasattr(p.party, "personalize") else {}
                if p.save is not None:
                    p.save()
                out["metrics"] = json.dumps(metrics, default=float)
            else:
                raise ProtocolError(f"unknown fedvault engine stage {stage!r}")
            if stage in ("ask", "join", "ledger", "personalise"):
                ledger = getattr(p.party, "ledger", None)
                if ledger is not None:  # the ε the hospital reports (history's epsilon and privacy sections)
                    out["ledger"] = json.dumps(ledger.to_dict(), default=str)
            return Message(RecordDict({RECORD: ConfigRecord(out)}), reply_to=msg)
        except PrivacyError as e:
            return Message(Error(REFUSED, f"fedvault/budget: {e}"), reply_to=msg)
        except Exception as e:  # noqa: BLE001 - ProtocolError, SetupRejected (an FLError), ...: the party leaves
            key = f"{context.run_id}/{context.node_id}"
            token = bytes(rec.get("session", b"") or b"")
            if token:
                self._forget(key, self._parties.get(key), context, token)
            return Message(Error(REFUSED, f"fedvault/refused: {type(e).__name__}: {e}"), reply_to=msg)

    @staticmethod
    def _state(p: Party, token: bytes) -> Any:
        from pathlib import Path

        d = Path(p.vault)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d / f"{token.hex()}.state"

    @staticmethod
    def _stamp(path: Any) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _live(self, key: str, p: Party, token: bytes) -> Any:
        """This process's live role, unless another process of the node saved a newer one since."""
        role = _ROLES.get((key, token))
        if role is not None and p.vault is not None and (key, token) in _SAVED \
                and self._stamp(self._state(p, token)) != _SAVED[(key, token)]:
            return None  # stale: restore what the other process saved
        return role

    def _keep(self, key: str, p: Party, token: bytes, role: Any) -> None:
        """Keep the role live, and saved in the party's vault before the reply leaves."""
        _ROLES[(key, token)] = role
        _SAVED.pop((key, token), None)
        if p.vault is None:
            return
        try:
            path = self._state(p, token)
            snapshot.save(path, role)
            stamp = self._stamp(path)
            if stamp is not None:
                _SAVED[(key, token)] = stamp
        except snapshot.SnapshotError as e:  # e.g. a reproducible (seeded) run: live in this process only
            log(WARNING, "fedvault: %s; this session's role lives in this process only", e)

    def _restore(self, p: Party, token: bytes) -> Any:
        """The role a previous process saved (a SuperNode may start one process per message)."""
        if p.vault is None:
            return None
        try:
            return snapshot.load(self._state(p, token))
        except snapshot.SnapshotError as e:
            log(WARNING, "fedvault: %s", e)
            return None

    def _forget(self, key: str, p: Party | None, context: Context, token: bytes) -> None:
        _ROLES.pop((key, token), None)
        _SAVED.pop((key, token), None)
        if p is not None and p.vault is not None:
            snapshot.forget(self._state(p, token))


# -- server side ----------------------------------------------------------------------------
class FlowerTransport:
    """:class:`fl.engine.Transport` over a Flower Grid (see the module docstring).

    grid
        The ServerApp's Grid.
    roster
        The contributing parties' names (hospitals and extra participants).
    timeout
        Seconds each exchange waits; a party silent that long has dropped.
    train_timeout
        Seconds the join exchange waits (the hospitals train then); default ``timeout``.
    poll_interval
        The longest wait between polls for replies (Flower's simulation Grid pulls every 0.1 s): an
        exchange polls again after 5 ms, each wait 1.5 times the last up to this (replies that come
        quickly are collected quickly, a long stage is not polled hard, and a stage overruns its
        replies by at most a third of its time).
    """

    def __init__(self, grid: Grid, roster: Sequence[str], *, timeout: float = 60.0, train_timeout: float | None = None,
                 poll_interval: float = 0.1, on_stage: Callable[[int, str, str], None] | None = None) -> None:
        self.grid = grid
        self._roster = list(roster)
        self.timeout = float(timeout)
        self.train_timeout = float(train_timeout or timeout)
        self.poll = float(poll_interval)
        self.on_stage = on_stage
        self.nodes: dict[str, int] = {}
        self.info: dict[str, dict[str, Any]] = {}  # what each party released about itself at hello
        self.ledgers: dict[str, dict[str, Any]] = {}  # each party's ledger as it last reported it
        self._discover()

    # -- messaging ----------------------------------------------------------------------
    def _msg(self, node: int, fields: dict, extra: RecordDict | None = None, group: str = "") -> Message:
        rd = RecordDict({RECORD: ConfigRecord(fields)})
        if extra is not None:
            for k, v in extra.items():
                rd[k] = v
        return wire.instruction(rd, node, MESSAGE_TYPE, group)

    def _exchange(self, outbox: Mapping[int, Message], timeout: float) -> dict[int, Message]:
        """Send, then collect replies until all arrived or ``timeout`` passed: ``{node: reply}``."""
        if not outbox:
            return {}
        ids = {mid: node for mid, node in zip(self.grid.push_messages(list(outbox.values())), outbox) if mid}
        end = time.monotonic() + timeout
        out: dict[int, Message] = {}
        pending = set(ids)
        wait = min(0.005, self.poll)
        while pending:
            for r in self.grid.pull_messages(list(pending)):
                mid = r.metadata.reply_to_message_id
                if mid in pending:
                    pending.discard(mid)
                    out[ids[mid]] = r
            if not pending or time.monotonic() >= end:
                break
            time.sleep(wait)
            wait = min(1.5 * wait, self.poll)
        return out

    def _discover(self) -> None:
        nodes = list(self.grid.get_node_ids())
        replies = self._exchange({n: self._msg(n, {"stage": "hello"}) for n in nodes}, self.timeout)
        for node, r in replies.items():
            if r.has_error():
                log(WARNING, "fedvault: node %s cannot take part: %s", node, r.error.reason)
            else:
                rec = r.content.config_records[RECORD]
                self.nodes[str(rec["name"])] = node
                if "info" in rec:
                    self.info[str(rec["name"])] = json.loads(str(rec["info"]))

    def _note(self, r: Message) -> None:
        """Keep the ledger a party attached to its reply."""
        if r.has_error():
            return
        rec = r.content.config_records.get(RECORD)
        if rec is not None and "ledger" in rec:
            self.ledgers[str(rec["name"])] = json.loads(str(rec["ledger"]))

    def refresh_ledgers(self) -> dict[str, dict[str, Any]]:
        """Ask every party for its ledger now (e.g. when the study stops); returns the latest of each."""
        nodes = {self.nodes[n]: n for n in self._roster if n in self.nodes}
        for r in self._exchange({node: self._msg(node, {"stage": "ledger"}) for node in nodes}, self.timeout).values():
            self._note(r)
        return dict(self.ledgers)

    def standardise(self, plan: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
        """Send the study's feature standardisation (public) to ``names``; returns ``{name: why}`` for
        the parties that did not apply it."""
        nodes = {self.nodes[n]: n for n in names if n in self.nodes}
        body = json.dumps({k: list(v) for k, v in plan.items()})
        replies = self._exchange({node: self._msg(node, {"stage": "standardise", "plan": body}) for node in nodes},
                                 self.timeout)
        out = {n: "no Flower node serves this party" for n in names if n not in self.nodes}
        for node, n in nodes.items():
            r = replies.get(node)
            if r is None:
                out[n] = "no reply"
            elif r.has_error():
                out[n] = str(r.error.reason)
        return out

    # -- Transport ----------------------------------------------------------------------
    def roster(self) -> list[str]:
        return list(self._roster)

    def ask(self, round: int, names: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        replies = self._exchange({self.nodes[n]: self._msg(self.nodes[n], {"stage": "ask", "round": int(round)})
                                  for n in names if n in self.nodes}, self.timeout)
        back = {v: k for k, v in self.nodes.items()}
        for n in names:
            if n not in self.nodes:
                out[n] = "no Flower node serves this party"
        for node, r in replies.items():
            self._note(r)
            if r.has_error():
                out[back[node]] = str(r.error.reason).removeprefix("fedvault/budget: ")
        return out

    def run_session(self, setup: Any, server: Any) -> Any:
        from fedvault.fl.engine import SessionOutcome
        from fedvault.protocols.driver import impersonation
        from fedvault.protocols.errors import AbortError, ProtocolError

        token = os.urandom(16)
        back = {pid: n for n, pid in setup.parties.items()}
        node_of = {pid: self.nodes[n] for n, pid in setup.parties.items() if n in self.nodes}
        name_of_node = {node: back[pid] for pid, node in node_of.items()}
        refused: dict[str, str] = {n: "no Flower node serves this party" for n in setup.parties if n not in self.nodes}
        up_b: dict[str, int] = {}
        down_b: dict[str, int] = {}
        server_s = 0.0
        t_wall = time.perf_counter()
        rd = setup_record(setup)
        if self.on_stage:
            self.on_stage(setup.round, setup.purpose, "join")
        t_join = time.perf_counter()
        replies = self._exchange({node: self._msg(node, {"stage": "join", "session": token}, rd, str(setup.round))
                                  for node in node_of.values()}, self.train_timeout)
        train_s = time.perf_counter() - t_join
        alive: set[int] = set()
        dropped: dict[str, list[str]] = {}
        first = server.stage.value
        server_refused: dict[str, list[str]] = {}

        def up(node: int, r: Message, stage: str | None = None) -> None:
            nonlocal server_s
            name = name_of_node[node]
            if r.has_error():  # the party refused to join (a fedvault refusal), or left the session (dropped)
                reason = str(r.error.reason)
                if stage is None and reason.startswith("fedvault/"):
                    refused.setdefault(name, reason.split(": ", 1)[-1])
                elif name not in dropped.setdefault(stage or first, []):  # e.g. Flower: the node is unavailable
                    dropped[stage or first].append(name)
                alive.discard(node)
                return
            for data in r.content.config_records[RECORD].get("wire", []):
                data = bytes(data)
                up_b[name] = up_b.get(name, 0) + len(data)
                forged = impersonation(data, setup.parties[name])  # the node's channel says who sent it
                if forged is not None:
                    server_refused.setdefault(name, []).append(forged)
                    continue
                t = time.perf_counter()
                try:
                    server.receive(data)
                except ProtocolError as e:  # refused and attributed to its sender; the session goes on
                    server_refused.setdefault(name, []).append(f"{type(e).__name__}: {e}")
                finally:
                    server_s += time.perf_counter() - t

        for node in node_of.values():
            if node in replies:
                alive.add(node)
                self._note(replies[node])
                up(node, replies[node])
            else:
                dropped.setdefault(first, []).append(name_of_node[node])
        aborted = None
        finished: set[int] = set()  # nodes whose client role finished (and was forgotten) on their side
        try:
            while not server.done:
                t = time.perf_counter()
                try:
                    outbox = {i: (m.encode() if hasattr(m, "encode") else bytes(m)) for i, m in server.advance().items()}
                finally:
                    server_s += time.perf_counter() - t
                if server.done and not outbox:
                    break
                stage = server.stage.value
                if self.on_stage:
                    self.on_stage(setup.round, setup.purpose, stage)
                msgs = {}
                for pid, data in outbox.items():
                    node = node_of.get(pid)
                    if node is None or node not in alive:
                        continue
                    down_b[back[pid]] = down_b.get(back[pid], 0) + len(data)
                    msgs[node] = self._msg(node, {"stage": "step", "session": token, "wire": data}, None,
                                           str(setup.round))
                got = self._exchange(msgs, self.timeout)
                for node in msgs:
                    if node in got:
                        if not got[node].has_error() and got[node].content.config_records[RECORD].get("done"):
                            finished.add(node)
                        if not server.done:
                            up(node, got[node], stage)
                    else:
                        alive.discard(node)
                        dropped.setdefault(stage, []).append(name_of_node[node])
        except AbortError as e:
            aborted = str(e)
        finally:  # every node forgets the session's role (those whose role finished already did)
            self._exchange({node: self._msg(node, {"stage": "end", "session": token}) for node in alive - finished},
                           self.timeout)
        total, contributors, guarantee, individual, res = None, [], None, None, None
        if aborted is None:
            res = server.result()
            total = np.asarray(res.total, dtype=np.float64)
            contributors = [back[i] for i in res.contributors]
            guarantee = res.guarantee or None
            for s, ids in (res.dropped or {}).items():
                for i in ids:
                    if i in back and not any(back[i] in v for v in dropped.values()):  # once, at the first stage
                        dropped.setdefault(s, []).append(back[i])
            vecs = getattr(server, "individual_vectors", None)
            if vecs is not None:
                individual = {back[i]: np.asarray(v) for i, v in vecs().items()}
        blamed: dict[str, list[str]] = {}  # messages the server refused / misbehaviour, by sender
        attributed = [{back[i]: list(v) for i, v in (getattr(server, "blame", {}) or {}).items() if i in back}]
        if aborted is None:
            attributed.append({back[i]: list(v) for i, v in (res.refused or {}).items() if i in back})
        attributed.append(server_refused)
        for src in attributed:
            for n, reasons in src.items():
                for why in reasons:
                    if why not in blamed.setdefault(n, []):
                        blamed[n].append(why)
        wall = time.perf_counter() - t_wall
        seconds = {"train": train_s, "server": server_s, "wall": wall, "session": wall}
        return SessionOutcome(total=total, contributors=contributors, refused=refused, dropped=dropped,
                              upload_bytes={n: b for n, b in up_b.items() if setup.parties[n] in setup.contributors},
                              download_bytes=down_b, seconds=seconds, aborted=aborted, individual=individual,
                              guarantee=guarantee, blamed={n: v for n, v in blamed.items() if v})

    def personalise(self, weights: np.ndarray, round: int) -> dict[str, dict[str, Any]]:
        rd = RecordDict({MODEL: ArrayRecord({"w": Array(np.asarray(weights, dtype=np.float64))})})
        nodes = {self.nodes[n]: n for n in self._roster if n in self.nodes}
        replies = self._exchange({node: self._msg(node, {"stage": "personalise", "round": int(round)}, rd)
                                  for node in nodes}, self.train_timeout)
        out = {}
        for node, r in replies.items():
            self._note(r)
            if not r.has_error():
                m = json.loads(str(r.content.config_records[RECORD]["metrics"]))
                if m:
                    out[nodes[node]] = m
        return out
