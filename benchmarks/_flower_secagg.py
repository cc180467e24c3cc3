"""Time Flower's own SecAgg+ with public Flower APIs only: run by ``benchmarks/secagg.py --flower``
(in this environment when flwr is installed here, else in the separate ``.venv-flower``; it
never imports fedvault).

    python benchmarks/_flower_secagg.py N D DROPPED REPEAT

Runs Flower's real ``SecAggPlusWorkflow`` (every client shares with all others: ``num_shares``
= N, reconstruction threshold ceil(N / 2)) against ``ClientApp``s wrapped in Flower's
``secaggplus_mod``, in Flower's public simulation engine (``flwr.simulation.run_simulation``,
Ray) — the same app as ``benchmarks/flower.py`` (:func:`benchmarks.flower.flower_apps`).
One simulation runs REPEAT + 1 rounds; the first (Flower starting its client actors) is not
counted.  ``DROPPED`` clients fail in their training call, which Flower places after the share-keys stage
(before their masked vector), like fedvault's benchmark.  Server seconds = workflow wall time
minus the time spent inside the Grid's exchange calls (Flower's own message passing and its
clients' work).  Prints one JSON line: ``{"server_s": median, "wall_s": median, "flwr": version, ...}``.

(Before: an in-memory Grid called the ClientApps directly, which needs Flower's private
``flwr.supercore.task_identity.TaskIdentity`` set by hand: Flower's workflows build their
messages from it, and only Flower's runtimes set it.)
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(n: int, d: int, dropped: int, repeat: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + paths)  # Ray workers import benchmarks.flower
    import flwr

    from benchmarks.flower import _simulate, flower_apps

    drops = set(range(n - dropped, n))
    out: dict = {}
    # one simulation, REPEAT measured rounds after a warm-up round (the first starts Flower's client actors)
    _simulate(*flower_apps(n, d, drops, n, out, math.ceil(n / 2), rounds=repeat + 1), n)
    rounds = out.get("rounds", [])[1:]
    if len(rounds) < repeat:
        raise RuntimeError("Flower's SecAgg+ rounds did not complete (see Flower's log above)")
    times, walls = [r["server_s"] for r in rounds], [r["round_s"] for r in rounds]
    return {"server_s": statistics.median(times), "wall_s": statistics.median(walls), "n": n, "d": d,
            "dropped": dropped, "flwr": flwr.__version__,
            "method": "Flower's simulation engine; round time minus time inside Grid calls"}


if __name__ == "__main__":
    n, d, dropped, repeat = (int(a) for a in sys.argv[1:5])
    print(json.dumps(main(n, d, dropped, repeat)))
