"""Privacy report for a privacy officer: per-hospital table and ε over rounds.

All functions take the ``privacy`` section of history.json (``{client: ledger dict}``),
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
    """Plain-text table: hospital, accountant of the stated ε (``pld``: dp_accounting under
    replace-one), δ, rounds taken part, refused, ε, budget, remaining, relation."""
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
            f"{client:<14} {'pld' if d.get('relation') == 'replace_one' else d.get('accountant', 'rdp'):<4} "
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


# Above this, ε bounds an observer's odds ratio by e^ε ≥ 22026: formally a guarantee, in practice none.
MEANINGLESS_EPSILON = 10.0
SMALL_MULTIPLES_ABOVE = 6  # hospitals: beyond this, one panel per hospital instead of overlapping lines


def _round_marks(source: Any) -> tuple[list[int], list[int], dict[str, set[int]], int | None]:
    """(rounds, aborted rounds, refused rounds per hospital, personalisation round or None) of a history."""
    if not isinstance(source, Mapping) or not source.get("rounds"):
        return [], [], {}, None
    rows = source["rounds"]
    rounds = [int(r["round"]) for r in rows]
    aborted = [int(r["round"]) for r in rows if r.get("aborted")]
    refused: dict[str, set[int]] = {}
    for r in rows:
        for c in (r.get("refused") or {}):
            refused.setdefault(c, set()).add(int(r["round"]))
    pers = (max(rounds) + 1) if source.get("personalization") else None
    return rounds, aborted, refused, pers


def _client_level_series(source: Any) -> tuple[list[int], list[float], list[float]]:
    if not isinstance(source, Mapping):
        return [], [], []
    xs, model, server = [], [], []
    for r in source.get("rounds", []) or []:
        if r.get("client_epsilon") is not None:
            xs.append(int(r["round"]))
            model.append(float(r["client_epsilon"]))
            server.append(float(r.get("client_epsilon_vs_server", math.nan)))
    return xs, model, server


def epsilon_figure(source: Any, *, title: str | None = None) -> Any:
    """A :class:`matplotlib.figure.Figure` of ε over rounds per hospital (never touches pyplot or the backend).

    * record-level ε per hospital, recomputed from its ledger events; budget dashed;
      dots = rounds it trained in; red × = rounds it refused; grey bands = aborted rounds
      (ε charged, nothing revealed); the personalisation step is the last point ("P");
    * more than six hospitals: one small panel per hospital (shared axes), so lines
      never hide each other;
    * client-level ε (with ``client_noise_multiplier``) in its own panel, with a warning
      when it is above 10 (too large to mean anything).

    In a notebook the figure shows inline when it is the cell's value (``%matplotlib inline``);
    ``fig.savefig(path)`` writes a file.
    """
    from matplotlib.figure import Figure

    rounds, aborted, refused_hist, pers = _round_marks(source)
    dicts, refused_led = _ledger_dicts(source)
    for k, v in refused_led.items():
        refused_hist.setdefault(k, set()).update(v)
    axis_rounds = rounds + ([pers] if pers is not None else [])
    curves = epsilon_curves(source, axis_rounds or None)
    cl_x, cl_model, cl_server = _client_level_series(source)
    n = len(dicts)
    small = n > SMALL_MULTIPLES_ABOVE
    ncols = min(5, n) if small else 1
    nrows = math.ceil(n / ncols) if small else 1
    extra = 1 if cl_x else 0
    width = 3.0 * ncols if small else 7.5
    fig = Figure(figsize=(max(width, 7.5), 2.4 * nrows + (2.6 if extra else 0) + 0.8), dpi=100, layout="constrained")
    grid = fig.add_gridspec(nrows + extra, ncols)
    delta = dicts[0].get("delta") if dicts else None

    def decorate(ax: Any) -> None:
        for r in aborted:
            ax.axvspan(r - 0.5, r + 0.5, color="0.85", zorder=0, linewidth=0)
        if pers is not None:
            ax.axvline(pers - 0.5, color="0.5", linewidth=0.6, linestyle=":")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)

    def draw(ax: Any, d: Mapping[str, Any], color: Any, label: bool) -> None:
        client = str(d.get("client", "?"))
        pts = curves.get(client, [])
        if not pts:
            return
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, color=color, label=f"{client} (ε {ys[-1]:.2f})" if label else None, linewidth=1.4)
        took = {e.round for e in _events(d)}
        ax.plot([x for x in xs if x in took], [y for x, y in pts if x in took], "o", color=color, markersize=3)
        ref = refused_hist.get(client, set())
        if ref:
            ax.plot([x for x in xs if x in ref], [y for x, y in pts if x in ref], "x", color="crimson", markersize=6,
                    label="refused (budget)" if label and client == first_refuser else None)
        budget = d.get("budget_epsilon")
        if budget is not None and math.isfinite(float(budget)):
            ax.axhline(float(budget), color=color, linestyle="--", linewidth=0.8)

    first_refuser = next((str(d.get("client")) for d in dicts if refused_hist.get(str(d.get("client")))), None)
    colors = [f"C{i % 10}" for i in range(n)]
    if small:
        axes = []
        for i, d in enumerate(dicts):
            ax = fig.add_subplot(grid[i // ncols, i % ncols], sharey=axes[0] if axes else None,
                                 sharex=axes[0] if axes else None)
            axes.append(ax)
            draw(ax, d, "C0", False)
            decorate(ax)
            pts = curves.get(str(d.get("client", "?"))) or [(0, 0.0)]
            ax.set_title(f"{d.get('client', '?')}  ε {pts[-1][1]:.2f}", fontsize=9)
            ax.tick_params(labelsize=7)
        axes[0].set_ylabel(f"ε (δ = {delta:g})" if delta else "ε", fontsize=8)
    else:
        ax = fig.add_subplot(grid[0, 0])
        for d, c in zip(dicts, colors):
            draw(ax, d, c, True)
        decorate(ax)
        ax.set_xlabel("round")
        ax.set_ylabel(f"ε (δ = {delta:g})" if delta else "ε")
        if dicts:
            ax.legend(fontsize=8, loc="upper left", ncols=2 if n > 3 else 1)
        axes = [ax]
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if pers is not None:
        for ax in axes:
            ticks = [t for t in ax.get_xticks() if rounds and min(rounds) <= t < pers]
            ax.set_xticks(ticks + [pers], [f"{t:g}" for t in ticks] + ["P"])
    rel = dicts[0].get("relation", "add_remove") if dicts else "add_remove"
    notes = ["dots: rounds trained", "dashed: budget"]
    if aborted:
        notes.append(f"grey: {len(aborted)} aborted round{'s' if len(aborted) != 1 else ''} (ε charged, nothing revealed)")
    if refused_hist:
        notes.append("red ×: refused")
    if pers is not None:
        notes.append("P: personalisation")
    words = {"add_remove": "add/remove one record", "replace_one": "replace one record"}.get(rel, rel)
    fig.suptitle((title or f"Record-level privacy loss per hospital ({words})")
                 + "\n" + "; ".join(notes), fontsize=9)
    if cl_x:
        ax = fig.add_subplot(grid[nrows, :])
        same = all((not math.isfinite(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(a)) for a, b in zip(cl_model, cl_server))
        if same:  # one statement (replace one hospital, no sampling credit): the largest over hospitals
            ax.plot(cl_x, cl_model, "o-", markersize=3, label="largest over hospitals")
        else:
            ax.plot(cl_x, cl_model, "o-", markersize=3, label="vs model consumers")
            ax.plot(cl_x, cl_server, "s--", markersize=3, label="vs the aggregation server")
        for r in aborted:
            ax.axvspan(r - 0.5, r + 0.5, color="0.85", zorder=0, linewidth=0)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("client-level ε")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        worst = max([v for v in cl_model + cl_server if math.isfinite(v)], default=0.0)
        if worst > MEANINGLESS_EPSILON:
            ax.axhline(MEANINGLESS_EPSILON, color="crimson", linewidth=0.8)
            ax.set_title(f"client level (one hospital's whole update): ε = {worst:.0f} is too large to mean anything "
                         f"(above the red line at {MEANINGLESS_EPSILON:g}, e^ε ≥ {math.exp(MEANINGLESS_EPSILON):,.0f})",
                         fontsize=9, color="crimson")
        else:
            ax.set_title("client level (one hospital's whole update)", fontsize=9)
    return fig


def plot_epsilon(source: Any, path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Write :func:`epsilon_figure` as a PNG to ``path``; returns the path. Uses no pyplot."""
    fig = epsilon_figure(source, title=title)
    fig.savefig(path, format="png")
    return os.fspath(path)
