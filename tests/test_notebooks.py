"""Every notebook in notebooks/ runs top to bottom (small settings), is committed without
outputs, keeps the kernel's matplotlib backend and shows its figures inline."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
# Notebooks that teach with pictures: at least one figure must appear inline.
WITH_FIGURES = {"quickstart", "heterogeneous_hospitals", "privacy_budget", "secure_aggregation", "privacy_audit"}


def _source(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: strip outputs"
    src = _source(nb)
    assert "matplotlib.use(" not in src and "switch_backend" not in src, f"{path.name}: never switch the backend"
    before = {p.name for p in path.parent.iterdir()}
    monkeypatch.setenv("FEDVAULT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert {p.name for p in path.parent.iterdir()} == before, f"{path.name} wrote files into notebooks/"
    if path.stem in WITH_FIGURES:
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name}: no figure shown inline"


def test_there_are_notebooks():
    assert any(p.stem == "quickstart" for p in NOTEBOOKS)
