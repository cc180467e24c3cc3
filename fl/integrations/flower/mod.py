"""The client side: DP-SGD plus fedvault's SecAgg(+) behind one Flower handler.

Usage (what a Flower user adds to a plain ClientApp; their own ``@app.train()``
and ``@app.evaluate()`` keep working)::

    app = ClientApp()
    FedVaultMod(load_site).register(app)

:meth:`FedVaultMod.register` adds the handler for fedvault's messages (type
``"train.fedvault"``); the object is also a Flower Mod (``ClientApp(mods=[mod])``)
for apps that route those messages themselves.  ``load_site(context) -> Site``
builds the hospital's local step (normally a
:class:`~fl.integrations.flower.site.HospitalSite`: DP-SGD charged to the
persistent ledger in the node directory).  For every fedvault message:

``enrol``
    answers which roster member this node is (client id, roster fingerprint).
``advertise``
    checks the round's public parameters against the node's own policy, never the
    server's claim (it is in the cohort; the cohort has at least ``min_cohort`` members
    of *its own* roster; the roster fingerprint is its own; the threshold and degree are
    safe against the node's OWN threat model — node config ``fedvault-colluders`` /
    ``fedvault-colluder-fraction`` / ``fedvault-security-bits`` / ``fedvault-config``,
    else fedvault's protocol default; see :func:`check_policy`); asks the site whether it takes part (privacy budget:
    ``fedvault/budget: ...``, refusal recorded in its ledger) and whether the
    proposal fits it (model size, clip: ``fedvault/misconfigured: ...``) — before
    anything is trained or charged; binds the session to the committed model hash
    (:func:`wire.bound_session`), refuses a (session, round) it already trained
    for, sweeps round secrets a crash left behind, creates the round's secret seed
    (fresh keys for every advertisement) in the node vault and answers with its
    signed keys.
``share`` / ``consistency`` / ``unmask``
    hands the message to the :class:`protocols.secagg.Client` state machine.
``masked_input``
    checks the state machine really awaits the forwarded shares and that the
    global model hashes to the committed value, marks the (session, round) as
    trained (a start marker that outlives the round: never twice), then trains (DP-SGD, ledger
    charged), encodes and masks the update and answers with the masked vector.

Protocol state between messages.  The live state machine stays in this process's
memory, keyed by (node directory, session tag, round), and is saved to the node's
vault after every message, before the reply leaves (:mod:`.snapshot`: atomic, 0600,
deleted when the round ends).  A process that serves the next message (Flower's
simulation runtime, :class:`~fl.integrations.flower.local.InProcessGrid`) uses the
live object; a fresh process (a SuperNode that starts one per message, or another Ray
actor) restores the saved one — nothing is replayed or recomputed.  If the saved state
is unusable the node rebuilds it from the vault seed and the public server messages
kept in ``Context.state`` (the same state: all of the client's randomness comes from
the seed).  Secrets never enter a Flower record, ``Context.state`` or a log line.

Any refusal of the state machine (replay, bad signature, threshold, double reveal,
...) answers with a Flower error ``fedvault/refused: ...`` and burns the round's
seed, so the round cannot be resumed on this node.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedvault.dp.errors import PrivacyError
from fedvault.protocols.errors import ProtocolError, RefusedError
from fedvault.protocols.secagg.messages import ForwardedShares, decode
from fedvault.protocols.secagg import Client, ClientStage, SecAggParams
from fedvault.secagg.errors import SecAggError
from . import snapshot, wire
from .node import NodeDir, NodeSetupError

if TYPE_CHECKING:
    from fedvault.fl.config import Config
    from fedvault.protocols.secagg.threat import ThreatModel
    from .site import Site

log = logging.getLogger("fedvault.flower")

REFUSED = ErrorCode.MOD_FAILED_PRECONDITION


class PolicyError(RefusedError):
    """The server proposed round parameters this node's policy does not accept."""


class MisconfiguredError(RefusedError):
    """The server's proposal does not fit this hospital (model size, clip); refused when the round is advertised, before training."""


