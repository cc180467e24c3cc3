"""Flower's own SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) vs fedvault's Flower plug-in,
on the same Flower app in Flower's simulation engine (Ray).

    python -m benchmarks flower [--quick] [--n 20] [--dim 1000000] [--drops 0 3]
    python -m benchmarks flower --parity [--rounds R] [--key-bits B]   (simulation vs Flower, every mode)

The app: ``n`` virtual SuperNodes, each contributing a fixed random vector of ``dim``
values in [-1, 1] (no training: only aggregation is compared).  Dropped clients fail in
their training call, which both protocols place after the key sharing, so the server
must reconstruct their pairwise masks.  Both use a sparse SecAgg+ graph: Flower with
``num_shares`` = fedvault's sparse degree (rounded up to odd) and a majority threshold.

Measured per configuration (one round each; wall clock on a shared 2-core machine):
``server_s``  seconds the server spends outside message exchange (protocol work:
keys, shares, unmasking, decoding), i.e. round time minus time inside the grid calls;
``round_s``  the whole secure round as seen by the ServerApp;  ``ratio`` Flower/fedvault.
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


def _vector(partition: int, dim: int) -> np.ndarray:
    return np.random.default_rng(partition).uniform(-1.0, 1.0, dim)


# ----------------------------------------------------------------------------- Flower's SecAgg+
def flower_apps(n: int, dim: int, drops: set[int], shares: int, out: dict, threshold: int,  # noqa: ANN201
                graph: str = "sparse"):
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
        ctx = LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strategy)
        if graph == "complete":  # Flower's SecAgg: every client shares with all others
            wf = SecAggWorkflow(reconstruction_threshold=threshold, timeout=600)
        else:
            wf = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=min(threshold, shares), timeout=600)

        def fit(g, c) -> None:  # noqa: ANN001
            acc: dict = {}
            t = time.perf_counter()
            wf(_TimedGrid(g, acc), c)
            out["round_s"] = time.perf_counter() - t
            out["server_s"] = out["round_s"] - acc.get("grid", 0.0)

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
                  graph: str = "sparse"):
    from flwr.app import Array, ArrayRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from fedvault.fl.integrations.flower import FedVaultMod, Registry, SecAggConfig, secure_round
    from fedvault.fl.integrations.flower.workflow import discover

    node = lambda ctx: root / f"node-{int(ctx.node_config['partition-id'])}"  # noqa: E731
    site = lambda ctx: _SyntheticSite(int(ctx.node_config["partition-id"]), dim, drops)  # noqa: E731
    client = ClientApp()
    # the nodes insist on the adversary the server's parameters are derived from (a node never takes the server's
    # claim; undeclared, it would insist on the complete graph's default where a small sparse round falls back to it)
    from fedvault.protocols.secagg.threat import ThreatModel

    own = ThreatModel(colluders=(threat or ThreatModel()).max_colluders(n, graph))
    FedVaultMod(site, node, threads=1, threat_model=own).register(client)

    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:  # noqa: ANN001
        while len(list(grid.get_node_ids())) < n:
            time.sleep(0.2)
        acc: dict = {}
        cfg = SecAggConfig(clip=1.0, graph=graph, stage_timeout=600, min_clients=2, threads=2, threat_model=threat)
        weights = ArrayRecord({"w": Array(np.zeros(dim - 1, np.float32))})
        registry = Registry.load(root / "registry.json")
        members = discover(grid, registry)  # once per run, like Flower's own node discovery: not timed
        t = time.perf_counter()
        res = secure_round(_TimedGrid(grid, acc), registry, cfg, round=1, weights=weights, members=members)
        out["round_s"] = time.perf_counter() - t
        out["server_s"] = out["round_s"] - sum(res.stage_seconds.values())
        out["protocol_server_s"] = res.server_seconds
        expect = sum(_vector(k, dim) for k in range(n) if k not in drops)
        out["max_abs_error"] = float(np.max(np.abs(res.total - expect)))
        out["survivors"] = len(res.survivors)
        out["stage_s"] = {k: round(v, 2) for k, v in res.stage_seconds.items()}

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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 6, d = 1e4")
    ap.add_argument("--parity", action="store_true",
                    help="the demo config in every aggregation mode: simulation vs Flower (accuracy, max ε, wall)")
    ap.add_argument("--rounds", type=int, default=None, help="--parity: override the demo's rounds")
    ap.add_argument("--key-bits", type=int, default=None, help="--parity: override Paillier's key size")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--dim", type=int, default=1_000_000)
    ap.add_argument("--drops", type=int, nargs="+", default=[0, 3])
    ap.add_argument("--graph", default="sparse", choices=["sparse", "complete"],
                    help="sparse: Flower's SecAgg+ vs fedvault's SecAgg+; complete: Flower's SecAgg vs fedvault's SecAgg")
    a = ap.parse_args(argv)
    if a.parity:
        return parity(a.rounds, a.key_bits)
    if a.quick:
        a.n, a.dim, a.drops = 6, 10_000, [0, 1]
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + paths)  # Ray workers import benchmarks.flower
    from fedvault.fl.integrations.flower import provision
    from fedvault.protocols.secagg import SecAggParams

    from benchmarks import _report

    from fedvault.protocols.secagg.threat import ThreatModel

    threat = ThreatModel(dropouts=max(a.drops))  # the adversary fedvault's parameters are derived from
    probe = SecAggParams(b"x", 0, tuple(range(1, a.n + 1)), graph=a.graph, threat_model=threat)
    degree, threshold = (probe.effective_degree if a.graph == "sparse" else a.n - 1), probe.t
    shares = degree + 1  # Flower counts the node itself among its num_shares; it wants an odd number
    shares = min(a.n, shares + 1 if shares % 2 == 0 else shares)
    rows = []
    for k in a.drops:
        drops = set(range(a.n - k, a.n))
        fl_out: dict = {}
        _simulate(*flower_apps(a.n, a.dim, drops, shares, fl_out, threshold, a.graph), a.n)
        with tempfile.TemporaryDirectory(prefix="fv-bench-") as tmp:
            root = Path(tmp)
            provision(root, [f"hospital_{i}" for i in range(a.n)], dirs=[f"node-{i}" for i in range(a.n)])
            fv_out: dict = {}
            _simulate(*fedvault_apps(a.n, a.dim, drops, root, fv_out, threat, a.graph), a.n)
        row = {"graph": a.graph, "n": a.n, "d": a.dim, "dropped": k,
               "flower_server_s": fl_out.get("server_s"), "fedvault_server_s": fv_out.get("server_s"),
               "server_ratio": (fl_out["server_s"] / fv_out["server_s"]) if fl_out.get("server_s") and fv_out.get("server_s") else None,
               "flower_round_s": fl_out.get("round_s"), "fedvault_round_s": fv_out.get("round_s"),
               "round_ratio": (fl_out["round_s"] / fv_out["round_s"]) if fl_out.get("round_s") and fv_out.get("round_s") else None,
               "fedvault_protocol_server_s": fv_out.get("protocol_server_s"),
               "fedvault_max_abs_error": fv_out.get("max_abs_error"), "fedvault_survivors": fv_out.get("survivors"),
               "fedvault_stage_s": fv_out.get("stage_s"), "load_1min_after": round(os.getloadavg()[0], 1)}
        rows.append(row)
        print(row, flush=True)
    cols = ["graph", "n", "d", "dropped", "flower_server_s", "fedvault_server_s", "server_ratio", "flower_round_s",
            "fedvault_round_s", "round_ratio", "fedvault_protocol_server_s", "fedvault_max_abs_error"]
    md = (f"# Flower {'SecAgg+' if a.graph == 'sparse' else 'SecAgg'} vs fedvault's Flower plug-in "
          "(Flower's simulation engine, one round)\n\n"
          f"{a.graph} graph: fedvault degree {degree}, threshold {threshold} (threat model: {threat}); Flower "
          f"num_shares {shares if a.graph == 'sparse' else a.n}, reconstruction threshold "
          f"{min(threshold, shares) if a.graph == 'sparse' else threshold}. "
          "server_s = round time minus time inside Flower grid calls.\n\n" + _report.markdown_table(rows, cols) + "\n")
    if not a.quick:
        _report.write("flower" if a.graph == "sparse" else "flower_complete", {"machine": _report.machine(), "rows": rows, "fedvault_degree": degree,
                                 "fedvault_threshold": threshold,
                                 "flower_num_shares": shares}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
