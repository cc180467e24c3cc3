"""What a finished study's numbers mean: intervals, the pooled baseline and per-hospital results.

:func:`complete_history` adds to a history (schema only extended):

* ``final.metrics_ci``: 95 % percentile bootstrap intervals of test accuracy and ROC-AUC;
* ``final.baseline_pooled``: the pooled baseline of :mod:`fl.baseline` (metrics, intervals,
  how it was trained) and ``gap``: federated minus baseline test accuracy in percentage
  points with a paired bootstrap interval, and a sentence saying what it means;
* ``final.per_hospital``: the final global model on each hospital's own held-out split.
  These are computed by the simulation from patient records and are not released
  through DP, so they are labelled ``"release": "simulation_only"`` (the protection name
  of :mod:`dp.releases`) — a deployment would not see them.

When the history carries the release inventory (``history["releases"]``), the rows for
what this adds (pooled baseline, per-hospital metrics) are appended, all simulation-only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedvault.fl.metrics import bootstrap_ci, metrics_from_proba, paired_difference_ci, predict_proba

SIMULATION_ONLY = "simulation_only"  # dp.releases protection: exact, never computed in a deployment


def gap_sentence(points: float, ci: list[float] | None, n_test: int, level: float = 0.95) -> str:
    """Plain words for ``federated − baseline`` accuracy in points (and its interval)."""
    if math.isnan(points):
        return "no test records: no gap can be measured"
    side = "below" if points < 0 else "above"
    s = (f"the federated model's test accuracy is {abs(points):.1f} percentage points {side} the pooled baseline's "
         f"on the same {n_test} test patients")
    if points == 0:
        s = f"the federated model and the pooled baseline classify the same share of the {n_test} test patients correctly"
    if ci is not None:
        lo, hi = 100 * ci[0], 100 * ci[1]
        s += f" ({int(level * 100)}% CI {lo:+.1f} to {hi:+.1f})"
        if lo == hi == 0:
            s += "; the two models classify every test patient the same way"
        elif lo <= 0 <= hi:
            s += "; the interval includes 0, so this test set cannot tell them apart"
        elif hi < 0:
            s += ("; the interval excludes 0: the federated model is measurably worse on these patients "
                  "(the price of privacy and federation here)")
        else:
            s += "; the interval excludes 0: the federated model is measurably better on these patients"
    return s


def complete_history(run: Any, cfg: Any, *, baseline: bool = True) -> dict[str, Any]:
    """Add intervals, the converged pooled baseline and per-hospital results to ``run.history``.

    ``run`` is a finished :class:`fl.simulation.FederationRun` (model, data, hospitals) of
    the study ``cfg``. Returns the history (changed in place).
    """
    h = run.history
    fd = run.data
    final = h.setdefault("final", {})
    y = np.asarray(fd.y_test)
    prob = predict_proba(run.model, fd.X_test) if len(y) else np.zeros((0, fd.n_classes))
    if len(y):
        final["metrics_ci"] = bootstrap_ci(y, prob, seed=cfg.seed)
    if baseline and len(y):
        from fedvault.fl import baseline as base_mod, models

        def make_model():  # the study's architecture, fresh
            return models.build(cfg.model, fd.n_features, fd.n_classes, fd.image_shape)

        b = base_mod.pooled_baseline(cfg.model.kind, fd, make_model, seed=cfg.seed)
        diff = paired_difference_ci(y, prob, b.proba, seed=cfg.seed)
        points = 100 * diff["difference"]
        final["baseline_pooled"] = {
            **b.to_dict(),
            "metrics_ci": bootstrap_ci(y, b.proba, seed=cfg.seed),
            "gap": {"accuracy_points": points,
                    "ci": None if diff["ci"] is None else [100 * diff["ci"][0], 100 * diff["ci"][1]],
                    "level": diff["level"], "meaning": gap_sentence(points, diff["ci"], len(y), diff["level"])},
        }
    per: dict[str, Any] = {}
    for hd in fd.hospitals:
        if len(hd.y_val) == 0:
            continue
        per[hd.name] = {**metrics_from_proba(hd.y_val, predict_proba(run.model, hd.X_val)),
                        "records": int(len(hd.y_val)), "release": SIMULATION_ONLY}
    if per:
        final["per_hospital"] = per
    if isinstance(h.get("releases"), list):
        from fedvault.dp.releases import Release

        have = {r.get("value") for r in h["releases"]}
        rows = []
        if "baseline_pooled" in final and "pooled_baseline" not in have:
            rows.append(Release("pooled_baseline", "history.final.baseline_pooled", SIMULATION_ONLY, None,
                                "all records pooled, trained without DP"))
        if per and "per_hospital_metrics" not in have:
            rows.append(Release("per_hospital_metrics", "history.final.per_hospital", SIMULATION_ONLY, None,
                                "exact held-out metrics of the final model per hospital"))
        h["releases"].extend(r.to_dict() for r in rows)
    return h
