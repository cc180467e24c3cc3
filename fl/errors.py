"""The one exception hierarchy of :mod:`fl`.

The CLI turns every :class:`FLError` (and the other packages' base errors) into a short
report naming the problem and the fix, with a non-zero exit and no traceback. An error
that collects several problems (config and data checks report everything at once)
carries them in ``problems``; ``str(error)`` lists them all.
"""

from __future__ import annotations

from typing import Sequence


class FLError(Exception):
    """Base class of every error raised by :mod:`fl`."""

    problems: list[str]
    warnings: list[str]

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.problems = [str(args[0])] if args else []
        self.warnings = []

    @classmethod
    def collect(cls, problems: Sequence[str], *, what: str = "", warnings: Sequence[str] = ()) -> "FLError":
        """One error for several problems: one problem reads as before; more are numbered."""
        problems = list(problems)
        if len(problems) == 1:
            e = cls(problems[0])
        else:
            head = f"{len(problems)} problems" + (f" in {what}" if what else "")
            e = cls(head + " (nothing was run, no privacy budget spent):\n" +
                    "\n".join(f"  {i}. {m}" for i, m in enumerate(problems, 1)))
        e.problems = problems
        e.warnings = list(warnings)
        return e


class ConfigError(FLError, ValueError):
    """The configuration file is malformed, has an unknown key or an invalid value."""


class DataError(FLError, ValueError):
    """A data set or CSV file cannot be used as given (missing label, NaN, no rows, ...)."""


class FederationError(FLError):
    """The federation cannot continue (e.g. fewer hospitals than the minimum remain)."""
