"""``flwr run`` on the shipped example, out of the box (Flower's managed local SuperLink and simulation
runtime, a throwaway demo consortium on Flower's default 2 simulated SuperNodes): the study of the example's
fedvault config runs on fedvault's round engine, its rounds and metrics are in Flower's log stream, history.json
is written; ``fedvault flower-run`` exits non-zero when the run fails (Flower's own ``flwr run`` exits 0 either
way), e.g. when no round completed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "flower"


def _stop_local_superlink(home: Path) -> None:
    """Kill the managed SuperLink `flwr` started for this FLWR_HOME (and what it started), by pid."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "flower-superlink" in cmd and str(home) in cmd:
            procs = [p, *p.children(recursive=True)]
            for q in procs:
                try:
                    q.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)


def test_flwr_run_on_the_example_completes(tmp_path):
    home = tmp_path / "flwr-home"
    home.mkdir()
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0", RAY_DEDUP_LOGS="0",
               PATH=os.pathsep.join([bindir, os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}
    cmd = [sys.executable, "-m", "fedvault.fl.integrations.flower", "flower-run", str(APP)]
    study = tmp_path / "study.toml"  # the example's study, one round (the test's budget)
    study.write_text((APP / "fedvault.toml").read_text().replace("rounds = 3", "rounds = 1"))
    history = tmp_path / "history.json"
    try:
        ok = subprocess.run([*cmd, "--run-config", f'fedvault-config="{study}" fedvault-history="{history}"'],
                            cwd=APP, env=env, capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
        out = ok.stdout
        assert "fedvault round 1 (update): unmask" in out and "fedvault round 1: 2 hospitals in the sum" in out
        assert "fedvault guarantee: secagg (complete graph" in out  # the guarantee the run gives, in the log
        assert "max ε" in out and "finished:completed" in out  # Flower's log stream
        import json

        (row,) = json.loads(history.read_text())["rounds"]
        assert row["participants"] == ["hospital_0", "hospital_1"] and row["protocol"] == "secagg"
        # No round completing (here: a budget no round fits in, every hospital refuses) makes the run fail,
        # and flower-run exit 1.
        broke = tmp_path / "broke.toml"
        broke.write_text(study.read_text().replace("target_epsilon = 3.0", "noise_multiplier = 0.5\nbudget_epsilon = 0.5"))
        bad = subprocess.run([*cmd, "--run-config", f'fedvault-config="{broke}"'], cwd=APP, env=env,
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-2000:]
        assert "finished:failed" in bad.stdout, bad.stdout[-3000:]
        assert "no round completed" in bad.stdout, bad.stdout[-3000:]
    finally:
        _stop_local_superlink(home)


FAKE_FLWR = """#!/bin/sh
if [ "$1" = run ]; then echo "Successfully started run 42"; echo "ERROR : fedvault/misconfigured: ..."; exit 0; fi
if [ "$1" = ls ]; then echo '{"success": true, "runs": [{"run-id": "42", "status": "finished:failed"}]}'; fi
"""


def test_flower_run_exits_non_zero_when_the_run_failed(tmp_path, monkeypatch, capsys):
    """Flower's `flwr run --stream` exits 0 although the run failed; `fedvault flower-run` reads the run's
    final status and exits 1 (the status Flower records for a failed ServerApp: `finished:failed`)."""
    import argparse

    from fedvault.fl.integrations.flower.cli import cmd_flower_run

    fake = tmp_path / "flwr"
    fake.write_text(FAKE_FLWR)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path), os.environ.get("PATH", "")]))
    assert cmd_flower_run(argparse.Namespace(app=".", flwr_args=[])) == 1
    assert "run 42: finished:failed" in capsys.readouterr().out
