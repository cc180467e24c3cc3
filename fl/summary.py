"""What a person reads while a study runs and when it ends.

* :class:`RoundTable` — one line per round (hospitals in the sum, test accuracy, ROC-AUC,
  largest ε, seconds) plus what went wrong by hospital name (aborted, refused, dropped
  at which protocol stage); on a terminal a progress bar counts the rounds.
* :func:`summary` — the end-of-run account: rounds completed / aborted / refused /
  skipped, who dropped at which stage, ε charged per hospital and for what (DP-SGD
  rounds, aborted rounds, personalisation) with its neighbouring relation, client-level ε
  with a warning when it is too large to mean anything, the final model with its
  confidence interval, and the pooled baseline with the gap explained.

Both read only the history dict (the schema in the README), so they work on any
history.json, live or loaded from disk.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter, defaultdict
from typing import Any, Mapping, TextIO

from fedvault.fl.progress import progress

# Above this a client-level ε bounds the odds of inferring a hospital's participation by
# e^ε ≥ 22026: formally a guarantee, in practice none.
MEANINGLESS_EPSILON = 10.0
RECORD_RELATION = "add/remove one patient record"


def name_parties(text: str, names: Mapping[int, str]) -> str:
    """Replace protocol party ids in a protocol message by hospital names.

    Protocols number parties 1..n (``"client 2 has only 3 live neighbours"``); people read
    ``hospital_1``. ``names`` maps party id -> name; unknown ids are left as they are.
    """
    def many(m: re.Match) -> str:
        ids = [x.strip() for x in m.group(2).split(",") if x.strip()]
        return ", ".join(names.get(int(x), f"party {x}") for x in ids)

    text = re.sub(r"\b(clients|parties) \[([0-9, ]+)\]", many, text)
    return re.sub(r"\b(client|party) (\d+)\b", lambda m: names.get(int(m.group(2)), m.group(0)), text)


def _row_dict(row: Any) -> Mapping[str, Any]:
    return row.to_dict() if hasattr(row, "to_dict") else row


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width) if width else 1)
    return format(v, spec)


def _dropped_text(dropped: Mapping[str, list[str]]) -> str:
    return ", ".join(f"{c} at {stage}" for stage, cs in dropped.items() for c in cs)


class RoundTable:
    """Prints one line per round as the federation runs (use as the engine's ``on_round``)."""

    HEADER = f"{'round':>5}  {'hosp.':>5}  {'acc':>6}  {'ROC-AUC':>7}  {'max ε':>6}  {'sec':>6}"

    def __init__(self, out: TextIO | None = None, total_rounds: int | None = None, quiet_bar: bool = False):
        self.out = out = out if out is not None else sys.stdout
        self.total = total_rounds
        print(self.HEADER, file=out)
        print("-" * len(self.HEADER), file=out, flush=True)
        self.bar = progress(total=total_rounds, desc="rounds", unit="round", quiet=quiet_bar, leave=False)

    def line(self, row: Mapping[str, Any]) -> str:
        eps = max(row["epsilon"].values()) if row.get("epsilon") else None
        m = row.get("metrics") or {}
        line = (
            f"{row['round']:>5}  {len(row.get('participants') or []):>5}  {_fmt(m.get('accuracy'), '6.3f')}  "
            f"{_fmt(m.get('roc_auc'), '7.3f')}  {_fmt(eps, '6.2f')}  {row.get('seconds', {}).get('total', math.nan):6.2f}"
        )
        notes = []
        if row.get("aborted"):
            why = str(row["aborted"]).removeprefix("round aborted, nothing was revealed: ")
            notes.append("ABORTED (nothing revealed, model unchanged, ε of the trainers still charged): " + why)
        if row.get("refused"):
            notes.append("refused (budget): " + ", ".join(sorted(row["refused"])))
        dropped = _dropped_text(row.get("dropped") or {})
        if dropped:
            notes.append("dropped: " + dropped)
        return line + ("   " + "; ".join(notes) if notes else "")

    def __call__(self, row: Any) -> None:
        text = self.line(_row_dict(row))
        if hasattr(self.bar, "clear"):  # a live tqdm bar: print above it
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _ledger_rounds(ledger: Mapping[str, Any], purpose: str | None = None) -> list[int]:
    """Rounds of the ledger's DP-SGD events (``kind`` poisson_sampled_gaussian, or v1 events)."""
    out = []
    for e in ledger.get("events", []) or []:
        if e.get("kind", "poisson_sampled_gaussian") != "poisson_sampled_gaussian":
            continue
        if purpose is not None and e.get("purpose", "dp-sgd") != purpose:
            continue
        out.append(int(e.get("round", 0)))
    return out


def _other_releases(ledger: Mapping[str, Any]) -> Counter:
    """Counts of the ledger's non-training releases by purpose (e.g. noised statistics)."""
    return Counter(str(e.get("purpose", e.get("kind"))) for e in ledger.get("events", []) or []
                   if e.get("kind", "poisson_sampled_gaussian") == "gaussian_release")


RELATION_WORDS = {"add_remove": "add/remove one patient record", "replace_one": "replace one patient record"}


def _relation(ledger: Mapping[str, Any]) -> str:
    rels = {ledger.get("relation")} | {e.get("relation") for e in ledger.get("events", []) or []}
    rels -= {None}
    if not rels:
        return RECORD_RELATION
    return ", ".join(RELATION_WORDS.get(str(r), str(r)) for r in sorted(rels))


def summary(history: Mapping[str, Any]) -> str:
    """The end-of-run account of a history, as text."""
    out: list[str] = []
    cfg = history.get("config", {})
    rounds = [_row_dict(r) for r in history.get("rounds", [])]
    planned = int(cfg.get("training", {}).get("rounds", len(rounds)))
    aborted = [r for r in rounds if r.get("aborted")]
    done = [r for r in rounds if not r.get("aborted")]
    skipped = history.get("skipped_rounds", []) or []
    out.append("")
    out.append("summary")
    parts = [f"{len(done)} completed"]
    if aborted:
        parts.append(f"{len(aborted)} aborted")
    if skipped:
        parts.append(f"{len(skipped)} skipped (too few hospitals sampled)")
    out.append(f"  rounds: {planned} planned, {len(rounds) + len(skipped)} run: " + ", ".join(parts))
    if rounds and not done:
        out.append("  NO ROUND COMPLETED: the final model is the initial, untrained model")
    lines = []  # the protocol's guarantee, as recorded in every round (helper B's Guarantee.line)
    for r in rounds:
        g = r.get("guarantee")
        line = g.get("line") if isinstance(g, Mapping) else None
        if line and line not in lines:
            lines.append(line)
    for line in lines[:3]:
        out.append(f"  guarantee: {line}")
    if "stopped" in history:
        out.append(f"  stopped early: {history['stopped'].get('reason')}")
    for name, ex in sorted((history.get("excluded") or {}).items()):
        out.append(f"  excluded after round {ex.get('round')}: {name} (the server refused its messages: "
                   f"{ex.get('reason')}; aggregation.exclude_blamed)")
    if aborted:
        reasons = Counter(str(r["aborted"]).removeprefix("round aborted, nothing was revealed: ") for r in aborted)
        why, k = reasons.most_common(1)[0]
        label = f"most common reason ({k}x)" if k > 1 else "for example"
        out.append(f"  aborted rounds ({', '.join(str(r['round']) for r in aborted[:12])}{' ...' if len(aborted) > 12 else ''}): "
                   "secure aggregation could not unmask the sum; nothing was revealed and the model was left "
                   "unchanged, but the hospitals that trained were charged ε")
        out.append(f"    {label}: {why}")
        drop = cfg.get("aggregation", {}).get("dropout")
        if drop:
            out.append(f"    aggregation.dropout = {drop:g} drops that fraction of the remaining hospitals at each "
                       "protocol stage; lower it, or declare the dropouts to tolerate ([threat_model] dropouts) so the "
                       "protocol is sized for them")
    refused: dict[str, list[int]] = defaultdict(list)
    for r in rounds:
        for c in (r.get("refused") or {}):
            refused[c].append(int(r["round"]))
    for c, rs in sorted(refused.items()):
        out.append(f"  refused: {c} declined {len(rs)} round{'s' if len(rs) != 1 else ''} "
                   f"(from round {rs[0]}) to stay within its ε budget")
    drops: dict[str, Counter] = defaultdict(Counter)
    for r in rounds:
        for stage, cs in (r.get("dropped") or {}).items():
            for c in cs or ():
                drops[c][stage] += 1
    if drops:
        sim = " (simulated: aggregation.dropout)" if cfg.get("aggregation", {}).get("dropout") else ""
        out.append(f"  dropped out{sim} — hospital: protocol stage × rounds")
        for c in sorted(drops):
            out.append(f"    {c}: " + ", ".join(f"{s} ×{k}" for s, k in drops[c].items()))
    privacy = history.get("privacy") or {}
    if privacy:
        delta = next(iter(privacy.values())).get("delta")
        out.append(f"  privacy per hospital (record level, δ = {_fmt(delta, 'g')}, neighbouring: "
                   f"{_relation(next(iter(privacy.values())))}):")
        aborted_ids = {int(r["round"]) for r in aborted}
        last = max((int(r["round"]) for r in rounds), default=0)
        pers = history.get("personalization") or {}
        width = max(len(c) for c in privacy)
        for c, led in privacy.items():
            rs = _ledger_rounds(led)
            ps = set(_ledger_rounds(led, "personalisation")) | {x for x in rs if x > last}
            fl_rounds = sorted(set(x for x in rs if x not in ps))
            in_abort = sum(1 for x in fl_rounds if x in aborted_ids)
            what = f"{len(fl_rounds)} DP-SGD round{'s' if len(fl_rounds) != 1 else ''}"
            if in_abort:
                what += f" ({in_abort} of them in aborted rounds)"
            if ps or (c in pers and "refused" not in pers[c]):
                what += " + personalisation"
            for purpose, k in sorted(_other_releases(led).items()):
                what += f" + {purpose.replace('_', ' ')} ×{k}"
            eps = led.get("epsilon")
            budget = led.get("budget_epsilon")
            tail = f" of budget {budget:g}" if isinstance(budget, (int, float)) else ""
            out.append(f"    {c:<{width}}  ε = {_fmt(eps, '.3f')}{tail}  for {what}")
    if privacy and history.get("config", {}).get("privacy", {}).get("reproducible"):
        out.append("  NOT PRIVATE: noise reproducible from the config (privacy.reproducible = true)")
    cl = history.get("client_level")
    if cl:
        e = cl.get("epsilon")
        if cl.get("relation") == "replace_one":  # per hospital, from its ledger (helper D)
            out.append(f"  client level ({cl.get('mechanism', 'distributed DP')}): ε = {_fmt(e, '.3f')} (largest over "
                       f"hospitals), δ = {_fmt(cl.get('delta'), 'g')} (neighbouring: replace one hospital's whole update; "
                       "no client-sampling credit: participants are listed)")
        else:
            out.append(f"  client level ({cl.get('mechanism', 'distributed DP')}): ε = {_fmt(e, '.3f')} against model "
                       f"consumers, ε = {_fmt(cl.get('epsilon_vs_server'), '.3f')} against the server, δ = {_fmt(cl.get('delta'), 'g')} "
                       "(neighbouring: add/remove one hospital's whole update)")
        worst = max(x for x in (e, cl.get("epsilon_vs_server")) if isinstance(x, (int, float))) if isinstance(e, (int, float)) else None
        if worst is not None and worst > MEANINGLESS_EPSILON:
            out.append(f"  WARNING: client-level ε = {worst:.0f} is too large to mean anything (e^ε ≈ {math.exp(min(worst, 700)):.1e}: "
                       "an observer's odds about any hospital's data may change by that factor); raise "
                       "privacy.client_noise_multiplier, sample fewer hospitals per round or run fewer rounds")
    final = history.get("final") or {}
    m = final.get("metrics") or {}
    ci = final.get("metrics_ci") or {}
    eps = final.get("max_epsilon")
    out.append("  final model (federated" + (", DP-SGD" if eps is not None else "") + "):")
    out.append(f"    test accuracy {_fmt(m.get('accuracy'), '.3f')}{_ci_text(ci.get('accuracy'))}   "
               f"ROC-AUC {_fmt(m.get('roc_auc'), '.3f')}{_ci_text(ci.get('roc_auc'))}"
               + (f"   on {ci['records']} test patients" if ci.get("records") else ""))
    if eps is not None:
        rel = (history.get("privacy_relation") or {}).get("record")
        out.append(f"    max ε over hospitals {eps:.3f} at δ = {_fmt(history.get('config', {}).get('privacy', {}).get('delta'), 'g')}"
                   + (f" ({RELATION_WORDS.get(rel, rel)})" if rel else ""))
    b = final.get("baseline_pooled")
    if b:
        bm, bci = b.get("metrics", {}), b.get("metrics_ci") or {}
        out.append("  pooled baseline (what the same kind of model reaches with every record in one place):")
        if b.get("method"):
            out.append(f"    {b['method']}")
        out.append(f"    test accuracy {_fmt(bm.get('accuracy'), '.3f')}{_ci_text(bci.get('accuracy'))}   "
                   f"ROC-AUC {_fmt(bm.get('roc_auc'), '.3f')}{_ci_text(bci.get('roc_auc'))}")
        gap = b.get("gap")
        if gap:
            out.append(f"    gap {gap['accuracy_points']:+.1f} accuracy points: {gap['meaning']}")
        else:
            out.append(f"    gap: {100 * (m.get('accuracy', math.nan) - bm.get('accuracy', math.nan)):+.1f} accuracy "
                       "points (federated minus baseline)")
    pers = history.get("personalization") or {}
    if pers:
        out.append("  personalisation (each hospital fine-tunes the global model; accuracy on its own held-out records, "
                   "global → personalised):")
        width = max(len(c) for c in pers)
        for c, pm in pers.items():
            g, q = (pm.get("global") or {}).get("accuracy"), (pm.get("personalized") or {}).get("accuracy")
            note = f"  declined: {pm['refused']}" if pm.get("refused") else ""
            gain = f"  ({100 * (q - g):+.1f} points)" if isinstance(g, float) and isinstance(q, float) and not (
                math.isnan(g) or math.isnan(q)) else ""
            out.append(f"    {c:<{width}}  {_fmt(g, '.3f')} → {_fmt(q, '.3f')}{gain}{note}")
    per = final.get("per_hospital")
    if per:
        label = str(next(iter(per.values())).get("release", "")).replace("_", "-")
        out.append(f"  final model on each hospital's own held-out records ({label}: exact, not DP, "
                   "a deployment would not see these):")
        width = max(len(c) for c in per)
        for c, pm in per.items():
            out.append(f"    {c:<{width}}  accuracy {_fmt(pm.get('accuracy'), '.3f')}  "
                       f"ROC-AUC {_fmt(pm.get('roc_auc'), '.3f')}  ({pm.get('records')} records)")
    return "\n".join(out)


def _ci_text(ci: Any, level: float = 0.95) -> str:
    if not ci:
        return ""
    return f" ({int(round(level * 100))}% CI {ci[0]:.3f}–{ci[1]:.3f})"
