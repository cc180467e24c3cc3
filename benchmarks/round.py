"""One federated round's aggregation: plaintext vs masked (SecAgg), side by side.

    python -m benchmarks round [--quick] [--hospitals 10] [--dims 100000 1000000] [--repeat 3]

For each model size d, every hospital's weighted update ``[n_k·Δ_k, n_k]`` (length d+1)
is aggregated by the ``plaintext`` aggregator (float sum) and by the ``masked``
aggregator (the full SecAgg protocol driven in memory: key agreement, Shamir shares,
AES-CTR masks, unmasking), through the same ``fl.aggregation`` code the federation
uses. Reported: median seconds per round for each, their ratio, the protocol's server
seconds, and bytes uploaded per hospital. Local training is left out: it is the same
in both modes.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._report import markdown_table, median_seconds, write


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks round")
    ap.add_argument("--hospitals", type=int, default=10)
    ap.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="d = 1e4 only, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.dims, args.repeat = [10_000], 1

    from fedvault.fl.aggregation import PlaintextAggregator, SecAggAggregator
    from fedvault.fl.config import from_dict

    names = [f"hospital_{i}" for i in range(args.hospitals)]
    rows = []
    for d in args.dims:
        rng = np.random.default_rng(d)
        n = rng.integers(40, 120, size=len(names))
        inputs = {
            k: np.concatenate([nk * rng.normal(0, 0.01, size=d), [float(nk)]]) for k, nk in zip(names, n)
        }
        clip = 128.0 * 10.0
        expected = np.sum(list(inputs.values()), axis=0)
        plain = PlaintextAggregator()
        cfg = from_dict({"aggregation": {"mode": "masked"}})
        masked = SecAggAggregator(cfg, names)
        r = 0

        def run_plain():
            return plain.aggregate(1, inputs, clip=clip)

        def run_masked():
            nonlocal r
            r += 1
            return masked.aggregate(r, inputs, clip=clip)

        res_m = run_masked()
        err = float(np.max(np.abs(res_m.total - expected)))
        t_plain = median_seconds(run_plain, args.repeat)
        t_masked = median_seconds(run_masked, args.repeat)
        rows.append(
            {
                "d": d,
                "hospitals": len(names),
                "plaintext_s": t_plain,
                "masked_s": t_masked,
                "ratio": t_masked / t_plain,
                "masked_server_s": res_m.seconds.get("server", float("nan")),
                "plaintext_bytes_per_hospital": (d + 1) * 4,
                "masked_bytes_per_hospital": int(np.mean(list(res_m.upload_bytes.values()))),
                "max_abs_error": err,
            }
        )
        print(rows[-1], flush=True)
    cols = list(rows[0])
    md = "# One round: plaintext vs masked aggregation\n\n" + markdown_table(rows, cols)
    md += (
        "\nmasked_s covers the whole SecAgg protocol for all hospitals run in one process "
        "(every client's work plus the server's); masked_server_s is the server's share.\n"
    )
    jp, mp = write("round", {"rows": rows, "args": vars(args)}, md)
    print(md)
    print(f"wrote {jp} and {mp}")
    return 0
