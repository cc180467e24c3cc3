"""Refusals before any training: pure checks that return what to fix, or nothing.

Each function takes plain numbers (no config object, no torch) and returns a list of
error strings — empty when the plan is acceptable. The configuration's fail-fast
framework (``fl/config.py``, the CLI) collects them and refuses the run before any
hospital trains, so a run never spends privacy on a plan that cannot be honoured.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from fedvault.dp.errors import AccountingError
from fedvault.dp.events import RELATIONS


def suggest_delta(n: int) -> float:
    """A δ well below ``1/n``: ``10^-(ceil(log10 n) + 1)`` (e.g. n = 150 → 1e-4, n = 455 → 1e-4)."""
    return 10.0 ** -(math.ceil(math.log10(max(n, 1))) + 1)


def check_delta(delta: float, records: Mapping[str, int]) -> list[str]:
    """δ must be below ``1/n_k`` for every hospital (δ ≥ 1/n allows publishing a record).

    Args:
        delta: the configured δ.
        records: ``{hospital: n_k}`` (records a hospital trains on).
    """
    out = []
    for name, n in sorted(records.items()):
        if n >= 1 and delta >= 1.0 / n:
            out.append(
                f"privacy.delta = {delta:g} is not below 1/n = {1.0 / n:.3g} for {name} ({n} records): a "
                f"mechanism that publishes one record in full would meet it. Use delta = {suggest_delta(max(records.values())):g} "
                "(below 1/n for every hospital)"
            )
    return out


def check_relation_choice(relation: str) -> list[str]:
    if relation not in RELATIONS:
        return [f"privacy.relation = {relation!r} is not supported; use one of: {', '.join(RELATIONS)}"]
    return []


def check_plan(
    records: Mapping[str, int],
    *,
    delta: float,
    batch_size: int,
    epochs: int,
    rounds: int,
    relation: str = "replace_one",
    accountant: str = "rdp",
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    budget_epsilon: float | None = None,
    extra_events: Sequence[Any] = (),
) -> list[str]:
    """Every hospital's planned record-level spending, checked before training.

    - δ below 1/n_k (:func:`check_delta`);
    - with ``target_epsilon``: some σ ≤ 1000 reaches the target for each hospital's
      planned steps (``rounds·epochs·ceil(n_k/B)``) together with ``extra_events``;
    - with ``noise_multiplier`` and a budget: the planned rounds fit the budget, else
      say how many rounds fit (the run would otherwise refuse rounds half-way).
    """
    from fedvault.dp.accounting import record_epsilon
    from fedvault.dp.calibrate import noise_multiplier_for
    from fedvault.dp.ledger import PrivacyEvent

    errors = check_relation_choice(relation) + check_delta(delta, records)
    if errors:
        return errors
    for name, n in sorted(records.items()):
        if n < 1:
            errors.append(f"{name} has no training records; remove it or give it data")
            continue
        k = math.ceil(n / batch_size)
        q, steps = 1.0 / k, rounds * epochs * k
        if target_epsilon is not None:
            try:
                noise_multiplier_for(target_epsilon, delta, q, steps, accountant, relation=relation,
                                     extra_events=extra_events)
            except AccountingError as e:
                errors.append(f"{name} ({n} records): {e}")
        elif noise_multiplier is not None and budget_epsilon is not None:
            ev = PrivacyEvent(round=1, noise_multiplier=noise_multiplier, sample_rate=q, steps=steps)
            eps = record_epsilon(list(extra_events) + [ev], delta, relation, accountant)
            if eps > budget_epsilon:
                per = PrivacyEvent(round=1, noise_multiplier=noise_multiplier, sample_rate=q, steps=epochs * k)
                fit = 0
                while fit < rounds and record_epsilon(list(extra_events) + [per] * (fit + 1), delta, relation,
                                                      accountant) <= budget_epsilon:
                    fit += 1
                errors.append(
                    f"{name} ({n} records): {rounds} rounds at noise_multiplier = {noise_multiplier:g} cost "
                    f"ε={eps:.3g} > budget {budget_epsilon:g} ({relation}); only {fit} round(s) fit. Raise "
                    "noise_multiplier, lower training.rounds, or set target_epsilon to calibrate the noise"
                )
    return errors
