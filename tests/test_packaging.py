"""Packaging and layering rules: one `fedvault.*` namespace, imports point one way,
the crypto and protocol packages load without torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"secagg": "secagg", "protocols": "protocols", "dp": "dp", "fl": "fl"}
# Which fedvault packages each package may import (the design card's direction).
ALLOWED = {
    "secagg": {"secagg"},
    "protocols": {"protocols", "secagg"},
    "dp": {"dp"},
    "fl": {"fl", "protocols", "secagg", "dp"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "fedvault" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in FOLDERS:
                found.add("bare:" + parts[0])
    return found


@pytest.mark.parametrize("pkg", sorted(FOLDERS))
def test_import_direction(pkg):
    bad = []
    for f in sorted((ROOT / FOLDERS[pkg]).rglob("*.py")):
        for target in _imports(f):
            if target.startswith("bare:"):
                bad.append(f"{f.relative_to(ROOT)} imports top-level {target[5:]!r}; use fedvault.{target[5:]}")
            elif target in FOLDERS and target not in ALLOWED[pkg]:
                bad.append(f"{f.relative_to(ROOT)} imports fedvault.{target} ({pkg} may import {sorted(ALLOWED[pkg])})")
    assert not bad, "\n".join(bad)


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"fedvault", "fedvault.examples"}  # fedvault.examples: data only (example configs, CSVs)
    for name, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join(("fedvault", name, *rel)))
    assert on_disk == listed, f"missing from pyproject: {sorted(on_disk - listed)}; stale: {sorted(listed - on_disk)}"


def _modules_after(code: str) -> dict:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_secagg_and_protocols_load_without_torch():
    mods = _modules_after(
        "import fedvault.secagg.encoding, fedvault.secagg.prg, fedvault.secagg.shamir, fedvault.secagg.paillier\n"
        "import fedvault.protocols.secagg, fedvault.protocols.paillier"
    )
    assert "torch" not in mods and "opacus" not in mods


def test_import_fedvault_is_cheap_and_versioned():
    out = subprocess.run([sys.executable, "-m", "fedvault", "--version"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    import fedvault

    assert out.returncode == 0 and fedvault.__version__ in out.stdout
    mods = _modules_after("import fedvault")
    assert not any(m.startswith("fedvault.") for m in mods)
