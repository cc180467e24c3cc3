"""No module imports another module's private (underscore) names: shared helpers have a
public home (issue 11, item 4). Tests may still reach into internals."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("secagg", "protocols", "dp", "fl")  # the library (benchmarks share a _report module)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_private_names_imported_across_modules(pkg):
    bad = []
    for f in sorted((ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("fedvault", "benchmarks")):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}")
    assert not bad, "give these helpers a public name where they live:\n" + "\n".join(bad)
