"""Render the notebooks to HTML under docs/ (``./run docs``): executed, figures inline.

    ./run docs                   every notebook in notebooks/ -> docs/notebooks/NAME.html + docs/index.html
    ./run docs quickstart paillier   only these

Each notebook is executed top to bottom in a fresh kernel from the notebooks/ folder
(outputs and scratch files go to a temporary folder, never into notebooks/), then
exported with nbconvert's HTML exporter; figures are embedded in the HTML. The
notebooks in git stay without outputs (tests/test_notebooks.py checks it). The HTML
is a build product (docs/notebooks/ is ignored by git).
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"


def render(path: Path, out_dir: Path) -> tuple[Path, float]:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="fedvault-docs-") as scratch:
        os.environ["FEDVAULT_NOTEBOOK_OUT"] = scratch
        # IPC sockets in the scratch folder: a local kernel, and no "running over TCP" warning.
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(scratch, "kernel"))
        try:
            NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(path.parent)}}).execute()
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=False)
    body, _ = HTMLExporter().from_notebook_node(nb)
    target = out_dir / f"{path.stem}.html"
    target.write_text(body, encoding="utf-8")
    return target, time.perf_counter() - t0


def title(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def main(argv: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("FEDVAULT_TORCH_THREADS", "1")
    wanted = set(argv)
    paths = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if not wanted or p.stem in wanted]
    if wanted - {p.stem for p in paths}:
        print(f"docs: no notebook named {sorted(wanted - {p.stem for p in paths})}; "
              f"have: {', '.join(p.stem for p in sorted(NOTEBOOKS.glob('*.ipynb')))}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    failed = []
    for p in paths:
        print(f"docs: executing {p.name} ...", end=" ", flush=True)
        try:
            target, secs = render(p, OUT)
        except Exception as e:  # noqa: BLE001 - report which notebook failed and go on
            print(f"FAILED ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", flush=True)
            failed.append(p.stem)
            continue
        print(f"{target.relative_to(ROOT)} ({secs:.0f} s)", flush=True)
    items = "\n".join(
        f'<li><a href="notebooks/{p.stem}.html">{html.escape(title(p))}</a> <code>{p.name}</code></li>'
        for p in sorted(NOTEBOOKS.glob("*.ipynb")) if (OUT / f"{p.stem}.html").exists()
    )
    (ROOT / "docs" / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>fedvault notebooks</title>"
        "<h1>fedvault notebooks (rendered)</h1><ul>\n" + items + "\n</ul>\n", encoding="utf-8")
    print(f"docs: {ROOT / 'docs' / 'index.html'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
