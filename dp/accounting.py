"""Accountants that consume a hospital's events (:mod:`dp.events`).

Which accountant states a hospital's record-level ε depends on the relation it is
stated under (:func:`record_epsilon`):

- ``add_remove``: Opacus' ``RDPAccountant`` or ``PRVAccountant`` (the ledger's
  ``accountant``), fed with every record-level event — DP-SGD steps as ``(σ, q, T)`` and
  each Gaussian release of a statistic as ``(std/Δ_add_remove, 1, count)``. This is the
  same accountant the trainer keeps live during training.
- ``replace_one``: Google's ``dp_accounting`` ``PLDAccountant`` with
  ``NeighboringRelation.REPLACE_ONE`` (pessimistic estimate, value discretisation
  ``PLD_DISCRETIZATION``); Opacus' accountants only know add/remove.

:func:`dpa_epsilon` recomputes ε with dp_accounting (RDP or PLD, either relation where
dp_accounting supports it) from the events alone; :mod:`dp.verify` uses it. Client-level
events are accounted separately (:func:`client_epsilon`): a hospital's client-level ε
protects the hospital as a whole, a different unit from one patient record.

Mechanism accounted
-------------------
A DP-SGD event is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism
with sampling rate ``q`` and noise multiplier ``σ`` (noise std ``σ·C`` on the sum of
per-sample gradients clipped to norm ``C``). Rounds a hospital sat out have no event and
cost nothing.

Opacus' accountants keep their history as ``[(σ, q, steps), ...]`` and merge consecutive
steps with equal ``(σ, q)``; :func:`opacus_history` builds exactly that merged history
from events, so a ledger replay and the live accountant used during training give
bit-identical ε.

Opacus (and through it torch) is imported lazily, so ``import fedvault.dp.ledger`` stays light.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable

from fedvault.dp.errors import AccountingError

from fedvault.dp.events import RECORD, check_relation, client_level, record_level

if TYPE_CHECKING:  # pragma: no cover
    from fedvault.dp.ledger import PrivacyEvent

ACCOUNTANTS = ("rdp", "prv")
PLD_DISCRETIZATION = 1e-3


def check_accountant(name: str) -> str:
    """Validate an accountant name (``"rdp"`` or ``"prv"``) and return it."""
    if name not in ACCOUNTANTS:
        raise AccountingError(
            f"unknown accountant {name!r}: use one of {', '.join(ACCOUNTANTS)}"
        )
    return name


def opacus_history(events: Iterable["PrivacyEvent"]) -> list[tuple[float, float, int]]:
    """Opacus accountant history ``[(σ, q, steps)]`` for the record-level ``events``,
    consecutive equal ``(σ, q)`` merged exactly as Opacus' ``step()`` merges them.

    Client-level events are skipped; a Gaussian release enters as ``(std/Δ_ar, 1, count)``
    (one with zero add/remove sensitivity costs nothing and is skipped)."""
    history: list[tuple[float, float, int]] = []
    for ev in events:
        if getattr(ev, "level", RECORD) != RECORD:
            continue
        sigma, q, steps = ev.opacus_entry()
        if sigma == math.inf:
            continue
        sigma, q, steps = float(sigma), float(q), int(steps)
        if history and history[-1][0] == sigma and history[-1][1] == q:
            history[-1] = (sigma, q, history[-1][2] + steps)
        else:
            history.append((sigma, q, steps))
    return history


def make_accountant(name: str, history: list[tuple[float, float, int]] | None = None) -> Any:
    """A fresh Opacus accountant (``RDPAccountant`` / ``PRVAccountant``) holding ``history``."""
    check_accountant(name)
    from opacus.accountants import PRVAccountant, RDPAccountant  # lazy: imports torch

    acc = RDPAccountant() if name == "rdp" else PRVAccountant()
    if history:
        acc.load_state_dict({"history": [tuple(h) for h in history], "mechanism": acc.mechanism()})
    return acc


def accountant_epsilon(acc: Any, delta: float) -> float:
    """ε of an Opacus accountant at ``delta`` (0 for an empty history)."""
    if len(acc.history) == 0:
        return 0.0
    with quiet_warnings():
        eps = float(acc.get_epsilon(delta=delta))
    if math.isnan(eps):
        raise AccountingError("the accountant returned NaN for ε; check σ and q of the events")
    return eps


def opacus_epsilon(events: Iterable["PrivacyEvent"], delta: float, accountant: str = "rdp") -> float:
    """ε after composing ``events`` at ``delta`` with Opacus' ``accountant`` (``rdp``/``prv``).

    For ``rdp`` this evaluates exactly what ``RDPAccountant.get_epsilon`` evaluates on the
    merged history — ``get_privacy_spent(DEFAULT_ALPHAS, Σ_i compute_rdp(q_i, σ_i, T_i))``
    with Opacus' own analysis functions — but memoises the per-step RDP curve of each
    ``(σ, q)`` (``compute_rdp`` is linear in the step count, ``rdp·T``), since Opacus'
    pure-Python curve costs ~0.1 s per entry. The result is bit-identical to the accountant's.
    """
    check_accountant(accountant)
    history = opacus_history(events)
    if not history:
        return 0.0
    if any(h[0] == 0.0 for h in history):
        return math.inf  # a release without noise under add/remove (e.g. an exact count)
    if accountant == "prv":
        return accountant_epsilon(make_accountant(accountant, history), delta)
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    with quiet_warnings():
        total = sum([_rdp_curve(sigma, q) * steps for sigma, q, steps in history])
        eps, _ = analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=total, delta=delta)
    eps = float(eps)
    if math.isnan(eps):
        raise AccountingError("the accountant returned NaN for ε; check σ and q of the events")
    return eps


def record_epsilon(events: Iterable[Any], delta: float, relation: str = "add_remove", accountant: str = "rdp") -> float:
    """A hospital's record-level ε at ``delta`` under ``relation`` (see module docstring)."""
    check_relation(relation)
    events = record_level(events)
    if relation == "add_remove":
        return opacus_epsilon(events, delta, accountant)
    return dpa_epsilon(events, delta, "replace_one", "pld")