class WeakParametersError(PolicyError, MisconfiguredError):
    """The server's SecAgg parameters are not safe against this node's own threat model; refused when the
    round is advertised, before anything is trained (reported to the server as ``fedvault/misconfigured``:
    the operator fixes the consortium's threat model, see :func:`check_policy`)."""


# Live client state machines of this process: (node dir, session tag, round) -> (client, messages seen).
_LIVE: dict[tuple[str, bytes, int], tuple[Client, int]] = {}


def node_dir_from_context(context: Context) -> Path:
    """``node_config["fedvault-dir"]`` (deployments), else ``run_config["fedvault-root"]/node-<partition-id>``
    (simulations, where every virtual node gets the same node_config keys)."""
    nc, rc = context.node_config, context.run_config
    if "fedvault-dir" in nc:
        return Path(str(nc["fedvault-dir"]))
    if "fedvault-root" in rc and "partition-id" in nc:
        return Path(str(rc["fedvault-root"])) / f"node-{int(nc['partition-id'])}"
    raise NodeSetupError("no fedvault node directory: start the SuperNode with --node-config "
                         "'fedvault-dir=\"/path/to/node\"' (or set run_config fedvault-root in simulations)")


#: Node-config keys a hospital declares its own policy with (never the server's run config).
NODE_CONFIG = "fedvault-config"  # path of the node's fedvault config file: its [threat_model], training.min_clients
NODE_COLLUDERS = "fedvault-colluders"
NODE_COLLUDER_FRACTION = "fedvault-colluder-fraction"
NODE_SECURITY_BITS = "fedvault-security-bits"
NODE_MIN_COHORT = "fedvault-min-cohort"
DEFAULT_MIN_COHORT = 3


def _node_file_config(context: Context) -> "Config | None":
    path = context.node_config.get(NODE_CONFIG)
    if path in (None, ""):
        return None
    from fedvault.fl.config import load
    from fedvault.fl.errors import FLError

    try:
        return load(Path(str(path)))
    except (FLError, OSError, ValueError) as e:
        raise NodeSetupError(f"node_config {NODE_CONFIG} = {str(path)!r} is not a usable fedvault config: {e}; "
                             "fix the file or the SuperNode's --node-config") from None


def node_threat_model(context: Context) -> "ThreatModel":
    """The adversary this hospital insists on, from its OWN node config — never from the server.

    ``node_config["fedvault-config"]`` names the node's fedvault config file (its
    ``[threat_model]``); ``fedvault-colluders`` / ``fedvault-colluder-fraction`` /
    ``fedvault-security-bits`` override single keys. A node that declares nothing gets
    fedvault's protocol default :class:`~fedvault.protocols.secagg.threat.ThreatModel`
    (complete graph ``C = (n-1)//3``, sparse 5 %, ``2^-40``): the same adversary as a
    ``fedvault run`` config without ``[threat_model]``.

    Raises:
        NodeSetupError: a key is malformed or the file is unusable (the message names it).
    """
    from fedvault.protocols.secagg.threat import ThreatModel
    from fedvault.secagg.errors import ParameterError

    nc = context.node_config
    cfg = _node_file_config(context)
    fields: dict[str, Any] = {}
    if cfg is not None:
        tm = cfg.threat_model.protocol()
        fields = {"colluders": tm.colluders, "colluder_fraction": tm.colluder_fraction,
                  "security_bits": tm.security_bits}
    try:
        if NODE_COLLUDERS in nc:
            fields.update(colluders=_int(nc[NODE_COLLUDERS], NODE_COLLUDERS), colluder_fraction=None)
        if NODE_COLLUDER_FRACTION in nc:
            fields.update(colluder_fraction=float(nc[NODE_COLLUDER_FRACTION]), colluders=None)
        if NODE_SECURITY_BITS in nc:
            fields.update(security_bits=_int(nc[NODE_SECURITY_BITS], NODE_SECURITY_BITS))
        if NODE_COLLUDERS in nc and NODE_COLLUDER_FRACTION in nc:
            raise ParameterError(f"declare either {NODE_COLLUDERS} or {NODE_COLLUDER_FRACTION}, not both")
        return ThreatModel(**fields)
    except (ParameterError, TypeError, ValueError) as e:
        raise NodeSetupError(f"this node's threat model (node_config {NODE_COLLUDERS} / {NODE_COLLUDER_FRACTION} / "
                             f"{NODE_SECURITY_BITS} / {NODE_CONFIG}) is malformed: {e}") from None


