"""An in-process :class:`flwr.serverapp.Grid`: a ServerApp's messages run a ClientApp per node.

Flower's only public simulation engine (``flwr.simulation.run_simulation``) starts
Ray, which takes tens of seconds on a small machine.  :class:`InProcessGrid`
implements Flower's public ``Grid`` interface instead: every pushed message is
delivered (as a copy, like a wire would) to the destination node's
:class:`~flwr.clientapp.ClientApp` with that node's :class:`~flwr.app.Context`, and
the reply is kept until it is pulled.  Each node keeps one ``Context`` for the whole
run, as a SuperNode does, so ``Context.state`` persists between messages.

It is the transport of fedvault's Flower tests and benchmarks and of
the examples' ``simulate`` modules; ``flwr run`` (Flower's simulation runtime or a
real deployment) runs exactly the same ServerApp and ClientApp code.

A node can be made to vanish (:meth:`InProcessGrid.kill`): messages to it are then
never answered, as if its SuperNode had died; ``on_push(grid, messages)`` runs
before each push (tests use it to kill a node when a given stage starts).
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any, Callable, Iterable, Mapping

from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

SERVER_NODE_ID = 1



class InProcessGrid(Grid):
    """A :class:`~flwr.serverapp.Grid` whose nodes are ClientApps called in this process.

    client_app
        The ClientApp every node runs.
    node_configs
        ``{node_id: node_config}`` — one entry per node (node ids must not be 0 or 1).
    run_config
        The run config every node's Context gets (the ServerApp's is separate).
    run_id
        The run id of every Context and message.
    on_push
        ``(grid, messages) -> None`` called before messages are delivered.
    fresh_process
        Forget every ClientApp-process cache before each delivery, as when a SuperNode starts
        a fresh process per message (the node's disk and ``Context.state`` persist).
    """

    def __init__(self, client_app: ClientApp, node_configs: Mapping[int, Mapping[str, Any]], *,
                 run_config: Mapping[str, Any] | None = None, run_id: int = 1,
                 on_push: Callable[["InProcessGrid", list[Message]], None] | None = None,
                 fresh_process: bool = False):
        self.app = client_app
        self.run_id = run_id
        self.on_push = on_push
        self.fresh_process = fresh_process
        self.contexts = {
            int(n): Context(run_id=run_id, node_id=int(n), node_config=dict(cfg), state=RecordDict(),
                            run_config=dict(run_config or {}))
            for n, cfg in node_configs.items()
        }
        if {0, SERVER_NODE_ID} & set(self.contexts):
            raise ValueError("node ids 0 and 1 are reserved")
        self.dead: set[int] = set()
        self.replies: dict[str, Message] = {}
        self.client_seconds = 0.0  # time spent inside ClientApps (what parallel nodes would overlap)
        self._run: Any = None

    @classmethod
    def simulation(cls, client_app: ClientApp, num_nodes: int, **kw: Any) -> "InProcessGrid":
        """Nodes ``10, 11, ...`` with Flower's simulation node config (``partition-id``, ``num-partitions``)."""
        return cls(client_app, {10 + k: {"partition-id": k, "num-partitions": num_nodes} for k in range(num_nodes)},
                   **kw)

    # -- Grid -----------------------------------------------------------------------------
    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        from . import wire

        return wire.instruction(content, dst_node_id, message_type, group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.dead]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        if self.on_push is not None:
            self.on_push(self, messages)
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            ids.append(mid)
            node = msg.metadata.dst_node_id
            if node not in self.contexts:
                raise ValueError(f"no node {node} in this grid")
            if node in self.dead:
                continue
            md = msg.metadata
            delivered = Message(
                content=copy.deepcopy(msg.content),
                metadata=Metadata(run_id=self.run_id, message_id=mid, src_node_id=SERVER_NODE_ID, dst_node_id=node,
                                  reply_to_message_id="", group_id=md.group_id, created_at=time.time(),
                                  ttl=md.ttl, message_type=md.message_type),
            )
            if self.fresh_process:
                _forget_process_caches()
            t = time.perf_counter()
            try:
                reply = self.app(delivered, self.contexts[node])
            except Exception as e:  # noqa: BLE001 - a SuperNode answers a raising ClientApp with an error
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(e).__name__}: {e}"), reply_to=delivered)
            self.client_seconds += time.perf_counter() - t
            if node in self.dead:  # killed while it worked: the reply is lost
                continue
            self.replies[mid] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))

    # -- failures -------------------------------------------------------------------------
    def kill(self, node_id: int) -> None:
        """The node vanishes: it answers nothing from now on."""
        self.dead.add(int(node_id))


def _forget_process_caches() -> None:
    """What a fresh ClientApp process would not have: fedvault's in-memory protocol roles."""
    import sys

    for name, attr in (("fedvault.fl.integrations.flower.mod", "_LIVE"),
                       ("fedvault.fl.integrations.flower.transport", "_ROLES")):
        mod = sys.modules.get(name)
        if mod is not None:
            getattr(mod, attr).clear()


class FlowerInProcess:
    """A study's parties behind Flower nodes in this process: ``federate(cfg, transport=flower_in_process)``.

    Every party (hospital, extra participant, Paillier key holder) gets its own node — a plain
    ClientApp with :class:`~fl.integrations.flower.transport.EngineNode` — on an
    :class:`InProcessGrid`, and the engine talks to them through
    :class:`~fl.integrations.flower.transport.FlowerTransport`: the same study as the in-memory
    simulation, every message through Flower's Message API.  Simulation harness: the nodes take the
    roster's identity keys and the study's key setup from the first session (the simulation's key
    ceremony), and ``dropout`` is not simulated.  ``fresh_process=True`` makes every message start
    from a fresh ClientApp process (roles restored from each node's vault under ``vault_root``).
    """

    def __init__(self, parties: Mapping[str, Any], *, roster: list[str], dropout: float = 0.0, seed: int = 0,
                 fresh_process: bool = False, vault_root: Any = None, timeout: float = 60.0) -> None:
        from pathlib import Path

        from .transport import EngineNode, FlowerTransport, Party

        self.names = sorted(parties)
        self.keys: dict[int, bytes] = {}
        self.public: Any = None

        def load(ctx: Context) -> Party:
            name = self.names[ctx.node_id - 10]
            vault = Path(vault_root) / name if vault_root is not None else None
            return Party(parties[name], self.keys, lambda: self.public, vault=vault)

        app = ClientApp()
        EngineNode(load).register(app)
        self.grid = InProcessGrid(app, {10 + k: {} for k in range(len(self.names))}, fresh_process=fresh_process)
        self.transport = FlowerTransport(self.grid, roster, timeout=timeout)

    def roster(self) -> list[str]:
        return self.transport.roster()

    def ask(self, round: int, names: Any) -> dict[str, str]:
        return self.transport.ask(round, names)

    def run_session(self, setup: Any, server: Any) -> Any:
        self.keys.update(setup.identity_keys)
        self.public = setup.public
        return self.transport.run_session(setup, server)

    def personalise(self, weights: Any, round: int) -> dict[str, dict[str, Any]]:
        return self.transport.personalise(weights, round)


def flower_in_process(parties: Mapping[str, Any], **kw: Any) -> FlowerInProcess:
    """``federate(cfg, transport=flower_in_process)``: see :class:`FlowerInProcess`."""
    return FlowerInProcess(parties, **kw)
