"""Independent verification of claimed ε with Google's ``dp_accounting`` (no Opacus).

An auditor who does not trust fedvault's arithmetic recomputes every hospital's ε from
its events alone. Each event ``(σ, q, T)`` becomes
``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), T)`` and the events
of a hospital are composed with ``ComposedDpEvent``; then two accountants of
``dp_accounting`` answer ``get_epsilon(δ)``:

- **RDP** (``RdpAccountant``, default orders): the same kind of bound as Opacus'
  ``RDPAccountant`` with a slightly different set of orders; the two agree to ~1e-4
  relative in practice.
- **PLD** (``PLDAccountant``, pessimistic discretisation, interval
  ``pld_discretization``): a numerically tight upper bound, normally *below* RDP.

Rules (``tolerance`` = relative tolerance ``t``, default 1 %):

1. ledger accountant ``rdp``: ``|ε_claimed − ε_RDP| ≤ t·ε_RDP``.
2. ledger accountant ``prv``: ``|ε_claimed − ε_PLD| ≤ t·ε_PLD + 0.01`` (0.01 is Opacus
   PRV's default absolute ``eps_error``; PRV and PLD are both tight numerical accountants).
3. always: ``ε_PLD ≤ ε_claimed·(1 + t) + 0.01`` — a claimed ε below the tight PLD value
   would understate the privacy loss.
4. with a budget: the recomputed ε (RDP for ``rdp``, PLD for ``prv``) ``≤ budget·(1 + t)``.
5. events are well formed and rounds strictly increase.

Any violation is listed in the report with the client and the numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from fedvault.dp.errors import AccountingError, LedgerIntegrityError
from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger

PRV_ABS_SLACK = 0.01


@dataclass(frozen=True)
class ClientVerification:
    """Verification of one hospital's claimed ε."""

    client: str
    accountant: str
    delta: float
    rounds: int
    claimed_epsilon: float | None
    rdp_epsilon: float
    pld_epsilon: float
    budget_epsilon: float | None = None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "accountant": self.accountant,
            "delta": self.delta,
            "rounds": self.rounds,
            "claimed_epsilon": self.claimed_epsilon,
            "rdp_epsilon": _finite_or_none(self.rdp_epsilon),
            "pld_epsilon": _finite_or_none(self.pld_epsilon),
            "budget_epsilon": self.budget_epsilon,
            "ok": self.ok,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class VerificationReport:
    """Result of :func:`verify`: one :class:`ClientVerification` per hospital."""

    clients: tuple[ClientVerification, ...]
    tolerance: float
    method: str = field(default="dp_accounting RDP + PLD (no Opacus)")

    @property
    def ok(self) -> bool:
        """True iff every hospital's claim checks out."""
        return all(c.ok for c in self.clients)

    @property
    def problems(self) -> list[str]:
        return [p for c in self.clients for p in c.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tolerance": self.tolerance,
            "method": self.method,
            "clients": [c.to_dict() for c in self.clients],
        }

    def __str__(self) -> str:
        head = f"{'client':<14} {'acct':<4} {'rounds':>6} {'claimed ε':>10} {'RDP ε':>9} {'PLD ε':>9}  result"
        lines = [head, "-" * len(head)]
        for c in self.clients:
            claimed = "-" if c.claimed_epsilon is None else f"{c.claimed_epsilon:.4f}"
            lines.append(
                f"{c.client:<14} {c.accountant:<4} {c.rounds:>6} {claimed:>10} {c.rdp_epsilon:>9.4f} "
                f"{c.pld_epsilon:>9.4f}  {'OK' if c.ok else 'MISMATCH'}"
            )
        lines.append(
            f"verification ({self.method}, tolerance {self.tolerance:.1%}): "
            + ("all claims agree" if self.ok else f"{len(self.problems)} problem(s)")
        )
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