def node_min_cohort(context: Context) -> int:
    """The smallest cohort this hospital accepts, from its own node config: ``fedvault-min-cohort``
    (default 3), and at least ``max(2, training.min_clients)`` of the config file ``fedvault-config``."""
    least = _int(context.node_config.get(NODE_MIN_COHORT, DEFAULT_MIN_COHORT), NODE_MIN_COHORT)
    cfg = _node_file_config(context)
    if cfg is not None:
        least = max(least, 2, int(cfg.training.min_clients))
    return max(2, least)


def _int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise NodeSetupError(f"node_config {key} must be an integer, got {value!r}")


def check_policy(params: SecAggParams, node: NodeDir, min_cohort: int,
                 threat_model: "ThreatModel | None" = None) -> None:
    """Judge the server's proposed round against this node's own policy.

    Threat model: the parameters arrive from the server (``wire.params_from``), so their
    threat model is only the server's *claim* and is never taken. The node refuses
    test-only insecure parameters, a cohort below ``min_cohort`` or outside its roster,
    and any (graph, degree, threshold) that is not safe against ITS OWN ``threat_model``
    (default: fedvault's protocol default :class:`ThreatModel`) for the proposed cohort:
    complete graph ``2t > n - 1 + C``; sparse graph the tail bound at its own ``2^-sigma``
    (:func:`~fedvault.protocols.secagg.threat.derive` with the proposed degree and threshold
    fixed, so a threshold derived from a weaker claim is refused even when the server's
    numbers are self-consistent). Dropout tolerance is liveness, the server's business,
    and is not judged here; the sparse bound uses the list size the clients enforce
    (``params.min_members``).
    """
    from fedvault.protocols.secagg.threat import ThreatModel, derive
    from fedvault.secagg.errors import ParameterError

    if node.client not in params.clients:
        raise PolicyError(f"this node ({node.client}) is not in the proposed cohort")
    unknown = set(params.clients) - set(node.registry.members)
    if unknown:
        raise PolicyError(f"cohort names clients outside this node's registry: {sorted(unknown)[:5]}")
    if len(params.clients) < min_cohort:
        raise PolicyError(f"cohort of {len(params.clients)} is below this node's minimum of {min_cohort} "
                          "(a sum over too few hospitals says too much about each)")
    dmin = params.neighbourhood.min_degree()
    if 2 * params.t <= dmin:
        raise PolicyError(f"threshold {params.t} is not a strict majority of the smallest neighbourhood ({dmin})")
    g = params.guarantee()
    if g.insecure:
        raise PolicyError("the server proposes test-only insecure SecAgg parameters (insecure_test_only); "
                          "a deployed hospital never takes part in such a round")
    tm = threat_model if threat_model is not None else ThreatModel()
    n = len(params.clients)
    # a sparse proposal that fell back to the complete graph is judged as complete, against the larger of the
    # two default adversaries: the server's choice of graph must not weaken the node's default either
    want_c = max(tm.max_colluders(n, params.graph), tm.max_colluders(n, g.graph))
    sparse = g.graph == "sparse"
    mine = ThreatModel(colluders=want_c, dropouts=g.dropouts if sparse else None, security_bits=tm.security_bits,
                       correctness_bits=tm.correctness_bits)
    try:
        derive(g.graph, n, mine, threshold=params.t, degree=params.effective_degree if sparse else None)
    except ParameterError as e:
        raise WeakParametersError(
            f"the server's SecAgg parameters ({g.graph} graph, degree {params.effective_degree}, t = {params.t}, "
            f"derived from a claim of {g.colluders} colluders) are not safe against this node's threat model (a "
            f"server colluding with up to {want_c} of {n} hospitals, failure <= 2^-{tm.security_bits}): {e}. The "
            "server must use the consortium's [threat_model]; a node declares its own in its node config "
            f"({NODE_COLLUDERS}, {NODE_COLLUDER_FRACTION}, {NODE_SECURITY_BITS} or {NODE_CONFIG})") from None


