"""The client side: a Flower Mod that trains with DP-SGD and joins fedvault's SecAgg(+).

Usage (the one line a Flower user adds; plain messages still reach their own
``@app.train()``)::

    app = ClientApp(mods=[FedVaultMod(load_site)])

``load_site(context) -> Site`` builds the hospital's local step (normally a
:class:`~fl.integrations.flower.site.HospitalSite`: DP-SGD charged to the persistent
ledger in the node directory).  For every fedvault message the mod:

``enrol``
    asks the site whether it takes part (privacy budget).  A hospital over budget
    answers with a Flower error (``MOD_FAILED_PRECONDITION``, reason
    ``fedvault/budget: ...``) and records the refusal in its ledger; the server
    carries on without it.
``advertise``
    checks the round's public parameters against the node's policy (it is in the
    cohort; the cohort has at least ``min_cohort`` members of *its own* registry;
    the threshold is a strict majority of the smallest neighbourhood), creates the
    round's secret seed in the node vault and answers with its signed keys.
``share`` / ``consistency`` / ``unmask``
    rebuilds the :class:`protocols.secagg.Client` state machine by replaying the
    public server messages kept in ``Context.state`` under the vault seed, and
    hands it the new message.
``masked_input``
    checks the state machine really awaits the forwarded shares, then trains on the
    global model that came with them (DP-SGD, ledger charged), encodes and masks the
    update and answers with the masked vector.

Any refusal of the state machine (replay, bad signature, threshold, double reveal,
...) answers with a Flower error ``fedvault/refused: ...`` and burns the round's
seed, so the round cannot be resumed on this node.  Secrets never enter a Flower
record, ``Context.state`` or a log line: see :mod:`fl.integrations.flower.node`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message
from flwr.common.constant import ErrorCode

from fedvault.dp.errors import PrivacyError
from fedvault.protocols.errors import ProtocolError, RefusedError
from fedvault.protocols.secagg.messages import ForwardedShares, decode
from fedvault.protocols.secagg import Client, ClientStage, SecAggParams
from fedvault.secagg.errors import SecAggError
from fedvault.secagg.prg import DeterministicRandom

from . import wire
from .node import NodeDir, NodeSetupError

if TYPE_CHECKING:
    from .site import Site

log = logging.getLogger("fedvault.flower")

REFUSED = ErrorCode.MOD_FAILED_PRECONDITION


class PolicyError(RefusedError):
    """The server proposed round parameters this node's policy does not accept."""


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


def check_policy(params: SecAggParams, node: NodeDir, min_cohort: int) -> None:
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


class FedVaultMod:
    """Flower Mod running fedvault's DP-SGD + SecAgg(+) client (see the module docstring).

    site
        ``context -> Site``; called for ``enrol`` and ``masked_input`` only.
    node_dir
        ``context -> path`` of the node directory (default :func:`node_dir_from_context`).
    min_cohort
        Smallest cohort this hospital accepts (default 3).
    threads
        Threads for mask expansion.
    """

    def __init__(self, site: Callable[[Context], "Site"], node_dir: Callable[[Context], Path] | None = None, *,
                 min_cohort: int = 3, threads: int = 1):
        self.site = site
        self.node_dir = node_dir or node_dir_from_context
        self.min_cohort = min_cohort
        self.threads = threads

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
        if stage == wire.ENROL:
            site = self.site(context)
            reason = site.refusal(rnd)
            if reason is not None:
                from fedvault.dp.errors import BudgetExceeded

                raise BudgetExceeded(reason, client=site.name, round=rnd)
            return Message(wire.reply(stage, rnd, node.client), reply_to=msg)
        if stage == "advertise":
            params = wire.params_from(rec)
            check_policy(params, node, self.min_cohort)
            self._forget(context)  # a new round replaces whatever was left of an old one
            seed = node.vault.create(params.session_tag, params.round)
            client = self._client(params, node, seed)
            out = client.advertise()
            state = dict(wire.params_record(params))
            state.update(round=params.round, transcript=[])
            context.state.config_records[wire.STATE] = ConfigRecord(state)
            return Message(wire.reply(stage, rnd, node.client, out.encode()), reply_to=msg)
        if stage not in wire.STAGES:
            raise NodeSetupError(f"unknown fedvault stage {stage!r}")
        st = context.state.config_records.get(wire.STATE)
        if st is None:
            raise NodeSetupError("this node holds no round in progress (no advertise seen)")
        params = wire.params_from(st)
        data = bytes(rec["wire"])
        transcript = [bytes(b) for b in st["transcript"]]
        client = self._client(params, node, node.vault.get(params.session_tag, params.round))
        client.advertise()
        for past in transcript:
            if client.stage is ClientStage.AWAIT_SHARES:
                client.set_input(np.zeros(client.dim))  # the real input only shaped the masked vector
            client.receive(past)
        if stage == "masked_input":
            incoming = decode(data)
            if not isinstance(incoming, ForwardedShares) or client.stage is not ClientStage.AWAIT_SHARES:
                raise PolicyError("masked-input stage without pending forwarded shares; not training")
            weights = wire.flatten(msg.content.array_records[wire.WEIGHTS])
            if weights.shape[0] + 1 != params.dim:
                raise PolicyError(f"global model has {weights.shape[0]} values; the round expects {params.dim - 1}")
            client.set_input(self.site(context).fit(weights, rnd))
        out = client.receive(data)
        if client.stage is ClientStage.DONE:
            self._forget(context, node, params)  # burn before answering: nothing can be revealed twice
        else:
            st["transcript"] = transcript + [data]
        return Message(wire.reply(stage, rnd, node.client, out[0].encode()), reply_to=msg)

    # -- helpers ------------------------------------------------------------------------
    def _client(self, params: SecAggParams, node: NodeDir, seed: bytes) -> Client:
        rng = DeterministicRandom(seed, b"fedvault/flower/client")
        return Client(params, node.client, node.identity(), node.registry.identity_keys(), rng, threads=self.threads)

    def _forget(self, context: Context, node: NodeDir | None = None, params: SecAggParams | None = None) -> None:
        st = context.state.config_records.get(wire.STATE)
        if st is None:
            return
        try:
            params = params or wire.params_from(st)
            node = node or NodeDir(self.node_dir(context))
            node.vault.burn(params.session_tag, params.round)
        except (NodeSetupError, SecAggError, ValueError, KeyError):
            pass
        del context.state.config_records[wire.STATE]
