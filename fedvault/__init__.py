"""fedvault: privacy-hardened federated learning between hospitals.

The code lives in four top-level folders that the design card fixes, installed as one
namespace so fedvault claims no generic top-level import name:

    fedvault.secagg     crypto building blocks (no torch)
    fedvault.protocols  sans-IO aggregation protocols and their wire codec (no torch)
    fedvault.dp         DP-SGD, privacy ledger, distributed-DP noise, audit statistics
    fedvault.fl         hospitals, the round engine, transports (simulation, Flower), CLI

Imports point one way: ``fl -> protocols -> secagg`` and ``fl -> dp``.
Importing ``fedvault`` itself is cheap: it loads none of the subpackages.
"""

from __future__ import annotations

import os as _os

__version__ = "0.2.0"

# In a source checkout the four folders sit beside this one; an installed wheel maps them
# inside it (pyproject.toml, [tool.setuptools] package-dir). Looking beside this folder
# too makes `python -m pytest` in any checkout (or git worktree) import that checkout's
# code, not whichever tree the editable install points at.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "secagg")):
    __path__.insert(0, _root)  # type: ignore[name-defined]  # noqa: F821
del _root
