"""Flower's own secure aggregation vs fedvault on Flower, side by side in one run of Flower's
simulation engine (Ray).

    python -m benchmarks flower [--quick] [--n 20] [--dim 1000000] [--drops 0 3]
                                [--graph sparse complete] [--paths engine legacy] [--repeat 3]
    python -m benchmarks flower --parity [--rounds R] [--key-bits B]   (simulation vs Flower, every mode)

Three apps per configuration, each with ``n`` virtual SuperNodes contributing a fixed random
vector of ``dim`` values in [-1, 1] (no training: only aggregation is compared):

``flower``  Flower's ``SecAggPlusWorkflow`` (``--graph sparse``; ``num_shares`` = fedvault's
            sparse degree + 1, rounded up to odd) or ``SecAggWorkflow`` (``--graph complete``)
            with ``secaggplus_mod`` clients (both workflows speak it);
``engine``  the production path: the round engine's ``FlowerTransport`` (server) and an
            ``EngineNode`` per node (``fl.integrations.flower.app``) whose party is a
            ``fl.hospital.VectorParticipant`` (the vector through a hospital's encoding and
            masking); setup and server role from ``fl.engine.open_session``;
``legacy``  the ``FedVaultMod`` + ``secure_round`` plug-in.

fedvault's parameters come from one declared threat model (the dropouts of ``--drops``, the
colluders the graph then tolerates), the same for the server and every node of both fedvault
paths.  Dropped clients leave after the key sharing, before their masked vector, so the server
must reconstruct their pairwise masks.  Both fedvault aggregates are checked against the exact
sum of the survivors' vectors (``*_max_abs_error``).

Every app runs ``--repeat`` rounds in one simulation (after node discovery, which is not
timed); a row reports the median round (Flower's first round also starts its client actors, so
it is slower than the next ones).  Measured (wall clock on a shared 2-core machine):
``server_s``  seconds the server spends outside message exchange (protocol work: keys, shares,
unmasking, decoding), i.e. round time minus time inside the exchanges (Flower's grid calls; the
engine's exchanges including their polling);  ``round_s``  the whole secure round as seen by the
ServerApp;  ``*_ratio`` Flower / fedvault (> 1: fedvault faster).  Results: ``results/flower.*``
(sparse) and ``results/flower_complete.*`` (complete); ``--quick`` (n = 6, d = 1e4) writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _timed(fn, acc: dict, key: str):  # noqa: ANN001, ANN202
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
    return wrapper


class _TimedGrid:
    """Forwards to a Flower Grid, adding up the seconds spent inside its exchange calls."""

    def __init__(self, grid: Any, acc: dict):
        self._grid, self._acc = grid, acc
        for name in ("send_and_receive", "push_messages", "pull_messages"):
            setattr(self, name, _timed(getattr(grid, name), acc, "grid"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


_MEDIAN = ("round_s", "server_s", "protocol_server_s")


def _record(out: dict, **row: Any) -> None:
    """One measured round: kept under ``out["rounds"]``; ``out[k]`` is the median over the rounds so far
    for the timings, the worst for ``max_abs_error``, the latest otherwise."""
    import statistics

    out.setdefault("rounds", []).append(row)
    for k, v in row.items():
        vals = [r[k] for r in out["rounds"] if r.get(k) is not None]
        if k in _MEDIAN and vals:
            out[k] = statistics.median(vals)
        elif k == "max_abs_error" and vals:
            out[k] = max(vals)
        else:
            out[k] = v


def _vector(partition: int, dim: int) -> np.ndarray:
    return np.random.default_rng(partition).uniform(-1.0, 1.0, dim)


# ----------------------------------------------------------------------------- Flower's SecAgg+
def flower_apps(n: int, dim: int, drops: set[int], shares: int, out: dict, threshold: int,  # noqa: ANN201
                graph: str = "sparse", rounds: int = 1):
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow, SecAggWorkflow
    from flwr.serverapp import ServerApp

    class Vec(NumPyClient):
        def __init__(self, partition: int):
            self.partition = partition

        def fit(self, parameters, config):  # noqa: ANN001, ANN201
            if self.partition in drops:
                raise RuntimeError("dropped")
            return [_vector(self.partition, dim).astype(np.float32)], 1, {}

    client = ClientApp(client_fn=lambda ctx: Vec(int(ctx.node_config["partition-id"])).to_client(),
                       mods=[secaggplus_mod])
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:  # noqa: ANN001
        strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0,
                          initial_parameters=ndarrays_to_parameters([np.zeros(dim, np.float32)]))
        ctx = LegacyContext(context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        if graph == "complete":  # Flower's SecAgg: every client shares with all others
            wf = SecAggWorkflow(reconstruction_threshold=threshold, timeout=600)
        else:
            wf = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=min(threshold, shares), timeout=600)

        def fit(g, c) -> None:  # noqa: ANN001
            acc: dict = {}
            t = time.perf_counter()
            wf(_TimedGrid(g, acc), c)
            wall = time.perf_counter() - t
            _record(out, round_s=wall, server_s=wall - acc.get("grid", 0.0))

        DefaultWorkflow(fit_workflow=fit)(grid, ctx)

    return server, client


# ----------------------------------------------------------------------------- fedvault
class _SyntheticSite:
    def __init__(self, partition: int, dim: int, drops: set[int]):
        self.partition, self.dim, self.drops = partition, dim, drops
        self.name, self.records = f"hospital_{partition}", 1

    def refusal(self, round: int) -> None:
        return None

    def fit(self, weights: np.ndarray, round: int) -> np.ndarray:
        if self.partition in self.drops:
            raise RuntimeError("dropped")
        return _vector(self.partition, self.dim)


def fedvault_apps(n: int, dim: int, drops: set[int], root: Path, out: dict, threat: Any = None,  # noqa: ANN201
                  graph: str = "sparse", rounds: int = 1):
    from flwr.app import Array, ArrayRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from fedvault.fl.integrations.flower import FedVaultMod, Registry, SecAggConfig, secure_round
    from fedvault.fl.integrations.flower.workflow import discover

    node = lambda ctx: root / f"node-{int(ctx.node_config['partition-id'])}"  # noqa: E731
    site = lambda ctx: _SyntheticSite(int(ctx.node_config["partition-id"]), dim, drops)  # noqa: E731
    client = ClientApp()
    # the nodes declare the same adversary as the server (a node never takes the server's claim)
    FedVaultMod(site, node, threads=1, threat_model=threat).register(client)

    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:  # noqa: ANN001
        while len(list(grid.get_node_ids())) < n:
            time.sleep(0.2)
        cfg = SecAggConfig(clip=1.0, graph=graph, stage_timeout=600, min_clients=2, threads=2, threat_model=threat)
        weights = ArrayRecord({"w": Array(np.zeros(dim - 1, np.float32))})
        registry = Registry.load(root / "registry.json")
        members = discover(grid, registry)  # once per run, like Flower's own node discovery: not timed
        expect = sum(_vector(k, dim) for k in range(n) if k not in drops)
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            res = secure_round(grid, registry, cfg, round=r, weights=weights, members=members)
            wall = time.perf_counter() - t
            _record(out, round_s=wall, server_s=wall - sum(res.stage_seconds.values()),  # stages: the exchanges
                    protocol_server_s=res.server_seconds, max_abs_error=float(np.max(np.abs(res.total - expect))),
                    survivors=len(res.survivors), stage_s={k: round(v, 2) for k, v in res.stage_seconds.items()})

    return server, client


# ----------------------------------------------------------------------------- fedvault's round engine
def engine_config(n: int, graph: str, threat: Any) -> Any:
    """The study config of the engine rows: SecAgg on ``graph``, the benchmark's threat model declared
    (the same one the legacy rows' server and nodes declare), no DP (fixed vectors, no training)."""
    from fedvault.fl.config import from_dict

    return from_dict({"data": {"hospitals": n}, "seed": 0, "privacy": {"enabled": False},
                      "aggregation": {"mode": "secagg", "graph": graph, "bits": 32},
                      "threat_model": {"colluders": threat.colluders, "dropouts": threat.dropouts}})


def _engine_ids(n: int) -> dict[str, int]:
    return {f"hospital_{k}": k + 1 for k in range(n)}


def engine_apps(n: int, dim: int, drops: set[int], root: Path, out: dict, threat: Any,  # noqa: ANN201
                graph: str = "sparse", rounds: int = 1):
    """The production Flower path: the round engine's :class:`FlowerTransport` on the server, an
    :class:`EngineNode` per SuperNode whose party is a :class:`fl.hospital.VectorParticipant`
    (the partition's fixed vector through a hospital's encoding and masking; no training).  A
    dropped node answers its share-keys step, then leaves when the forwarded shares arrive (before
    its masked input), like the dropped clients of the other two rows."""
    from flwr.app import Error, Message
    from flwr.clientapp import ClientApp
    from flwr.common.constant import ErrorCode
    from flwr.serverapp import ServerApp

    from fedvault.fl.engine import make_mode, open_session
    from fedvault.fl.hospital import VectorParticipant
    from fedvault.fl.integrations.flower.transport import ACTION, RECORD, EngineNode, FlowerTransport, Party
    from fedvault.fl.simulation import simulation_identities
    from fedvault.protocols.codec import decode
    from fedvault.protocols.secagg.messages import ForwardedShares
    from fedvault.secagg import keys as K

    cfg = engine_config(n, graph, threat)
    ids = _engine_ids(n)
    names = sorted(ids, key=ids.get)
    keys = {i: K.public_bytes(k) for i, k in simulation_identities(cfg, ids).items()}

    def load(ctx) -> Party:  # noqa: ANN001 - in the node's process: its simulation-only identity, fixed by the seed
        k = int(ctx.node_config["partition-id"])
        identity = simulation_identities(cfg, ids)[k + 1]
        party = VectorParticipant(names[k], k + 1, lambda r, w: _vector(k, dim), cfg, k, identity=identity)
        # the vault: a Ray actor other than the one that answered the last message restores the role from it
        return Party(party, keys, vault=root / f"vault-{k}")

    node = EngineNode(load)
    client = ClientApp()

    @client.train(ACTION)
    def handle(msg, ctx):  # noqa: ANN001, ANN202
        rec = msg.content.config_records.get(RECORD)
        if int(ctx.node_config["partition-id"]) in drops and rec is not None and str(rec["stage"]) == "step" \
                and isinstance(decode(bytes(rec["wire"])), ForwardedShares):
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "dropped"), reply_to=msg)
        return node.handle(msg, ctx)

    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:  # noqa: ANN001
        while len(list(grid.get_node_ids())) < n:
            time.sleep(0.2)
        transport = FlowerTransport(grid, names, timeout=600, train_timeout=600)  # node discovery: not timed
        acc: dict = {}
        transport._exchange = _timed(transport._exchange, acc, "grid")  # every exchange, its polling included
        mode = make_mode(cfg, ids)
        expect = sum(_vector(k, dim) for k in range(n) if k not in drops)
        for r in range(1, rounds + 1):
            acc.clear()
            t = time.perf_counter()
            setup, role = open_session(cfg, mode, r, "update", names, weights=np.zeros(dim - 1), clip=1.0,
                                       identity_keys=keys)
            res = transport.run_session(setup, role)
            wall = time.perf_counter() - t
            _record(out, round_s=wall, server_s=wall - acc.get("grid", 0.0),
                    protocol_server_s=res.seconds.get("server"), aborted=res.aborted,
                    max_abs_error=None if res.total is None else float(np.max(np.abs(res.total - expect))),
                    survivors=len(res.contributors), dropped={k: len(v) for k, v in res.dropped.items()},
                    degree=setup.params.effective_degree, threshold=setup.params.t)

    return server, client