class _silence_dp_accounting:
    """dp_accounting logs a warning per RDP order it cannot evaluate; keep the report clean."""

    def __enter__(self) -> None:
        self._level = logging.root.manager.disable
        logging.disable(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        logging.disable(self._level)


def dp_accounting_event(events: Iterable[PrivacyEvent]) -> Any:
    """The ``dp_accounting`` DpEvent describing a hospital's events."""
    import dp_accounting as dpa

    parts = [
        dpa.SelfComposedDpEvent(
            dpa.PoissonSampledDpEvent(e.sample_rate, dpa.GaussianDpEvent(e.noise_multiplier)), e.steps
        )
        for e in events
    ]
    return dpa.ComposedDpEvent(parts)


def rdp_epsilon(events: Iterable[PrivacyEvent], delta: float) -> float:
    """ε from ``dp_accounting``'s RDP accountant (default orders)."""
    from dp_accounting.rdp import RdpAccountant

    events = list(events)
    if not events:
        return 0.0
    acc = RdpAccountant()
    with _silence_dp_accounting():
        acc.compose(dp_accounting_event(events))
        return float(acc.get_epsilon(delta))


def pld_epsilon(events: Iterable[PrivacyEvent], delta: float, discretization: float = 1e-3) -> float:
    """ε from ``dp_accounting``'s PLD accountant (pessimistic, interval ``discretization``)."""
    from dp_accounting.pld import PLDAccountant

    events = list(events)
    if not events:
        return 0.0
    acc = PLDAccountant(value_discretization_interval=discretization)
    with _silence_dp_accounting():
        acc.compose(dp_accounting_event(events))
        return float(acc.get_epsilon(delta))


def _ledger_records(source: Any) -> list[dict[str, Any]]:
    """Normalise the accepted inputs to a list of ledger dicts (``PrivacyLedger.to_dict`` form)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            source = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LedgerIntegrityError(f"{source}: cannot read JSON ({e})") from e
        if isinstance(source, dict) and source.get("format") == "fedvault-privacy-ledger":
            source = source.get("ledger")
    if isinstance(source, PrivacyLedger):
        return [source.to_dict()]
    if isinstance(source, Mapping):
        if "privacy" in source and isinstance(source["privacy"], Mapping):  # whole history.json
            source = source["privacy"]
        if "events" in source:  # one ledger dict
            return [dict(source)]
        out = []
        for name, d in source.items():
            if not isinstance(d, Mapping):
                raise LedgerIntegrityError(f"privacy entry of {name!r} is not an object")
            d = dict(d)
            d.setdefault("client", name)
            out.append(d)
        return out
    if isinstance(source, Iterable):
        out = []
        for item in source:
            out.extend(_ledger_records(item))
        return out
    raise AccountingError(
        "verify() takes a PrivacyLedger, a list of them, history.json's dict (or its 'privacy' "
        f"section), a ledger dict or a path; got {type(source).__name__}"
    )


def verify_one(d: Mapping[str, Any], tolerance: float = 0.01, pld_discretization: float = 1e-3) -> ClientVerification:
    """Check one ledger dict (see module docstring for the rules)."""
    client = str(d.get("client", "?"))
    accountant = d.get("accountant", "rdp")
    problems: list[str] = []
    try:
        delta = float(d["delta"])
        if not 0 < delta < 1:
            raise ValueError("delta outside (0, 1)")
    except (KeyError, TypeError, ValueError) as e:
        raise LedgerIntegrityError(f"{client}: missing or invalid delta ({e})") from e
    events: list[PrivacyEvent] = []
    raw_events = d.get("events")
    if not isinstance(raw_events, list):
        raise LedgerIntegrityError(f"{client}: 'events' must be a list")
    for raw in raw_events:
        try:
            ev = PrivacyEvent.from_dict(raw)
        except LedgerIntegrityError as e:
            problems.append(f"{client}: {e}")
            continue
        if events and ev.round <= events[-1].round:
            problems.append(f"{client}: round {ev.round} does not come after round {events[-1].round}")
        events.append(ev)
    rdp = rdp_epsilon(events, delta)
    pld = pld_epsilon(events, delta, pld_discretization)
    claimed = d.get("epsilon")
    budget = d.get("budget_epsilon")
    if claimed is None and events:
        if math.isfinite(rdp):
            problems.append(f"{client}: no ε claimed although {len(events)} event(s) give ε_RDP={rdp:.4f}")
    elif claimed is not None:
        if isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
            problems.append(f"{client}: claimed ε {claimed!r} is not a number")
            claimed = None
        else:
            claimed = float(claimed)
    if claimed is not None:
        if accountant == "rdp":
            if abs(claimed - rdp) > tolerance * max(rdp, 1e-12):
                problems.append(
                    f"{client}: claimed ε={claimed:.6g} (rdp) but dp_accounting RDP gives {rdp:.6g} "
                    f"(difference {abs(claimed - rdp) / max(rdp, 1e-12):.2%} > {tolerance:.1%})"
                )
        elif accountant == "prv":
            if abs(claimed - pld) > tolerance * pld + PRV_ABS_SLACK:
                problems.append(
                    f"{client}: claimed ε={claimed:.6g} (prv) but dp_accounting PLD gives {pld:.6g} "
                    f"(allowed ±{tolerance:.1%} + {PRV_ABS_SLACK})"
                )
        else:
            problems.append(f"{client}: unknown accountant {accountant!r}; cannot compare")
        if pld > claimed * (1 + tolerance) + PRV_ABS_SLACK:
            problems.append(
                f"{client}: claimed ε={claimed:.6g} is below the tight PLD value {pld:.6g}: the claim "
                "understates the privacy loss"
            )
    if budget is not None:
        recomputed = pld if accountant == "prv" else rdp
        if recomputed > float(budget) * (1 + tolerance):
            problems.append(f"{client}: recomputed ε={recomputed:.6g} exceeds the budget {float(budget):g}")
    return ClientVerification(
        client=client,
        accountant=str(accountant),
        delta=delta,
        rounds=len(events),
        claimed_epsilon=claimed,
        rdp_epsilon=rdp,
        pld_epsilon=pld,
        budget_epsilon=None if budget is None else float(budget),
        problems=tuple(problems),
    )


def verify(source: Any, tolerance: float = 0.01, *, pld_discretization: float = 1e-3) -> VerificationReport:
    """Recompute every hospital's ε from its events with ``dp_accounting`` and compare.

    Args:
        source: a :class:`PrivacyLedger`, an iterable of them, history.json as a dict (or
            its ``privacy`` section ``{client: ledger dict}``), one ledger dict, or a path
            to history.json or a saved ledger file.
        tolerance: relative tolerance of the comparisons (default 1 %).
        pld_discretization: PLD value discretisation interval (smaller: tighter, slower).

    Returns:
        A :class:`VerificationReport`; ``report.ok`` is False if any claim disagrees.
    """
    if not 0 <= tolerance < 1:
        raise AccountingError(f"tolerance must lie in [0, 1), got {tolerance!r}")
    records = _ledger_records(source)
    return VerificationReport(
        clients=tuple(verify_one(d, tolerance, pld_discretization) for d in records),
        tolerance=tolerance,
    )
