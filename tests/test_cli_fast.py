"""`fedvault --help` and argument errors are fast: they import no torch, scipy or matplotlib.

Checked on the real command (`python -X importtime -m fedvault ...`): every module the
interpreter imported is listed on stderr, whatever imports it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib", "opacus")


def _imported(args: list[str]) -> tuple[int, set[str], str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "fedvault", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    mods = set()
    other = []
    for line in out.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "package":  # the header line
                mods.add(name)
        else:
            other.append(line)
    return out.returncode, mods, out.stdout + "\n".join(other)


@pytest.mark.parametrize(
    "args, code",
    [
        (["--help"], 0),
        (["audit", "--help"], 0),
        (["paillier", "deal", "--help"], 0),
        (["run"], 2),  # missing CONFIG: an argument error
        (["demo", "--rounds", "many"], 2),
        (["no-such-command"], 2),
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(args, code):
    rc, mods, text = _imported(args)
    assert rc == code, text
    assert "fedvault.fl.cli" in mods and "argparse" in mods  # the probe sees the CLI's imports
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"`fedvault {' '.join(args)}` imported {heavy[:8]}"
    assert "audit" in text or args != ["--help"]  # the audit subcommand is still registered