def _simulate(server: Any, client: Any, n: int) -> None:
    from flwr.simulation import run_simulation

    run_simulation(server, client, num_supernodes=n, backend_config={"client_resources": {"num_cpus": 1}})


PARITY_MODES = {
    "plaintext": {"mode": "plaintext"},
    "secagg (complete)": {"mode": "secagg", "graph": "complete"},
    "secagg+ (sparse)": {"mode": "secagg", "graph": "sparse"},
    "paillier (holder)": {"mode": "paillier", "keys": "holder"},
    "paillier (threshold)": {"mode": "paillier", "keys": "threshold"},
}


def parity(rounds: int | None, key_bits: int | None) -> int:
    """The demo config (fl/configs/demo.toml) in every aggregation mode, through the in-memory simulation
    transport and through Flower messages (FlowerInProcess: every party behind its own Flower node)."""
    import copy

    from benchmarks import _report
    from fedvault.fl.config import from_dict, load, to_dict
    from fedvault.fl.integrations.flower.local import flower_in_process
    from fedvault.fl.simulation import federate

    base = to_dict(load(ROOT / "fl" / "configs" / "demo.toml"))
    rows = []
    for label, agg in PARITY_MODES.items():
        raw = copy.deepcopy(base)
        raw["aggregation"].update(agg)
        if agg["mode"] == "secagg":
            raw["aggregation"]["mode"] = "secagg"
        if key_bits and agg["mode"] == "paillier":
            raw["aggregation"]["key_bits"] = key_bits
        if rounds:
            raw["training"]["rounds"] = rounds
        cfg = from_dict(raw)
        row: dict[str, Any] = {"mode": label}
        for name, transport in (("simulation", None), ("flower", flower_in_process)):
            t = time.perf_counter()
            h = federate(cfg, baseline=False, transport=transport).history
            row[f"{name}_accuracy"] = round(float(h["final"]["metrics"]["accuracy"]), 4)
            eps = h["final"].get("max_epsilon")
            row[f"{name}_max_eps"] = None if eps is None else round(float(eps), 3)
            row[f"{name}_wall_s"] = round(time.perf_counter() - t, 1)
        row["load_1min"] = round(os.getloadavg()[0], 1)
        rows.append(row)
        print(row, flush=True)
    cols = ["mode", "simulation_accuracy", "flower_accuracy", "simulation_max_eps", "flower_max_eps",
            "simulation_wall_s", "flower_wall_s", "load_1min"]
    md = ("# The demo study, simulation vs Flower, every aggregation mode\n\n"
          f"fl/configs/demo.toml ({base['training']['rounds'] if not rounds else rounds} rounds, "
          f"{base['data']['hospitals']} hospitals); the Flower column runs the same engine with every party "
          "behind its own Flower node (FlowerInProcess: Flower's Message API through fedvault's InProcessGrid). "
          "Secret randomness: the two runs draw different DP noise, so accuracies differ by noise only; "
          "max ε is the same accounting.\n\n" + _report.markdown_table(rows, cols) + "\n")
    _report.write("flower_parity", {"machine": _report.machine(), "rows": rows}, md)
    print(md)
    return 0


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def compare(n: int, dim: int, drop_counts: list[int], graph: str, paths: list[str], rounds: int = 3) -> dict[str, Any]:
    """Flower's own protocol vs fedvault's ``paths`` ("engine", "legacy") on ``graph``, one row per drop count;
    every app runs ``rounds`` rounds in one simulation, a row reports the medians."""
    from fedvault.fl.integrations.flower import provision
    from fedvault.protocols.secagg import SecAggParams
    from fedvault.protocols.secagg.threat import ThreatModel

    # The adversary fedvault's parameters are derived from, declared the same by the server and every node of
    # both fedvault paths (a node refuses parameters weaker than its own threat model).
    dropouts = max(drop_counts)
    threat = ThreatModel(colluders=ThreatModel(dropouts=dropouts).max_colluders(n, graph), dropouts=dropouts)
    probe = SecAggParams(b"x", 0, tuple(range(1, n + 1)), graph=graph, threat_model=threat)
    degree, threshold = (probe.effective_degree if graph == "sparse" else n - 1), probe.t
    shares = degree + 1  # Flower counts the node itself among its num_shares; it wants an odd number
    shares = min(n, shares + 1 if shares % 2 == 0 else shares)
    rows = []
    for k in drop_counts:
        drops = set(range(n - k, n))
        fl_out: dict = {}
        _simulate(*flower_apps(n, dim, drops, shares, fl_out, threshold, graph, rounds), n)
        row: dict[str, Any] = {"graph": graph, "n": n, "d": dim, "dropped": k, "rounds": len(fl_out.get("rounds", [])),
                               "flower_server_s": fl_out.get("server_s"), "flower_round_s": fl_out.get("round_s"),
                               "flower_per_round": fl_out.get("rounds")}
        for path in paths:
            out: dict = {}
            with tempfile.TemporaryDirectory(prefix="fv-bench-") as tmp:
                root = Path(tmp)
                if path == "legacy":
                    provision(root, [f"hospital_{i}" for i in range(n)], dirs=[f"node-{i}" for i in range(n)])
                    _simulate(*fedvault_apps(n, dim, drops, root, out, threat, graph, rounds), n)
                else:
                    _simulate(*engine_apps(n, dim, drops, root, out, threat, graph, rounds), n)
            row.update({f"{path}_server_s": out.get("server_s"), f"{path}_round_s": out.get("round_s"),
                        f"{path}_server_ratio": _ratio(fl_out.get("server_s"), out.get("server_s")),
                        f"{path}_round_ratio": _ratio(fl_out.get("round_s"), out.get("round_s")),
                        f"{path}_protocol_server_s": out.get("protocol_server_s"),
                        f"{path}_max_abs_error": out.get("max_abs_error"), f"{path}_survivors": out.get("survivors"),
                        f"{path}_per_round": [{k: v for k, v in r.items() if k in _MEDIAN} for r in out.get("rounds", [])]})
            if path == "legacy":
                row["legacy_stage_s"] = out.get("stage_s")
            else:
                row["engine_aborted"] = out.get("aborted")
                row["engine_dropped"] = out.get("dropped")
        row["load_1min_after"] = round(os.getloadavg()[0], 1)
        rows.append(row)
        print(row, flush=True)
    return {"rows": rows, "threat_model": str(threat), "fedvault_degree": degree, "fedvault_threshold": threshold,
            "flower_num_shares": shares if graph == "sparse" else n,
            "flower_reconstruction_threshold": min(threshold, shares) if graph == "sparse" else threshold}