def _grouped(events: Iterable[Any], relation: str) -> list[Any]:
    """dp_accounting events, identical mechanisms merged into one self-composition.

    Composition is commutative, so merging equal ``(σ, q)`` steps (and equal Gaussian
    releases) anywhere in the list gives the same ε and a much faster PLD."""
    import dp_accounting as dpa

    counts: dict[tuple, int] = {}
    order: list[tuple] = []
    out: list[Any] = []
    for ev in events:
        if ev.kind == "poisson_sampled_gaussian":
            key = ("psg", ev.noise_multiplier, ev.sample_rate)
            n = ev.steps
        elif ev.kind == "gaussian_release":
            key = ("g", ev.std, ev.sensitivity_add_remove, ev.sensitivity_replace_one)
            n = ev.count
        else:
            out.append(ev.to_dp_accounting(relation))
            continue
        if key not in counts:
            order.append((key, ev))
            counts[key] = 0
        counts[key] += n
    for key, ev in order:
        from dataclasses import replace

        field = "steps" if key[0] == "psg" else "count"
        out.append(replace(ev, **{field: counts[key]}).to_dp_accounting(relation))
    return out


def dp_accounting_event(events: Iterable[Any], relation: str = "add_remove") -> Any:
    """The dp_accounting ``ComposedDpEvent`` of ``events`` under ``relation``."""
    import dp_accounting as dpa

    return dpa.ComposedDpEvent(_grouped(events, relation))


def dpa_epsilon(
    events: Iterable[Any], delta: float, relation: str = "add_remove", method: str = "pld",
    discretization: float = PLD_DISCRETIZATION,
) -> float:
    """ε recomputed by Google's dp_accounting alone (``method`` ``"rdp"`` or ``"pld"``).

    Raises:
        AccountingError: dp_accounting cannot account these events under this relation
            (e.g. RDP of Poisson sampling under replace-one).
    """
    from dp_accounting import NeighboringRelation as NR

    check_relation(relation)
    events = list(events)
    if not events:
        return 0.0
    rel = NR.ADD_OR_REMOVE_ONE if relation == "add_remove" else NR.REPLACE_ONE
    if method == "rdp":
        from dp_accounting.rdp import RdpAccountant

        acc = RdpAccountant(neighboring_relation=rel)
    elif method == "pld":
        from dp_accounting.pld import PLDAccountant

        acc = PLDAccountant(neighboring_relation=rel, value_discretization_interval=discretization)
    else:
        raise AccountingError(f"unknown dp_accounting method {method!r}: use rdp or pld")
    ev = dp_accounting_event(events, relation)
    if not acc.supports(ev):
        raise AccountingError(
            f"dp_accounting's {method.upper()} accountant does not support these events under {relation}"
        )
    with quiet_warnings():
        eps = float(acc.compose(ev).get_epsilon(delta))
    if math.isnan(eps):
        raise AccountingError("dp_accounting returned NaN for ε; check the events")
    return eps


def client_epsilon(events: Iterable[Any], delta: float, relation: str | None = None) -> float:
    """Client-level ε of the distributed-discrete-Gaussian events at ``delta``.

    ``relation`` (default: each event's own) picks the sensitivity Δ or 2Δ; each event's
    ``sample_rate`` is the amplification credit it states (see
    :func:`dp.events.client_sample_rate`)."""
    from dataclasses import replace

    from fedvault.dp.noise import ddg_epsilon

    evs = client_level(events)
    if relation is not None:
        check_relation(relation)
        evs = [replace(e, relation=relation) for e in evs]
    return ddg_epsilon(evs, delta) if evs else 0.0


@lru_cache(maxsize=4096)
def _rdp_curve(sigma: float, q: float) -> Any:
    """Opacus' RDP of one Poisson-subsampled Gaussian step at ``RDPAccountant.DEFAULT_ALPHAS``."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    curve = analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)
    curve.setflags(write=False)
    return curve


class quiet_warnings:
    """Silence numpy/Opacus warnings (e.g. overflow for huge ε) during accounting."""

    def __enter__(self) -> None:
        import warnings

        import numpy as np

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._np = np.seterr(all="ignore")

    def __exit__(self, *exc: object) -> None:
        import numpy as np

        np.seterr(**self._np)
        self._w.__exit__(*exc)
