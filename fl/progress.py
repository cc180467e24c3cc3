"""Progress bars for long steps (calibration, rounds, verification, audit).

One helper so every command looks the same: bars go to stderr, and only when stderr is
a terminal (logs, CI and notebooks stay clean). ``FEDVAULT_PROGRESS=1`` forces them on,
``FEDVAULT_PROGRESS=0`` off. tqdm is imported only when a bar is made.

    with progress(total=len(hospitals), desc="calibrating noise", unit="hospital") as bar:
        for h in hospitals:
            ...
            bar.update(1)

``quiet=True`` returns a bar that does nothing (same interface).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, TypeVar

T = TypeVar("T")


class _NoBar:
    """The do-nothing bar (quiet mode, or not a terminal)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_description_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=sys.stdout, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def enabled(quiet: bool = False) -> bool:
    """Whether bars are drawn: never when quiet; FEDVAULT_PROGRESS decides, else stderr is a tty."""
    if quiet:
        return False
    env = os.environ.get("FEDVAULT_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(*, total: int | None, desc: str, unit: str = "it", quiet: bool = False, leave: bool = False) -> Any:
    """A tqdm bar on stderr (or a do-nothing bar); use as a context manager."""
    if not enabled(quiet):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)


def track(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it", quiet: bool = False) -> Iterable[T]:
    """Iterate ``items`` with a bar (``tqdm(items)`` when bars are on)."""
    if not enabled(quiet):
        return items
    from tqdm import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return tqdm(items, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