def report(res: dict[str, Any], graph: str, paths: list[str]) -> str:
    from benchmarks import _report

    cols = ["graph", "n", "d", "dropped", "rounds", "flower_server_s"]
    cols += [f"{p}_server_s" for p in paths] + [f"{p}_server_ratio" for p in paths] + ["flower_round_s"]
    cols += [f"{p}_round_s" for p in paths] + [f"{p}_round_ratio" for p in paths]
    cols += [f"{p}_max_abs_error" for p in paths] + ["load_1min_after"]
    flower = "SecAgg+ (SecAggPlusWorkflow)" if graph == "sparse" else "SecAgg (SecAggWorkflow)"
    return (f"# Flower's {flower} vs fedvault on Flower (Flower's simulation engine, median round)\n\n"
            f"{graph} graph: fedvault degree {res['fedvault_degree']}, threshold {res['fedvault_threshold']} "
            f"(threat model declared by server and nodes: {res['threat_model']}); Flower num_shares "
            f"{res['flower_num_shares']}, reconstruction threshold {res['flower_reconstruction_threshold']}. "
            "`engine`: the production path, the round engine's FlowerTransport + EngineNode (fl.integrations.flower."
            "app); `legacy`: the FedVaultMod + secure_round plug-in. server_s = round time minus time inside the "
            "exchanges (Flower's grid calls; the engine's exchanges with their polling); ratio = Flower / fedvault "
            "(> 1: fedvault faster); each app runs `rounds` rounds in one simulation and a row shows the median "
            "(per-round figures in the JSON). The dropped clients leave after sharing their keys, before their masked input. "
            "max_abs_error: fedvault's aggregate vs the exact sum of the survivors' vectors. Wall clock on a shared "
            "2-core machine (load_1min_after: 1-minute load average after the row).\n\n"
            + _report.markdown_table(res["rows"], cols) + "\n")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 6, d = 1e4 (results not written)")
    ap.add_argument("--parity", action="store_true",
                    help="the demo config in every aggregation mode: simulation vs Flower (accuracy, max ε, wall)")
    ap.add_argument("--rounds", type=int, default=None, help="--parity: override the demo's rounds")
    ap.add_argument("--key-bits", type=int, default=None, help="--parity: override Paillier's key size")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--drops", type=int, nargs="+", default=[0, 3])
    ap.add_argument("--graph", nargs="+", default=["sparse", "complete"], choices=["sparse", "complete"],
                    help="sparse: Flower's SecAgg+ vs fedvault's SecAgg+ (results/flower.*); complete: Flower's "
                         "SecAgg vs fedvault's SecAgg (results/flower_complete.*); default both")
    ap.add_argument("--paths", nargs="+", default=["engine", "legacy"], choices=["engine", "legacy"],
                    help="fedvault's Flower paths to run: the round engine (production) and the legacy plug-in")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds per app (one simulation each); the tables report the median round")
    a = ap.parse_args(argv)
    if a.parity:
        return parity(a.rounds, a.key_bits)
    if a.quick:
        a.n, a.dim, a.drops = 6, 10_000, [0, 1]
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + paths)  # Ray workers import benchmarks.flower
    from benchmarks import _report

    for graph in a.graph:
        res = compare(a.n, a.dim, a.drops, graph, a.paths, a.repeat)
        md = report(res, graph, a.paths)
        if not a.quick:
            _report.write("flower" if graph == "sparse" else "flower_complete", {**res, "paths": a.paths}, md)
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
