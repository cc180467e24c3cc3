"""``python -m benchmarks NAME [options]``: run one benchmark (``--help`` lists them)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "round": "benchmarks.round",        # one FL round: plaintext vs masked (issue 2)
    "secagg": "benchmarks.secagg",      # SecAgg/SecAgg+ protocol, vs Flower (issue 3)
    "paillier": "benchmarks.paillier",  # packed Paillier vs per-value phe (issue 4)
    "strategies": "benchmarks.strategies",  # FedAvg/FedProx/FedAdam + personalisation (issue 8)
    "flower": "benchmarks.flower",      # Flower's SecAgg+ vs fedvault's plug-in (issue 7)
    "audit": "benchmarks.audit",        # audit power: fault x seed -> flagged (issue 13.6)
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in BENCHMARKS:
        print("usage: python -m benchmarks {" + ",".join(BENCHMARKS) + "} [options]")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    mod = importlib.import_module(BENCHMARKS[argv[0]])
    return int(mod.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
