"""SecAgg / SecAgg+ protocol cost vs a plaintext float32 sum (issue 3, item 8).

    python -m benchmarks secagg [--quick] [--ns 10 20 100 1000] [--dims 100000 1000000]
                                [--dropouts 0 0.1 0.3] [--repeat 3] [--flower]

For every (n, d, dropout, graph) one full round runs in memory through
``protocols.secagg.simulate_round`` (wire bytes, signatures, Shamir, AES-CTR masks):
dropped clients vanish before sending their masked input, the most expensive case for
the server (it rebuilds their mask keys and removes their pairwise masks).  Reported:

* server seconds (median over repeats) and its ratio to a plaintext float32 sum of the
  same number of distinct d-vectors measured in the same run;
* the ratio's distance to the ~4x floor of self-masked SecAgg, and a measured floor
  (the uint32 sum plus regenerating one AES-CTR mask per survivor, same PRG code);
* client seconds (median and max over clients; every client is simulated);
* bytes uploaded / downloaded per client.

The sparse graph has degree about 2 log2 n.  With dropouts, the threshold is the
largest ``t <= floor(min_degree / 2) + 1`` that the dropout pattern leaves satisfiable
(an operator sizes ``t`` for the dropout rate it expects); it is reported per row.
The complete graph is skipped at n = 1000 (every client would expand 999 masks).

``--flower`` also times Flower's SecAgg+ at n = 20, d = 1e6 with 0 and 3 dropped, via
``benchmarks/_flower_secagg.py`` (Flower's public simulation engine; server seconds = round
time minus time inside Grid calls): with the flwr installed here, else in a separate
virtualenv (``.venv-flower``, flwr[simulation] 1.41.x, created on first use).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import markdown_table, write

ROOT = Path(__file__).resolve().parent.parent


def _plain_seconds(n: int, d: int, repeat: int) -> float:
    """Median seconds to add n distinct float32 d-vectors (cycling 64 so they exceed the caches)."""
    rng = np.random.default_rng(1)
    pool = [rng.standard_normal(d, dtype=np.float32) for _ in range(min(n, 64))]
    times = []
    for _ in range(repeat):
        acc = np.zeros(d, np.float32)
        t = time.perf_counter()
        for i in range(n):
            np.add(acc, pool[i % len(pool)], out=acc)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _floor_seconds(n: int, d: int, threads: int) -> float:
    """uint32 sum of n vectors + one AES-CTR self mask per vector (the self-masking floor)."""
    from fedvault.secagg.prg import MaskExpander

    rng = np.random.default_rng(2)
    pool = [rng.integers(0, 2**32, d, dtype=np.uint32) for _ in range(min(n, 64))]
    acc = np.zeros(d, np.uint32)
    ex = MaskExpander(d, 32, threads)
    t = time.perf_counter()
    for i in range(n):
        np.add(acc, pool[i % len(pool)], out=acc)
    ex.add_many(acc, [(i.to_bytes(32, "big"), b"self", -1) for i in range(n)])
    return time.perf_counter() - t


def _threshold_for(params_cls, base: dict, dropped: set[int]) -> int:
    """Largest t <= default such that every client keeps t live neighbours."""
    p = params_cls(**base)
    nb = p.neighbourhood.neighbours
    live = set(p.clients) - dropped
    worst = min(len(nb[i] & live) for i in p.clients)
    return max(1, min(p.t, worst))


def old_params(n: int, graph: str, dropped: set[int], d: int):
    """The pre-issue-12 parameters (degree 2*ceil(log2 n), majority threshold lowered to what
    the dropouts leave), rebuilt with ``insecure_test_only``: the cost baseline, NOT secure."""
    from fedvault.protocols.secagg import SecAggParams

    k = n - 1 if graph == "complete" else min(n - 1, 2 * math.ceil(math.log2(n)))
    k -= k % 2 if graph == "sparse" else 0
    rate = len(dropped) / n
    worst = min(len(dropped), math.ceil(k * rate + 4 * math.sqrt(k * rate * (1 - rate)) + 1)) if dropped else 0
    t = max(1, min(k // 2 + 1, k - worst))
    return SecAggParams(session_id=b"bench", round=0, clients=tuple(range(n)), graph=graph, bits=32, clip=1.0,
                        threshold=t, degree=k if graph == "sparse" else None, insecure_test_only=True, dim=d)


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of the process, all threads)


def run_case(n: int, d: int, rate: float, graph: str, repeat: int, threads: int, kind: str = "secure") -> dict[str, Any]:
    from fedvault.protocols.secagg import SecAggParams, simulate_round

    ids = tuple(range(n))
    k = int(round(rate * n))
    # Spread the dropped clients deterministically over the id range.
    dropped = {ids[(j * n) // k] for j in range(k)} if k else set()
    from fedvault.protocols.secagg import ThreatModel

    # Secure parameters: degree and threshold derived from the threat model (default colluders:
    # complete floor((n-1)/3), sparse 5%; the dropouts this case makes, at least 10% for sparse).
    tm = ThreatModel(dropouts=max(len(dropped), n // 10) if graph == "sparse" else len(dropped))
    if kind == "secure":
        from fedvault.secagg.errors import ParameterError

        try:
            params = SecAggParams(session_id=b"bench", round=0, clients=ids, graph=graph, bits=32, clip=1.0,
                                  threat_model=tm, dim=d)
        except ParameterError:  # the default colluders do not fit these dropouts: the most that do
            c = tm.max_colluders(n, graph)
            while True:
                c -= 1
                try:
                    params = SecAggParams(session_id=b"bench", round=0, clients=ids, graph=graph, bits=32,
                                          clip=1.0, threat_model=ThreatModel(colluders=c, dropouts=tm.dropouts),
                                          dim=d)
                    break
                except ParameterError:
                    if c <= 0:
                        raise
    else:
        params = old_params(n, graph, dropped, d)
    t = params.t
    rng = np.random.default_rng(d)
    pool = [rng.uniform(-1, 1, d) for _ in range(4)]
    inputs = {i: pool[i % 4] for i in ids}
    server, cmed, cmax, results = [], [], [], None
    for r in range(repeat):
        res = simulate_round(params, inputs, drop={"masked_input": sorted(dropped)}, seed=bytes([r]) * 32,
                             threads=threads, clock=CLOCK)
        server.append(res.server_seconds)
        cs = sorted(res.client_seconds[i] for i in res.survivors)
        cmed.append(statistics.median(cs))
        cmax.append(cs[-1])
        results = res
    assert results is not None
    expect = sum(pool[i % 4] for i in results.survivors)
    err = float(np.max(np.abs(results.total - expect)))
    assert err <= params.encoder.error_bound(len(results.survivors)) + 1e-9, err
    plain = _plain_seconds(len(results.survivors), d, max(3, repeat))
    floor = _floor_seconds(len(results.survivors), d, threads)
    s = statistics.median(server)
    surv = results.survivors[0]
    return {
        "params": kind, "n": n, "d": d, "dropout": rate, "graph": graph, "threshold": t,
        "degree": params.effective_degree, "guarantee": params.guarantee().line(),
        "dropped": len(dropped),
        "server_s": s, "plain_f32_sum_s": plain, "ratio_to_plain": s / plain,
        "distance_to_4x_floor": (s / plain) / 4.0,
        "measured_floor_s": floor, "ratio_to_measured_floor": s / floor,
        "client_median_s": statistics.median(cmed), "client_max_s": statistics.median(cmax),
        "upload_bytes_per_client": results.upload_bytes[surv],
        "download_bytes_per_client": results.download_bytes[surv],
        "max_abs_error": err,
    }


# -- Flower --------------------------------------------------------------------------------
FLOWER_VENV = ROOT / ".venv-flower"


def _flower_python() -> Path:
    import importlib.util

    if importlib.util.find_spec("flwr") is not None:  # the Flower extra is installed here (./run)
        return Path(sys.executable)
    py = FLOWER_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "flwr[simulation]==1.41.0"], check=True)
    return py


def run_flower(n: int, d: int, dropped: int, repeat: int) -> dict[str, Any]:
    py = _flower_python()
    out = subprocess.run(
        [str(py), str(Path(__file__).parent / "_flower_secagg.py"), str(n), str(d), str(dropped), str(repeat)],
        check=True, capture_output=True, text=True, cwd=str(ROOT),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks secagg")
    ap.add_argument("--ns", type=int, nargs="+", default=[10, 20, 100, 1000])
    ap.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--graphs", nargs="+", default=["sparse", "complete"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="n in {10, 20}, d = 1e4, one repeat")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: report CPU seconds (all threads of the process) instead of wall seconds; on a shared, "
                         "loaded machine wall seconds measure the other jobs too")
    ap.add_argument("--old", action="store_true",
                    help="also time the pre-issue-12 (insecure) parameters in the same run, as a cost baseline")
    ap.add_argument("--flower", action="store_true", help="also run Flower's SecAgg+ (n=20, d=1e6, 0 and 3 dropped)")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.quick:
        args.ns, args.dims, args.repeat = [10, 20], [10_000], 1
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    load_before = os.getloadavg()
    rows = []
    for d in args.dims:
        for n in args.ns:
            for rate in args.dropouts:
                for graph, kind in [(g, k) for g in args.graphs for k in (("secure", "old") if args.old else ("secure",))]:
                    if graph == "complete" and n > 100:
                        continue
                    if kind == "old" and n >= 1000 and rate == 0:
                        continue  # (the baseline's most expensive row is the one with dropouts)
                    reps = 1 if n >= 1000 else args.repeat
                    row = run_case(n, d, rate, graph, reps, args.threads, kind)
                    rows.append(row)
                    print(f"{kind:6s} n={n:5d} d={d:8d} drop={rate:.0%} {graph:8s} k={row['degree']} t={row['threshold']:3d} "
                          f"server={row['server_s']:.3f}s ({row['ratio_to_plain']:.1f}x plain) "
                          f"client={row['client_median_s'] * 1e3:.1f}ms up={row['upload_bytes_per_client']}",
                          flush=True)

    flower = []
    if args.flower:
        fd = 10_000 if args.quick else 1_000_000
        for k in (0, 3):
            f = run_flower(20, fd, k, 1 if args.quick else args.repeat)
            ours = run_case(20, fd, k / 20, "sparse", 1 if args.quick else args.repeat, args.threads)
            flower.append({"n": 20, "d": fd, "dropped": k, "flower_server_s": f["server_s"],
                           "fedvault_server_s": ours["server_s"], "speedup": f["server_s"] / ours["server_s"],
                           "flower_version": f.get("flwr")})
            print(f"flower n=20 d={fd} dropped={k}: flower {f['server_s']:.3f}s vs fedvault {ours['server_s']:.3f}s", flush=True)

    cols = ["params", "n", "d", "dropout", "graph", "degree", "threshold", "server_s", "plain_f32_sum_s", "ratio_to_plain",
            "distance_to_4x_floor", "ratio_to_measured_floor", "client_median_s", "client_max_s",
            "upload_bytes_per_client", "download_bytes_per_client"]
    md = ["# SecAgg / SecAgg+ benchmark", "",
          "Server and client seconds for one in-memory round (median over repeats; n = 1000 runs once); "
          "dropped clients vanish before their masked input. `ratio_to_plain` = server / plaintext float32 "
          "sum of the survivors' vectors in the same run; `distance_to_4x_floor` = ratio / 4; "
          "`ratio_to_measured_floor` = server / (uint32 sum + one AES-CTR mask per survivor). "
          f"Threads per party: {args.threads}. Clock: "
          + ("CPU seconds of the process (all threads), so other jobs on the machine do not count; on 2 idle cores "
             "the wall time is between CPU/2 and CPU." if args.clock == "cpu" else "wall seconds.") + "", "",
          markdown_table(rows, cols)]
    md += ["", "## Guarantees of the secure rows (`SecAggParams.guarantee().line()`)", ""]
    seen = set()
    for r in rows:
        if r["params"] == "secure" and r["guarantee"] not in seen:
            seen.add(r["guarantee"])
            md.append(f"- n = {r['n']}, {r['graph']}, dropout {r['dropout']:.0%}: {r['guarantee']}")
    if any(r["params"] == "old" for r in rows):
        md += ["", "`old` rows: the pre-issue-12 parameters (degree about 2 log2 n, majority threshold) rebuilt "
               "with `insecure_test_only=True` on today's protocol, as a cost baseline only — they are not secure."]
    if flower:
        md += ["", "## Flower SecAgg+ (server seconds, same run)", "",
               markdown_table(flower, ["n", "d", "dropped", "flower_server_s", "fedvault_server_s", "speedup", "flower_version"])]
    load_after = os.getloadavg()
    md.insert(3, f"Machine load average (1, 5, 15 min) before: {tuple(round(x, 2) for x in load_before)}, "
                 f"after: {tuple(round(x, 2) for x in load_after)} (other jobs share the 2 cores when it is above ~1).\n")
    name = "secagg" if not args.quick else "secagg_quick"
    write(name, {"rows": rows, "flower": flower, "threads": args.threads,
                 "loadavg_before": load_before, "loadavg_after": load_after}, "\n".join(md), args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
