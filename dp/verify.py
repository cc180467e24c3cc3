"""Independent verification of claimed ε with Google's ``dp_accounting`` (no Opacus).

An auditor who does not trust fedvault's arithmetic recomputes every hospital's ε from
its ledger's events alone (:mod:`dp.events` gives the mapping of each event to
``dp_accounting`` events), under **both** neighbouring relations:

- add/remove one record: ``RdpAccountant`` (default orders) and ``PLDAccountant``
  (pessimistic, interval ``pld_discretization``) with ``ADD_OR_REMOVE_ONE``;
- replace one record: ``PLDAccountant`` with ``REPLACE_ONE`` (dp_accounting's RDP
  accountant does not support Poisson sampling under replace-one).

Rules (``tolerance`` = relative tolerance ``t``, default 1 %):

1. stated add/remove, ledger accountant ``rdp``: ``|ε_claimed − ε_RDP| ≤ t·ε_RDP``;
   ``prv``: ``|ε_claimed − ε_PLD| ≤ t·ε_PLD + 0.01`` (Opacus PRV's ``eps_error``); and
   always ``ε_PLD ≤ ε_claimed·(1 + t) + 0.01`` (a claim below the tight value
   understates the loss).
2. stated replace-one: ``|ε_claimed − ε_PLD,replace| ≤ t·ε_PLD,replace``.
3. **the relation fits the releases**: a run that releases exact record counts (its
   release inventory, :mod:`dp.releases`; for a version-1 history without inventory,
   ``hospitals[].records``) cannot state add/remove — verify reports the valid
   replace-one ε instead.
4. with a budget: the recomputed ε under the stated relation ``≤ budget·(1 + t)``.
5. **client level**: the claimed client-level ε equals fedvault's DDG bound recomputed
   from the events (``t``); without client-sampling credit, dp_accounting's RDP
   accountant recomputes it independently from ``ZCDpEvent``s and the claim may not be
   below that (``t``); a credit (sample rate < 1) is refused when the run lists
   participants or its coins are not secret.
6. events are well formed and rounds do not go backwards.
7. **every listed participation is charged**: a hospital that history lists in a round's
   sum (``rounds[].participants``) has a DP-SGD event for that round in its ledger (and a
   client-level event when the run configured client-level DP).

A run made with ``privacy.reproducible = true`` is **refused**: its noise can be
replayed from the config, so no ε holds; the report says so and ``ok`` is False.

Old histories (schema 1, no relation, no inventory) are read: their claims are add/remove
and they released exact counts, so rule 3 flags them with the replace-one ε.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fedvault.dp import events as E
from fedvault.dp.accounting import PLD_DISCRETIZATION, client_epsilon, dp_accounting_event, dpa_epsilon
from fedvault.dp.errors import AccountingError, LedgerIntegrityError
from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger
from fedvault.dp.releases import exact_count_releases

PRV_ABS_SLACK = 0.01
REPRODUCIBLE_REFUSAL = (
    "not private: noise reproducible from the config (privacy.reproducible = true); "
    "fedvault verify does not certify such a run"
)

__all__ = [
    "ClientVerification", "RunFacts", "VerificationReport", "dp_accounting_event", "pld_epsilon",
    "rdp_epsilon", "run_facts", "verify", "verify_one",
]


@dataclass(frozen=True)
class RunFacts:
    """What a run released, as far as the relation and client-level credit depend on it.

    Attributes:
        exact_counts: names of exact-count releases (inventory, or inferred).
        reproducible: the noise is replayable from the config.
        participants_listed: history lists who took part each round.
        coins_secret: client-sampling coins came from the OS CSPRNG (None: unknown).
        source: where the facts come from (``"inventory"``, ``"schema-1 history"``, ``"none"``).
        not_private: reasons the run is not private on purpose (an audit fault of
            :mod:`dp.faults`, recorded as history ``not_private``): refused like ``reproducible``.
    """

    exact_counts: tuple[str, ...] = ()
    reproducible: bool = False
    participants_listed: bool = False
    coins_secret: bool | None = None
    source: str = "none"
    not_private: tuple[str, ...] = ()


def run_facts(history: Mapping[str, Any] | None) -> RunFacts:
    """Read :class:`RunFacts` from a history.json dict (any schema)."""
    if not isinstance(history, Mapping):
        return RunFacts()
    cfg = history.get("config") or {}
    priv = cfg.get("privacy") or {} if isinstance(cfg, Mapping) else {}
    reproducible = bool(priv.get("reproducible", False)) or bool(
        (history.get("randomness") or {}).get("reproducible", False)
        if isinstance(history.get("randomness"), Mapping) else False
    )
    rounds = history.get("rounds") or []
    listed = any(bool(r.get("participants")) for r in rounds if isinstance(r, Mapping))
    coins = None
    rnd = history.get("randomness")
    if isinstance(rnd, Mapping) and "client_sampling" in rnd:
        coins = rnd["client_sampling"] == "secret"
    faults = tuple(str(x) for x in history.get("not_private") or ())  # dp.faults: audit-only runs
    if "releases" in history and isinstance(history["releases"], list):
        return RunFacts(tuple(exact_count_releases(history["releases"])), reproducible, listed, coins, "inventory",
                        faults)
    hosp = history.get("hospitals") or {}
    inferred = []
    if isinstance(hosp, Mapping) and any(isinstance(h, Mapping) and "records" in h for h in hosp.values()):
        inferred.append("record_counts")
    if listed:
        inferred.append("participants")
    return RunFacts(tuple(inferred), reproducible, listed, coins, f"schema-{history.get('schema', 1)} history", faults)


@dataclass(frozen=True)
class ClientVerification:
    """Verification of one hospital's claimed ε (record and client level)."""

    client: str
    accountant: str
    delta: float
    rounds: int
    claimed_epsilon: float | None
    rdp_epsilon: float  # add/remove, dp_accounting RDP
    pld_epsilon: float  # add/remove, dp_accounting PLD
    budget_epsilon: float | None = None
    problems: tuple[str, ...] = ()
    relation: str = "add_remove"
    replace_one_epsilon: float = math.nan  # replace-one, dp_accounting PLD
    events: int = 0
    client_claimed: float | None = None
    client_epsilon: float | None = None  # fedvault's DDG bound
    client_epsilon_dpa: float | None = None  # dp_accounting RDP (ZCDp), no sampling credit only

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def stated_epsilon(self) -> float:
        """The recomputed ε under the stated relation (RDP for add/remove+rdp)."""
        if self.relation == "replace_one":
            return self.replace_one_epsilon
        return self.pld_epsilon if self.accountant == "prv" else self.rdp_epsilon

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "accountant": self.accountant,
            "relation": self.relation,
            "delta": self.delta,
            "rounds": self.rounds,
            "events": self.events,
            "claimed_epsilon": self.claimed_epsilon,
            "add_remove": {"rdp_epsilon": _finite_or_none(self.rdp_epsilon),
                           "pld_epsilon": _finite_or_none(self.pld_epsilon)},
            "replace_one": {"pld_epsilon": _finite_or_none(self.replace_one_epsilon)},
            "rdp_epsilon": _finite_or_none(self.rdp_epsilon),
            "pld_epsilon": _finite_or_none(self.pld_epsilon),
            "budget_epsilon": self.budget_epsilon,
            "client_level": None if self.client_epsilon is None else {
                "claimed_epsilon": self.client_claimed,
                "ddg_epsilon": _finite_or_none(self.client_epsilon),
                "dp_accounting_rdp_epsilon": None if self.client_epsilon_dpa is None
                else _finite_or_none(self.client_epsilon_dpa),
            },
            "ok": self.ok,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class VerificationReport:
    """Result of :func:`verify`: one :class:`ClientVerification` per hospital."""

    clients: tuple[ClientVerification, ...]
    tolerance: float
    method: str = field(default="dp_accounting RDP + PLD (no Opacus)")
    refusal: str | None = None
    facts: RunFacts = field(default_factory=RunFacts)

    @property
    def ok(self) -> bool:
        """True iff the run is certifiable and every hospital's claim checks out."""
        return self.refusal is None and all(c.ok for c in self.clients)

    @property
    def problems(self) -> list[str]:
        return ([self.refusal] if self.refusal else []) + [p for c in self.clients for p in c.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "refusal": self.refusal,
            "tolerance": self.tolerance,
            "method": self.method,
            "facts": {"exact_counts": list(self.facts.exact_counts), "reproducible": self.facts.reproducible,
                      "participants_listed": self.facts.participants_listed,
                      "coins_secret": self.facts.coins_secret, "source": self.facts.source},
            "clients": [c.to_dict() for c in self.clients],
        }

    def __str__(self) -> str:
        head = (f"{'client':<14} {'relation':<11} {'ev':>3} {'claimed ε':>10} {'add/rm RDP':>10} {'add/rm PLD':>10} "
                f"{'replace PLD':>11} {'client ε':>9}  result")
        lines = []
        if self.refusal:
            lines.append(f"REFUSED: {self.refusal}")
        lines += [head, "-" * len(head)]
        for c in self.clients:
            claimed = "-" if c.claimed_epsilon is None else f"{c.claimed_epsilon:.4f}"
            cl = "-" if c.client_epsilon is None else f"{c.client_epsilon:.3f}"
            lines.append(
                f"{c.client:<14} {c.relation:<11} {c.events:>3} {claimed:>10} {c.rdp_epsilon:>10.4f} "
                f"{c.pld_epsilon:>10.4f} {c.replace_one_epsilon:>11.4f} {cl:>9}  {'OK' if c.ok else 'MISMATCH'}"
            )
        if any(not math.isfinite(c.rdp_epsilon) for c in self.clients):
            lines.append("add/remove ε = inf: an exact count rides along a release (e.g. n_k with the feature "
                         "statistics), which no noise covers when a record is added or removed")
        if self.facts.exact_counts:
            lines.append(f"exact counts released ({self.facts.source}): {', '.join(self.facts.exact_counts)} "
                         "-> only replace-one ε is valid")
        lines.append(
            f"verification ({self.method}, tolerance {self.tolerance:.1%}): "
            + ("all claims agree" if self.ok else f"{len(self.problems)} problem(s)")
        )
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class _silence_dp_accounting:
    """dp_accounting logs a warning per RDP order it cannot evaluate; keep the report clean."""

    def __enter__(self) -> None:
        self._level = logging.root.manager.disable
        logging.disable(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        logging.disable(self._level)


def rdp_epsilon(events: Iterable[Any], delta: float, relation: str = "add_remove") -> float:
    """ε from ``dp_accounting``'s RDP accountant (default orders)."""
    with _silence_dp_accounting():
        return dpa_epsilon(list(events), delta, relation, "rdp")


def pld_epsilon(events: Iterable[Any], delta: float, discretization: float = PLD_DISCRETIZATION,
                relation: str = "add_remove") -> float:
    """ε from ``dp_accounting``'s PLD accountant (pessimistic, interval ``discretization``)."""
    with _silence_dp_accounting():
        return dpa_epsilon(list(events), delta, relation, "pld", discretization)


def _ledger_records(source: Any) -> list[dict[str, Any]]:
    """Normalise the accepted inputs to a list of ledger dicts (``PrivacyLedger.to_dict`` form)."""
    if isinstance(source, (str, os.PathLike)):
        source = _read_json(source)
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


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LedgerIntegrityError(f"{path}: cannot read JSON ({e})") from e
    if isinstance(doc, dict) and doc.get("format") == "fedvault-privacy-ledger":
        doc = doc.get("ledger")
    return doc


def _number(client: str, key: str, v: Any, problems: list[str]) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        problems.append(f"{client}: claimed {key} {v!r} is not a number")
        return None
    return float(v)


def verify_one(
    d: Mapping[str, Any], tolerance: float = 0.01, pld_discretization: float = PLD_DISCRETIZATION,
    facts: RunFacts | None = None,
) -> ClientVerification:
    """Check one ledger dict (see module docstring for the rules)."""
    facts = facts or RunFacts()
    client = str(d.get("client", "?"))
    accountant = d.get("accountant", "rdp")
    relation = d.get("relation", "add_remove")
    problems: list[str] = []
    if relation not in E.RELATIONS:
        problems.append(f"{client}: unknown relation {relation!r}; cannot compare")
        relation = "add_remove"
    try:
        delta = float(d["delta"])
        if not 0 < delta < 1:
            raise ValueError("delta outside (0, 1)")
    except (KeyError, TypeError, ValueError) as e:
        raise LedgerIntegrityError(f"{client}: missing or invalid delta ({e})") from e
    evs: list[Any] = []
    raw_events = d.get("events")
    if not isinstance(raw_events, list):
        raise LedgerIntegrityError(f"{client}: 'events' must be a list")
    for raw in raw_events:
        try:
            ev = E.from_dict(raw)
        except AccountingError as e:
            problems.append(f"{client}: {e}")
            continue
        if evs and ev.round < evs[-1].round:
            problems.append(f"{client}: round {ev.round} comes after round {evs[-1].round}")
        if ev.relation not in (None, relation):
            problems.append(f"{client}: a {ev.kind} event states {ev.relation!r}, the ledger {relation!r}")
        evs.append(ev)
    rec, cli = E.record_level(evs), E.client_level(evs)
    rdp = rdp_epsilon(rec, delta)
    pld = pld_epsilon(rec, delta, pld_discretization)
    ro = pld_epsilon(rec, delta, pld_discretization, "replace_one")
    stated = ro if relation == "replace_one" else (pld if accountant == "prv" else rdp)
    claimed = _number(client, "ε", d.get("epsilon"), problems)
    budget = d.get("budget_epsilon")
    if claimed is None and rec and math.isfinite(stated):
        problems.append(f"{client}: no ε claimed although {len(rec)} event(s) give ε={stated:.4f} ({relation})")
    if claimed is not None:
        if relation == "replace_one":
            if abs(claimed - ro) > tolerance * max(ro, 1e-12):
                problems.append(
                    f"{client}: claimed ε={claimed:.6g} (replace-one) but dp_accounting PLD (REPLACE_ONE) gives "
                    f"{ro:.6g} (difference {abs(claimed - ro) / max(ro, 1e-12):.2%} > {tolerance:.1%})"
                )
        elif accountant == "rdp":
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
        if relation == "add_remove" and pld > claimed * (1 + tolerance) + PRV_ABS_SLACK:
            problems.append(
                f"{client}: claimed ε={claimed:.6g} is below the tight PLD value {pld:.6g}: the claim "
                "understates the privacy loss"
            )
    if relation == "add_remove" and facts.exact_counts and rec:
        problems.append(
            f"{client}: ε is stated under add/remove one record, but the run releases exact counts "
            f"({', '.join(facts.exact_counts)}; {facts.source}); add/remove does not hold for those releases. "
            f"The valid statement is replace-one: ε={ro:.4f} at δ={delta:g} (dp_accounting PLD)"
        )
    if budget is not None and stated > float(budget) * (1 + tolerance):
        problems.append(f"{client}: recomputed ε={stated:.6g} ({relation}) exceeds the budget {float(budget):g}")
    c_claimed = _number(client, "client-level ε", d.get("client_epsilon"), problems)
    c_eps = c_dpa = None
    if cli:
        c_eps = client_epsilon(cli, delta)
        credited = [e for e in cli if e.sample_rate < 1]
        if credited:
            if facts.participants_listed:
                problems.append(
                    f"{client}: client-level ε takes client-sampling credit (q={credited[0].sample_rate:g}) although "
                    "the run lists who took part each round; without the credit "
                    f"ε={client_epsilon([_no_credit(e) for e in cli], delta):.4f}"
                )
            if facts.coins_secret is not True:
                problems.append(
                    f"{client}: client-level ε takes client-sampling credit but the run does not record secret "
                    "sampling coins (history.randomness.client_sampling = \"secret\")"
                )
        else:
            with _silence_dp_accounting():
                c_dpa = dpa_epsilon(cli, delta, relation, "rdp")
            if c_claimed is not None and c_claimed < c_dpa * (1 - tolerance):
                problems.append(
                    f"{client}: claimed client-level ε={c_claimed:.6g} is below dp_accounting's RDP value "
                    f"{c_dpa:.6g} (ZCDp events)"
                )
        if c_claimed is None and math.isfinite(c_eps):
            problems.append(f"{client}: no client-level ε claimed although {len(cli)} client-level event(s) "
                            f"give {c_eps:.4f}")
        elif c_claimed is not None and abs(c_claimed - c_eps) > tolerance * max(c_eps, 1e-12):
            problems.append(f"{client}: claimed client-level ε={c_claimed:.6g} but its events give {c_eps:.6g}")
    elif c_claimed is not None:
        problems.append(f"{client}: claims a client-level ε={c_claimed:.6g} without client-level events")
    return ClientVerification(
        client=client,
        accountant=str(accountant),
        delta=delta,
        rounds=len({e.round for e in rec if isinstance(e, PrivacyEvent)}),
        claimed_epsilon=claimed,
        rdp_epsilon=rdp,
        pld_epsilon=pld,
        budget_epsilon=None if budget is None else float(budget),
        problems=tuple(problems),
        relation=relation,
        replace_one_epsilon=ro,
        events=len(evs),
        client_claimed=c_claimed,
        client_epsilon=c_eps,
        client_epsilon_dpa=c_dpa,
    )


def _listed_rounds(history: Mapping[str, Any] | None) -> dict[str, list[int]]:
    """``{hospital: [rounds whose sum history lists it in]}`` (rule 7)."""
    out: dict[str, list[int]] = {}
    for row in (history or {}).get("rounds") or ():
        if not isinstance(row, Mapping) or not isinstance(row.get("round"), int):
            continue
        for name in row.get("participants") or ():
            out.setdefault(str(name), []).append(row["round"])
    return out


def _uncharged_rounds(ledger: Mapping[str, Any], rounds: Iterable[int],
                      kind: str = "poisson_sampled_gaussian") -> list[int]:
    """Rounds a hospital is listed in whose release its ledger has no ``kind`` event for (rule 7)."""
    charged = {e.get("round") for e in ledger.get("events") or () if isinstance(e, Mapping)
               and e.get("kind", "poisson_sampled_gaussian") == kind}
    return sorted(set(rounds) - charged)


def _no_credit(ev: Any) -> Any:
    from dataclasses import replace

    return replace(ev, sample_rate=1.0)


def verify(
    source: Any, tolerance: float = 0.01, *, pld_discretization: float = PLD_DISCRETIZATION,
    history: Mapping[str, Any] | None = None, on_client: Callable[[str], None] | None = None,
) -> VerificationReport:
    """Recompute every hospital's ε from its events with ``dp_accounting`` and compare.

    Args:
        source: a :class:`PrivacyLedger`, an iterable of them, history.json as a dict (or
            its ``privacy`` section ``{client: ledger dict}``), one ledger dict, or a path
            to history.json or a saved ledger file.
        tolerance: relative tolerance of the comparisons (default 1 %).
        pld_discretization: PLD value discretisation interval (smaller: tighter, slower).
        history: the whole history.json dict, when ``source`` is only its ledgers (gives
            the release inventory and randomness facts; taken from ``source`` when that
            is a whole history).
        on_client: called with each hospital's name once it is verified (progress display).

    Returns:
        A :class:`VerificationReport`; ``report.ok`` is False if any claim disagrees, the
        relation does not fit the releases, or the run is refused (reproducible noise).
    """
    if not 0 <= tolerance < 1:
        raise AccountingError(f"tolerance must lie in [0, 1), got {tolerance!r}")
    if isinstance(source, (str, os.PathLike)):
        source = _read_json(source)
    if history is None and isinstance(source, Mapping) and "privacy" in source:
        history = source
    facts = run_facts(history)
    records = _ledger_records(source)
    faulty = sorted({str(r.get("reason")) for d in records for r in d.get("not_private") or ()})  # dp.faults
    if faulty and not facts.not_private:
        facts = replace(facts, not_private=tuple(faulty))
    checked = []
    listed = _listed_rounds(history)
    for d in records:
        cv = verify_one(d, tolerance, pld_discretization, facts)
        kinds = [("poisson_sampled_gaussian", "DP-SGD")]
        if isinstance(history, Mapping) and history.get("client_level"):  # client-level DP was configured
            kinds.append(("distributed_discrete_gaussian", "client-level (distributed discrete Gaussian)"))
        for kind, label in kinds:
            missing = _uncharged_rounds(d, listed.get(cv.client, ()), kind)
            if missing:
                cv = replace(cv, problems=cv.problems + (
                    f"{cv.client}: history lists it in the sum of round{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(map(str, missing))} but its ledger has no {label} event for "
                    f"{'them' if len(missing) > 1 else 'that round'}: an uncharged release",))
        checked.append(cv)
        if on_client is not None:
            on_client(checked[-1].client)
    return VerificationReport(
        clients=tuple(checked),
        tolerance=tolerance,
        refusal=REPRODUCIBLE_REFUSAL if facts.reproducible else (
            "; ".join(facts.not_private) + "; fedvault verify does not certify such a run" if facts.not_private else None),
        facts=facts,
    )
