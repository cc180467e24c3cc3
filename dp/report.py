"""Privacy report for a privacy officer: per-hospital table and ε over rounds.

Both functions take the ``privacy`` section of history.json (``{client: ledger dict}``),
the whole history dict, or an iterable of :class:`~dp.ledger.PrivacyLedger`. ε over
rounds is recomputed from each hospital's events (the ε after each round it took part
in; flat across rounds it sat out or refused), so the plot is exactly what the ledger
implies, not what a run printed.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping

from fedvault.dp import events as E
from fedvault.dp.accounting import record_epsilon
from fedvault.dp.ledger import PrivacyLedger


def _ledger_dicts(source: Any) -> tuple[list[dict[str, Any]], dict[str, set[int]]]:
    """(ledger dicts, refused rounds per client taken from history rounds)."""
    refused: dict[str, set[int]] = {}
    if isinstance(source, PrivacyLedger):
        return [source.to_dict()], refused
    if isinstance(source, Mapping):
        if "privacy" in source:
            for r in source.get("rounds", []) or []:
                for client in (r.get("refused") or {}):
                    refused.setdefault(client, set()).add(int(r["round"]))
            source = source["privacy"] or {}
        if "events" in source:
            return [dict(source)], refused
        out = []
        for name, d in source.items():
            d = dict(d)
            d.setdefault("client", name)
            out.append(d)
        return out, refused
    out = []
    for item in source:
        more, ref = _ledger_dicts(item)
        out.extend(more)
        for k, v in ref.items():
            refused.setdefault(k, set()).update(v)
    return out, refused


def _events(d: Mapping[str, Any]) -> list[Any]:
    """The record-level events of a ledger dict (client-level ε is reported apart)."""
    return E.record_level(E.from_dict(e) for e in d.get("events", []))


def _eps(d: Mapping[str, Any], events: list[Any]) -> float:
    return record_epsilon(events, float(d["delta"]), d.get("relation", "add_remove"), d.get("accountant", "rdp"))


def ledger_table(source: Any) -> str:
    """Plain-text table: hospital, accountant, δ, rounds taken part, refused, ε, budget, remaining."""
    dicts, refused_hist = _ledger_dicts(source)
    head = (f"{'hospital':<14} {'acct':<4} {'delta':>8} {'rounds':>6} {'refused':>7} {'epsilon':>9} "
            f"{'budget':>8} {'remaining':>9}  relation")
    lines = [head, "-" * len(head)]
    for d in dicts:
        client = str(d.get("client", "?"))
        events = _events(d)
        eps = d.get("epsilon")
        if eps is None and events:
            eps = _eps(d, events)
        eps = 0.0 if eps is None else float(eps)
        budget = d.get("budget_epsilon")
        refused = {int(r["round"]) for r in d.get("refused", []) or []} | refused_hist.get(client, set())
        remaining = "-" if budget is None else f"{float(budget) - eps:.3f}"
        lines.append(
            f"{client:<14} {d.get('accountant', 'rdp'):<4} "
            f"{float(d['delta']):>8.0e} {len({e.round for e in events if e.kind == 'poisson_sampled_gaussian'}):>6} "
            f"{len(refused):>7} {eps:>9.3f} {'-' if budget is None else f'{float(budget):.3f}':>8} {remaining:>9}  {d.get('relation', 'add_remove')}"
        )
    return "\n".join(lines)


def epsilon_curves(source: Any, rounds: Iterable[int] | None = None) -> dict[str, list[tuple[int, float]]]:
    """``{client: [(round, ε after that round), ...]}`` recomputed from the events."""
    dicts, _ = _ledger_dicts(source)
    all_rounds = sorted(set(rounds) if rounds is not None else {e.round for d in dicts for e in _events(d)})
    curves: dict[str, list[tuple[int, float]]] = {}
    for d in dicts:
        events = _events(d)
        pts, eps, i = [], 0.0, 0
        for r in all_rounds:
            while i < len(events) and events[i].round <= r:
                i += 1
                eps = _eps(d, events[:i])
            pts.append((r, eps))
        curves[str(d.get("client", "?"))] = pts
    return curves


def plot_epsilon(source: Any, path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Write a PNG of ε over rounds per hospital (budgets dashed) to ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = None
    if isinstance(source, Mapping) and source.get("rounds"):
        rounds = [int(r["round"]) for r in source["rounds"]]
    dicts, _ = _ledger_dicts(source)
    curves = epsilon_curves(source, rounds)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for d in dicts:
        client = str(d.get("client", "?"))
        pts = curves.get(client, [])
        if pts:
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=client)[0]  # ε after round r
            took = {e.round for e in _events(d)}
            ax.plot([x for x, _ in pts if x in took], [y for x, y in pts if x in took], "o",
                    color=line.get_color(), markersize=3)
            budget = d.get("budget_epsilon")
            if budget is not None and math.isfinite(float(budget)):
                ax.axhline(float(budget), color=line.get_color(), linestyle="--", linewidth=0.8)
    delta = dicts[0]["delta"] if dicts else None
    ax.set_ylim(bottom=0)
    ax.set_xlabel("round (dots: rounds taken part in)")
    ax.set_ylabel(f"ε (δ = {delta:g})" if delta else "ε")
    ax.set_title(title or "Privacy loss per hospital (dashed: budget)")
    ax.grid(alpha=0.3)
    if dicts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return os.fspath(path)
