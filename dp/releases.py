"""The release inventory: every value a run releases that depends on patient data.

A run records its inventory in history.json (``history["releases"]``, a list of
:meth:`Release.to_dict`); README and SECURITY.md print the same table. ``fedvault
verify`` checks the stated neighbouring relation against it: a value released *exactly*
that changes when one record is added or removed (a record count, or a sampling rate /
step count computed from it) makes an add/remove ε invalid, so such a run must state
replace-one (under which a count is invariant).

Protections (``PROTECTIONS``):

``"dp"``             noised; its event is in the releasing hospital's ledger.
``"dp_post"``        computed only from DP releases (post-processing, no extra cost).
``"exact_count"``    an exact count (records, held-out records, participants): free under
                     replace-one, not private under add/remove.
``"public"``         derived from public inputs only (config, declared ranges).
``"simulation_only"`` computed in the in-process simulation only, never in a deployment;
                     labelled as such in history and output, not covered by any ε.
``"not_released"``   stays with the hospital.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

PROTECTIONS = ("dp", "dp_post", "exact_count", "public", "simulation_only", "not_released")
SIMULATION_ONLY = "simulation only: not DP, never computed in a deployment"


@dataclass(frozen=True)
class Release:
    """One released value and how it is protected.

    Attributes:
        value: what is released (short name, e.g. ``"model_update_sum"``).
        where: where it appears (``history.rounds[].metrics``, ``to the server`` ...).
        protection: one of ``PROTECTIONS``.
        event: the ledger event ``purpose`` that charges it (for ``"dp"``), else None.
        note: one line for the table.
    """

    value: str
    where: str
    protection: str
    event: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.protection not in PROTECTIONS:
            raise ValueError(f"protection {self.protection!r} is not one of {PROTECTIONS}")

    @property
    def exact_count(self) -> bool:
        return self.protection == "exact_count"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "where": self.where, "protection": self.protection,
                "event": self.event, "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Release":
        return cls(str(d["value"]), str(d.get("where", "")), str(d["protection"]), d.get("event"),
                   str(d.get("note", "")))


def run_inventory(
    *,
    private: bool,
    standardise: str,
    site_metrics: str,
    client_level: bool,
    personalization: bool,
    baseline: bool,
    audit: bool = False,
    test_set: str = "server",
) -> list[Release]:
    """The inventory of one fedvault run (the engine writes it into history.json).

    Args:
        private: record-level DP-SGD is on.
        standardise: ``"dp"`` (noised sums, charged), ``"public"`` (declared ranges only),
            ``"exact"`` (privacy disabled) or ``"none"``.
        site_metrics: ``"off"`` (not released) or ``"simulation"`` (exact, labelled).
        client_level: distributed discrete Gaussian noise is on.
        personalization: hospitals fine-tune and report held-out metrics.
        baseline: the pooled, non-private baseline is trained (simulation only).
        audit: the run is an audit run (reruns, shadow models: simulation only).
        test_set: ``"server"`` (the server's own test records) or ``"pooled_holdout"`` (the
            hospitals' held-out records pooled at the server, e.g. CSV hospitals without a
            ``test_csv``): exact metrics on other patients' records, so simulation only.
    """
    upd = "dp" if private or client_level else "simulation_only"
    inv = [
        Release("model_update_sum", "server (aggregate only under secure aggregation); global model in history",
                upd, "dp-sgd" if private else ("model_update" if client_level else None),
                "DP-SGD (record level)" + (" + distributed discrete Gaussian (client level)" if client_level else "")
                if upd == "dp" else "no DP configured"),
        Release("global_model_and_test_metrics", "history.rounds[].metrics, final model",
                "simulation_only" if test_set == "pooled_holdout" else ("dp_post" if upd == "dp" else upd), None,
                "exact metrics on the hospitals' held-out records pooled at the server (a simulation: a deployment "
                "evaluates on the server's own records, data.test_csv)" if test_set == "pooled_holdout" else
                "computed from the DP aggregate and the server's own test set"),
        Release("record_counts", "history.hospitals[].records, update weights n_k, Σn_k", "exact_count", None,
                "exact n_k; also fixes each hospital's q = 1/ceil(n_k/B) and steps"),
        Release("holdout_counts", "history.hospitals[].holdout", "exact_count", None, "exact held-out sizes"),
        Release("participants", "history.rounds[].participants/selected", "exact_count", None,
                "who took part each round (so no client-sampling amplification is credited)"),
    ]
    if standardise == "dp":
        inv.append(Release("feature_statistics", "aggregate Σz, Σz² per feature (round 0)", "dp", "feature_statistics",
                           "Gaussian noise on sums of range-clipped features, charged before training"))
    elif standardise == "exact":
        inv.append(Release("feature_statistics", "aggregate Σx, Σx² per feature (round 0)", "simulation_only", None,
                           "exact sums (privacy disabled)"))
    elif standardise == "public":
        inv.append(Release("feature_statistics", "none", "public", None,
                           "min-max scaling from user-declared public ranges: no data used"))
    inv.append(Release("site_metrics", "history.rounds[].site_metrics",
                       "simulation_only" if site_metrics == "simulation" else "not_released", None,
                       "exact held-out loss/accuracy sums" if site_metrics == "simulation"
                       else "each hospital keeps its held-out metrics"))
    if personalization:
        inv.append(Release("personalised_models", "stay at each hospital", "not_released", "personalisation",
                           "DP fine-tuning, charged to the hospital's ledger"))
        inv.append(Release("personalised_metrics", "history.personalization", "simulation_only", None,
                           "exact held-out metrics of the personalised and global model"))
    if baseline:
        inv.append(Release("pooled_baseline", "history.final.baseline_pooled", "simulation_only", None,
                           "all records pooled, trained without DP"))
    if audit:
        inv.append(Release("audit_artefacts", "audit.json, shadow models, reruns", "simulation_only", None,
                           "train on the same records without charging any ledger"))
    inv.append(Release("privacy_ledgers", "history.privacy", "dp_post", None,
                       "the events: q and steps are functions of n_k (see record_counts)"))
    return inv


def exact_count_releases(releases: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the releases that are exact counts (invalidate add/remove)."""
    return [str(r.get("value")) for r in releases if r.get("protection") == "exact_count"]


def table(releases: Iterable[Release | Mapping[str, Any]]) -> str:
    """Markdown table of an inventory (README / closing figures)."""
    rows = [r if isinstance(r, Release) else Release.from_dict(r) for r in releases]
    out = ["| value | where | protection | ledger event | note |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.value} | {r.where} | {r.protection} | {r.event or '-'} | {r.note} |")
    return "\n".join(out)
