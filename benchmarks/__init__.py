"""fedvault benchmarks: ``python -m benchmarks NAME`` (or ``./run bench NAME``).

Each benchmark writes ``benchmarks/results/NAME.json`` and ``NAME.md`` and measures
the ratios it reports side by side in one run.
"""
