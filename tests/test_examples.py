"""Every example config in examples/ loads and runs (2 rounds; small Paillier keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedvault.fl.config import load
from fedvault.fl.simulation import run_federation

# Configs with an [audit] section belong to `fedvault audit` (tested in test_audit_*).
# examples/<app>/fedvault.toml: a Flower app's study, which `fedvault run` also runs.
_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(p for p in [*_DIR.glob("*.toml"), *_DIR.glob("*/fedvault.toml")] if "[audit]" not in p.read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(_DIR).with_suffix("")) for p in EXAMPLES])
def test_example_config_runs(path):
    cfg = load(path)
    if cfg.training.rounds > 2:
        cfg = cfg.replace(training={"rounds": 2})
    if cfg.aggregation.mode == "paillier":
        cfg = cfg.replace(aggregation={"key_bits": 512})  # safe-prime generation at 2048 bits takes minutes
    h = run_federation(cfg, baseline=False)
    assert h["rounds"], h.get("stopped")
    assert all(r["participants"] or r.get("aborted") for r in h["rounds"])


def test_there_are_examples():
    assert len(EXAMPLES) >= 5
