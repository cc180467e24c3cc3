"""flwr 1.41 and 1.42 are both supported: the environment has one (constraints.txt pins 1.42); this test puts
the other one in front of it (``pip install --no-deps --target``, cached in ``.venv-flwr-<version>/``) and runs
the in-process Flower tests against it in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

flwr = pytest.importorskip("flwr")

ROOT = Path(__file__).resolve().parent.parent
# What differs between the two releases' requirements (everything else is shared and pinned).
OTHER = {
    "1.42": ("1.41.0", ["flwr==1.41.0", "uv==0.12.24"]),
    "1.41": ("1.42.0", ["flwr==1.42.0", "uv==0.13.9", "certifi==2026.10.19.post1"]),
}
TESTS = ["tests/test_flower_protocol.py", "tests/test_flower_node.py"]  # torch-free: the protocol over Flower


def test_the_other_supported_flwr_release_passes_the_flower_tests():
    series = ".".join(flwr.__version__.split(".")[:2])
    assert series in OTHER, f"flwr {flwr.__version__} is not a supported release (1.41, 1.42)"
    version, pins = OTHER[series]
    target = ROOT / f".venv-flwr-{version}"
    if not (target / "flwr" / "__init__.py").exists():
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                            *pins], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"cannot install flwr {version} for the version test: {r.stderr[-2000:]}"
    env = dict(os.environ, FEDVAULT_EXPECT_FLWR=version, FEDVAULT_TORCH_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(target), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pytest", *TESTS, "-q", "-n", "0", "-p", "no:cacheprovider"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.split("\n")[-2]