class FedVaultMod:
    """Flower Mod running fedvault's DP-SGD + SecAgg(+) client (see the module docstring).

    site
        ``context -> Site``; called for ``enrol`` and ``masked_input`` only.
    node_dir
        ``context -> path`` of the node directory (default :func:`node_dir_from_context`).
    min_cohort
        Smallest cohort this hospital accepts, or ``context -> int``. Default None: the node's
        own config (:func:`node_min_cohort`: ``fedvault-min-cohort``, default 3, and the config
        file's ``training.min_clients``).
    threat_model
        The adversary this hospital insists on (:class:`~fedvault.protocols.secagg.threat.ThreatModel`,
        or ``context -> ThreatModel``). Default None: the node's OWN threat model from its node
        config (:func:`node_threat_model`: ``fedvault-colluders`` / ``fedvault-colluder-fraction`` /
        ``fedvault-security-bits`` / a ``fedvault-config`` file), else fedvault's protocol default
        ``ThreatModel()``. Never the server's claim: a round whose threshold is not safe against it
        is refused before anything is trained (:func:`check_policy`).
    threads
        Threads for mask expansion.
    """

    def __init__(self, site: Callable[[Context], "Site"], node_dir: Callable[[Context], Path] | None = None, *,
                 min_cohort: int | Callable[[Context], int] | None = None, threads: int = 1,
                 threat_model: "ThreatModel | Callable[[Context], ThreatModel] | None" = None):
        self.site = site
        self.node_dir = node_dir or node_dir_from_context
        self.min_cohort = node_min_cohort if min_cohort is None else min_cohort
        self.threat_model = node_threat_model if threat_model is None else threat_model
        self.threads = threads

    def register(self, app: ClientApp) -> ClientApp:
        """Add the handler of fedvault's messages (``train.fedvault``) to a plain ClientApp."""
        app.train(wire.ACTION)(self.handle)
        return app

    def handle(self, msg: Message, context: Context) -> Message:
        """Answer one fedvault message (the handler :meth:`register` adds)."""
        if not wire.is_fedvault(msg):
            return Message(Error(REFUSED, "fedvault/refused: not a fedvault message"), reply_to=msg)
        return self(msg, context, _unrouted)

    def __call__(self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if not wire.is_fedvault(msg):
            return call_next(msg, context)
        rec = msg.content.config_records[wire.RECORD]
        stage = str(rec["stage"])
        try:
            return self._handle(stage, rec, msg, context)
        except PrivacyError as e:
            log.info("fedvault: declined round %s: %s", rec.get("round"), e)
            return Message(Error(REFUSED, f"fedvault/budget: {e}"), reply_to=msg)
        except MisconfiguredError as e:
            log.warning("fedvault: round %s misconfigured: %s", rec.get("round"), e)
            return Message(Error(REFUSED, f"fedvault/misconfigured: {e}"), reply_to=msg)
        except (ProtocolError, SecAggError, NodeSetupError, ValueError) as e:
            self._forget(context)
            log.warning("fedvault: refused %s message: %s: %s", stage, type(e).__name__, e)
            return Message(Error(REFUSED, f"fedvault/refused: {type(e).__name__}: {e}"), reply_to=msg)
        except BaseException:
            self._forget(context)  # e.g. training crashed: this round cannot be resumed here
            raise

    # -- stages -------------------------------------------------------------------------
    def _handle(self, stage: str, rec: ConfigRecord, msg: Message, context: Context) -> Message:
        if int(rec["v"]) != wire.VERSION:
            raise NodeSetupError(f"fedvault Flower mapping version {rec['v']} is not {wire.VERSION}")
        rnd = int(rec["round"])
        node = NodeDir(self.node_dir(context))
        if stage == wire.ENROL:  # which roster member this node is (no site, no training)
            return Message(wire.reply(stage, rnd, node.client, roster=node.registry.fingerprint()), reply_to=msg)
        if stage == "advertise":
            if str(rec["roster"]) != node.registry.fingerprint():
                raise PolicyError("the server's roster is not the one this hospital installed")
            params = wire.params_from(rec)
            check_policy(params, node, self.min_cohort(context) if callable(self.min_cohort) else self.min_cohort,
                         self.threat_model(context) if callable(self.threat_model) else self.threat_model)
            site = self.site(context)  # before anything is claimed, trained or charged:
            reason = site.refusal(rnd)  # the hospital's budget ...
            if reason is not None:
                from fedvault.dp.errors import BudgetExceeded

                raise BudgetExceeded(reason, client=site.name, round=rnd)
            check_proposal(site, rec)  # ... and whether the proposal fits it
            self._forget(context)  # a new round replaces whatever was left of an old one
            stale = node.vault.sweep()
            if stale:
                log.warning("fedvault: removed %d round secret(s) left by an interrupted round", len(stale))
            if node.vault.started(bytes(rec["session"]), params.round):
                node.vault.claim(bytes(rec["session"]), params.round)  # raises: this round already trained here
            seed = node.vault.create(params.session_tag, params.round)
            client = self._client(params, node, seed)
            out = client.advertise()
            state = {k: rec[k] for k in rec.keys() if k not in ("v", "stage", "wire")}
            state.update(round=params.round, transcript=[])
            context.state.config_records[wire.STATE] = ConfigRecord(state)
            self._save(node, params, client, 0)
            return Message(wire.reply(stage, rnd, node.client, out.encode()), reply_to=msg)
        st = context.state.config_records.get(wire.STATE)
        if st is None:
            raise NodeSetupError("this node holds no round in progress (no advertise seen)")
        params = wire.params_from(st)
        data = bytes(rec["wire"])
        transcript = [bytes(b) for b in st["transcript"]]
        client = self._restore(node, params, transcript)
        if stage == wire.TRAIN:
            incoming = decode(data)
            if not isinstance(incoming, ForwardedShares) or client.stage is not ClientStage.AWAIT_SHARES:
                raise PolicyError("masked-input stage without pending forwarded shares; not training")
            arrays = msg.content.array_records[wire.WEIGHTS]
            if wire.model_hash(arrays) != bytes(st["model"]):
                raise PolicyError("the global model does not hash to the value committed for this round; not training")
            weights = wire.flatten(arrays)
            if weights.shape[0] + 1 != params.dim:
                raise PolicyError(f"global model has {weights.shape[0]} values; the round expects {params.dim - 1}")
            node.vault.claim(bytes(st["session"]), params.round)  # once per (session, round), before training
            cfg = msg.content.config_records.get(wire.CONFIG)
            client.set_input(_fit(self.site(context), weights, rnd, dict(cfg) if cfg is not None else {}))
        out = client.receive(data)
        if client.stage is ClientStage.DONE:
            self._forget(context, node, params)  # burn before answering: nothing can be revealed twice
        else:
            st["transcript"] = transcript + [data]
            self._save(node, params, client, len(transcript) + 1)
        return Message(wire.reply(stage, rnd, node.client, out[0].encode()), reply_to=msg)

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _key(node: NodeDir, params: SecAggParams) -> tuple[str, bytes, int]:
        return (str(node.path.resolve()), params.session_tag, params.round)

    def _restore(self, node: NodeDir, params: SecAggParams, transcript: list[bytes]) -> Client:
        """The live state machine of this round; in a fresh process the one saved after the last message
        (:mod:`.snapshot`); failing that, the same one rebuilt from the vault seed by replay."""
        live = _LIVE.get(self._key(node, params))
        if live is not None and live[1] == len(transcript):
            return live[0]
        path = node.vault.state_path(params.session_tag, params.round)
        try:
            saved = snapshot.load(path)
        except snapshot.SnapshotError as e:
            log.warning("fedvault: %s; rebuilding the round's state by replay", e)
            saved = None
        if isinstance(saved, dict) and saved.get("messages") == len(transcript) and isinstance(saved.get("client"), Client):
            client = saved["client"]
            client._identity = node.identity()  # the identity key is never in the saved state
            return client
        client = self._client(params, node, node.vault.get(params.session_tag, params.round))
        client.advertise()
        for past in transcript:
            if client.stage is ClientStage.AWAIT_SHARES:
                client.set_input(np.zeros(client.dim))  # the real input only shaped the masked vector
            client.receive(past)
        return client

    def _save(self, node: NodeDir, params: SecAggParams, client: Client, messages: int) -> None:
        """Save the state machine before the reply leaves (a fresh process continues from it)."""
        _LIVE[self._key(node, params)] = (client, messages)
        identity, client._identity = client._identity, None
        try:
            snapshot.save(node.vault.state_path(params.session_tag, params.round), {"client": client,
                                                                                   "messages": messages})
        except snapshot.SnapshotError as e:  # the vault seed and replay still restore it
            log.warning("fedvault: %s", e)
        finally:
            client._identity = identity

    def _client(self, params: SecAggParams, node: NodeDir, seed: bytes) -> Client:
        rng = snapshot.StreamRandom(seed, b"fedvault/flower/client")
        return Client(params, node.client, node.identity(), node.registry.identity_keys(), rng, threads=self.threads)

    def _forget(self, context: Context, node: NodeDir | None = None, params: SecAggParams | None = None) -> None:
        st = context.state.config_records.get(wire.STATE)
        if st is None:
            return
        try:
            params = params or wire.params_from(st)
            node = node or NodeDir(self.node_dir(context))
            node.vault.burn(params.session_tag, params.round)
            _LIVE.pop(self._key(node, params), None)
        except (NodeSetupError, SecAggError, ValueError, KeyError):
            pass
        del context.state.config_records[wire.STATE]


def _unrouted(msg: Message, context: Context) -> Message:
    return Message(Error(REFUSED, "fedvault/refused: not a fedvault message"), reply_to=msg)


def _fit(site: "Site", weights: np.ndarray, rnd: int, config: dict[str, Any]) -> np.ndarray:
    """``site.fit(weights, round, config)``; sites written before train configs take two arguments."""
    if len(inspect.signature(site.fit).parameters) >= 3:
        return site.fit(weights, rnd, config)
    return site.fit(weights, rnd)


def check_proposal(site: "Site", rec: ConfigRecord) -> None:
    """Refuse a round whose public proposal cannot carry this hospital's update (before training).

    The vector has ``dim`` values (the model plus the record count); every value a
    hospital may send must lie within the encoder's ``clip``.  A site that knows its
    bound (``max_abs(dim)``) is checked against it; the model size always is.
    """
    dim, clip = int(rec["dim"]), float(rec["clip"])
    size = getattr(site, "model_size", None)
    if size is not None and int(size) + 1 != dim:
        raise MisconfiguredError(f"the server's model has {dim - 1} values, this hospital's {int(size)}")
    bound = getattr(site, "max_abs", None)
    if bound is not None:
        need = float(bound())
        if need > clip:  # the exact bound reveals the record count: it stays in this hospital's log
            log.warning("fedvault: this hospital's update may reach %g per value; the server's clip is %g", need, clip)
            raise MisconfiguredError(
                f"this hospital's update does not fit the server's clip {clip:g}: set the server's clip to at least "
                "max-records x update-clip (the public bound on any hospital's records times the update clip)")
