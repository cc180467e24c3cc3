"""One vocabulary of privacy events, in the style of ``dp_accounting``'s ``DpEvent``.

Every value fedvault releases about patients is one of these frozen events in the
releasing hospital's ledger (:mod:`dp.ledger`). An event describes *what happened*
(mechanism, noise, sampling, sensitivity); ε is always recomputed from events by an
accountant, never stored as the source of truth. The JSON form of an event is a flat
object with a ``kind`` key, so an auditor can rebuild the ``dp_accounting`` events with
the mapping below and recompute ε without fedvault.

Neighbouring relations (``RELATIONS``)
--------------------------------------
``"add_remove"``: the two data sets differ by one record (hospital) added or removed.
``"replace_one"``: one record (hospital) is replaced by another; the number of records
is the same, so counts released exactly cost nothing, but every per-record bound
counts twice (a replaced record moves a sum by up to twice its bound).

Each event names the relation its hospital's ε is stated under (``relation``); its
parameters are enough to account it under *both* relations, which is what
``fedvault verify`` does.

Events
------
``PoissonSampledGaussian`` (record level, DP-SGD)
    ``steps`` compositions of the Poisson-subsampled Gaussian with rate ``q`` and noise
    multiplier ``σ`` (std ``σC`` on a sum of per-record contributions of norm ≤ ``C``).
    dp_accounting: ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)),
    steps)``, composed by an accountant of the stated ``NeighboringRelation``
    (``ADD_OR_REMOVE_ONE`` or ``REPLACE_ONE``; dp_accounting's PLD treats REPLACE_ONE as
    two records of norm ≤ C, i.e. a shift of up to 2C).

``GaussianRelease`` (record level: noised statistics, metrics)
    ``count`` releases of a vector plus ``N(0, std² I)``, whose L2 sensitivity is
    ``sensitivity_add_remove`` / ``sensitivity_replace_one`` under each relation (given
    explicitly, since e.g. an exact count has sensitivity 1 vs 0). Its noise multiplier
    under relation r is ``z_r = std / sensitivity_r``.
    dp_accounting: add/remove: ``SelfComposedDpEvent(GaussianDpEvent(z_ar), count)``;
    replace-one (PLD, which doubles a unit shift): ``GaussianDpEvent(2·z_ro)``.

``DistributedDiscreteGaussian`` (client level, Kairouz, Liu & Steinke ICML 2021)
    Each of at least ``threshold`` hospitals adds ``N_Z(0, σ_c²)`` to its clipped,
    scaled, rounded update inside secure aggregation. Per-hospital L2 bound
    ``Δ = scale·C + coord_error·√d``; replace-one sensitivity ``2Δ``. Client sampling
    with rate ``sample_rate`` < 1 is amplification credit and is only legitimate when
    the coins are secret and participation is hidden from the party the ε is stated
    against (:func:`client_sample_rate`). RDP per round (:func:`dp.noise.ddg_rdp`); with
    ``sample_rate`` = 1 it is exactly ``ZCDpEvent(ρ, ξ)`` of dp_accounting with the
    branch of the bound that is smaller (:meth:`DistributedDiscreteGaussian.zcdp`).

``Composed``
    A sequence of events, accounted as their composition (dp_accounting
    ``ComposedDpEvent``). A ledger is a ``Composed`` of its events per level.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Iterable, Mapping, Union

from fedvault.dp.errors import AccountingError

RELATIONS = ("add_remove", "replace_one")
RELATION_TEXT = {
    "add_remove": "add/remove one record",
    "replace_one": "replace one record",
}
RECORD, CLIENT = "record", "client"


class _EventJSON:
    """``to_dict`` / ``from_dict`` shared by every event class."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form ``{"kind", "level", <fields>}`` (strict JSON)."""
        return _plain_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; raises ``LedgerIntegrityError`` on a bad dict."""
        from fedvault.dp.errors import LedgerIntegrityError

        try:
            ev = from_dict(d)
        except AccountingError as e:
            raise LedgerIntegrityError(f"invalid event {d!r}: {e}") from e
        if not isinstance(ev, cls):
            raise LedgerIntegrityError(f"expected a {cls.kind} event, got {ev.kind}")
        return ev


def check_relation(relation: str) -> str:
    """Validate a neighbouring-relation name and return it."""
    if relation not in RELATIONS:
        raise AccountingError(
            f"unknown neighbouring relation {relation!r}: use one of {', '.join(RELATIONS)}"
        )
    return relation


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise AccountingError(f"event {name} must be an integer >= {lo}, got {v!r}")
    return v


def _num(name: str, v: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise AccountingError(f"event {name} must be a finite number, got {v!r}")
    v = float(v)
    if positive and v <= 0:
        raise AccountingError(f"event {name} must be > 0, got {v!r}")
    if nonneg and v < 0:
        raise AccountingError(f"event {name} must be >= 0, got {v!r}")
    return v


def _relation_or_none(v: Any) -> str | None:
    return None if v is None else check_relation(v)


@dataclass(frozen=True)
class PoissonSampledGaussian(_EventJSON):
    """DP-SGD in one round: ``steps`` Poisson-subsampled Gaussian steps (record level).

    Attributes:
        round: federation round (>= 0).
        noise_multiplier: σ > 0; noise std is ``σ · max_grad_norm`` on the clipped sum.
        sample_rate: Poisson sampling probability q in (0, 1].
        steps: optimizer steps actually taken (>= 1).
        sampling: ``"poisson"`` (the only method accounted here).
        relation: relation the hospital's ε is stated under; ``None`` until a ledger
            records the event (the ledger stamps its own relation).
        purpose: what the steps trained (``"dp-sgd"``, ``"personalisation"``, ...).
    """

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    sampling: str = "poisson"
    relation: str | None = None
    purpose: str = "dp-sgd"

    kind = "poisson_sampled_gaussian"
    level = RECORD

    def __post_init__(self) -> None:
        _int("round", self.round, 0)
        _int("steps", self.steps, 1)
        for name in ("noise_multiplier", "sample_rate"):
            object.__setattr__(self, name, _num(name, getattr(self, name)))
        if self.noise_multiplier <= 0:
            raise AccountingError(
                f"noise_multiplier must be > 0 (got {self.noise_multiplier}): without noise "
                "DP-SGD gives no privacy guarantee"
            )
        if not 0.0 < self.sample_rate <= 1.0:
            raise AccountingError(f"sample_rate must lie in (0, 1], got {self.sample_rate}")
        if self.sampling != "poisson":
            raise AccountingError(f"sampling {self.sampling!r} is not supported: use 'poisson'")
        _relation_or_none(self.relation)

    def opacus_entry(self) -> tuple[float, float, int]:
        """``(σ, q, steps)`` as an Opacus accountant history entry (add/remove)."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def to_dp_accounting(self, relation: str) -> Any:
        import dp_accounting as dpa

        check_relation(relation)
        inner = dpa.PoissonSampledDpEvent(self.sample_rate, dpa.GaussianDpEvent(self.noise_multiplier))
        return dpa.SelfComposedDpEvent(inner, self.steps)


@dataclass(frozen=True)
class GaussianRelease(_EventJSON):
    """``count`` Gaussian-noised releases of a statistic (record level).

    Attributes:
        round: federation round of the release (0: before training).
        std: standard deviation of the Gaussian noise per coordinate (> 0).
        sensitivity_add_remove: L2 sensitivity under add/remove one record
            (``math.inf`` when an exact count rides along: add/remove is then not private).
        sensitivity_replace_one: L2 sensitivity under replace-one.
        count: how many such releases (self-composition), >= 1.
        purpose: what was released (``"feature_statistics"``, ``"site_metrics"``, ...).
        relation: stated relation (stamped by the ledger when None).
    """

    round: int
    std: float
    sensitivity_add_remove: float
    sensitivity_replace_one: float
    count: int = 1
    purpose: str = "statistics"
    relation: str | None = None

    kind = "gaussian_release"
    level = RECORD

    def __post_init__(self) -> None:
        _int("round", self.round, 0)
        _int("count", self.count, 1)
        object.__setattr__(self, "std", _num("std", self.std, positive=True))
        for name in ("sensitivity_add_remove", "sensitivity_replace_one"):
            v = getattr(self, name)
            if v == math.inf or v is None:
                object.__setattr__(self, name, math.inf)
                continue
            object.__setattr__(self, name, _num(name, v, nonneg=True))
        _relation_or_none(self.relation)

    def noise_multiplier(self, relation: str) -> float:
        """``std / sensitivity`` under ``relation`` (inf for zero sensitivity, 0 for inf)."""
        s = self.sensitivity_add_remove if check_relation(relation) == "add_remove" else self.sensitivity_replace_one
        if s == 0:
            return math.inf
        return 0.0 if s == math.inf else self.std / s

    def opacus_entry(self) -> tuple[float, float, int]:
        """``(z_ar, 1.0, count)``: an unsampled Gaussian in an Opacus (add/remove) history."""
        return (self.noise_multiplier("add_remove"), 1.0, self.count)

    def to_dp_accounting(self, relation: str) -> Any:
        import dp_accounting as dpa

        z = self.noise_multiplier(relation)
        if z == math.inf:
            return dpa.NoOpDpEvent()
        if z == 0.0:
            return dpa.NonPrivateDpEvent()
        if relation == "replace_one":  # dp_accounting's REPLACE_ONE shifts a unit Gaussian by 2
            z = 2.0 * z
        return dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), self.count)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; an unbounded sensitivity is written as null."""
        d = _plain_dict(self)
        for k in ("sensitivity_add_remove", "sensitivity_replace_one"):
            if d[k] == math.inf:
                d[k] = None  # strict JSON: null = unbounded (not private under this relation)
        return d


@dataclass(frozen=True)
class DistributedDiscreteGaussian(_EventJSON):
    """One round of the distributed discrete Gaussian at client level (one hospital).

    Attributes:
        round: federation round.
        sigma_client: per-client discrete Gaussian σ_c in integer units.
        threshold: fewest clients whose noise is in the sum (secure-aggregation threshold).
        clip_norm: L2 clipping norm C of a client's update (real units).
        scale: fixed-point scale (integer units per real unit).
        dimension: d, length of the summed vector.
        sample_rate: client-sampling rate credited for amplification (1: no credit; see
            :func:`client_sample_rate` for when < 1 is legitimate).
        coord_error: bound on the per-coordinate rounding error in integer units.
        relation: relation between *hospitals* the client-level ε is stated under.
        purpose: ``"model_update"``.
    """

    round: int
    sigma_client: float
    threshold: int
    clip_norm: float
    scale: float
    dimension: int
    sample_rate: float = 1.0
    coord_error: float = 1.0
    relation: str | None = None
    purpose: str = "model_update"

    kind = "distributed_discrete_gaussian"
    level = CLIENT

    def __post_init__(self) -> None:
        _int("round", self.round, 0)
        _int("threshold", self.threshold, 1)
        _int("dimension", self.dimension, 1)
        object.__setattr__(self, "sigma_client", _num("sigma_client", self.sigma_client, positive=True))
        object.__setattr__(self, "clip_norm", _num("clip_norm", self.clip_norm, positive=True))
        object.__setattr__(self, "scale", _num("scale", self.scale, positive=True))
        object.__setattr__(self, "coord_error", _num("coord_error", self.coord_error, nonneg=True))
        object.__setattr__(self, "sample_rate", _num("sample_rate", self.sample_rate))
        if not 0 < self.sample_rate <= 1:
            raise AccountingError("sample_rate must lie in (0, 1]")
        _relation_or_none(self.relation)

    @property
    def l2_bound(self) -> float:
        """Δ = scale·C + coord_error·√d: L2 norm bound of one client's integer vector."""
        return self.scale * self.clip_norm + self.coord_error * math.sqrt(self.dimension)

    def l2_sensitivity_for(self, relation: str) -> float:
        """Δ under add/remove one hospital, 2Δ under replace-one."""
        return self.l2_bound * (2.0 if check_relation(relation) == "replace_one" else 1.0)

    @property
    def l2_sensitivity(self) -> float:
        """Sensitivity under the stated relation (add/remove when none is stated)."""
        return self.l2_sensitivity_for(self.relation or "add_remove")

    def zcdp(self, relation: str | None = None) -> tuple[float, float]:
        """``(ρ, ξ)`` with per-round RDP ``ε(α) ≤ ξ + ρα`` (no client sampling).

        The DDG bound (module docstring of :mod:`dp.noise`) is the minimum of two lines
        in α; either line is a valid RDP bound on its own. This returns the second,
        ``ρ = (Δ/(√n σ_c) + τ√d)²/2, ξ = 0`` (both coincide when τ underflows to 0, i.e.
        for σ_c ≳ 6), i.e. dp_accounting's ``ZCDpEvent(ρ, ξ)``.
        """
        from fedvault.dp.noise import ddg_tau

        n, s, d = self.threshold, self.sigma_client, self.dimension
        c = self.l2_sensitivity_for(relation or self.relation or "add_remove") / (math.sqrt(n) * s)
        tau = ddg_tau(s, n)
        if tau == 0.0:
            return (c * c / 2, 0.0)
        return ((c + math.sqrt(d) * tau) ** 2 / 2, 0.0)

    def to_dp_accounting(self, relation: str) -> Any:
        """dp_accounting ``ZCDpEvent``; only without amplification credit (sample_rate 1)."""
        import dp_accounting as dpa

        if self.sample_rate < 1:
            raise AccountingError(
                "dp_accounting has no subsampled distributed-discrete-Gaussian event; client "
                "sampling credit is accounted by fedvault's Zhu–Wang bound (dp.noise.ddg_rdp)"
            )
        rho, xi = self.zcdp(relation)
        return dpa.ZCDpEvent(rho, xi)


@dataclass(frozen=True)
class Composed:
    """The composition of ``events`` (dp_accounting ``ComposedDpEvent``)."""

    events: tuple["Event", ...] = field(default_factory=tuple)

    kind = "composed"

    def to_dp_accounting(self, relation: str) -> Any:
        import dp_accounting as dpa

        return dpa.ComposedDpEvent([e.to_dp_accounting(relation) for e in self.events])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "events": [to_dict(e) for e in self.events]}


Event = Union[PoissonSampledGaussian, GaussianRelease, DistributedDiscreteGaussian]
EVENT_TYPES: dict[str, type] = {
    c.kind: c for c in (PoissonSampledGaussian, GaussianRelease, DistributedDiscreteGaussian)
}


def _plain_dict(ev: Any) -> dict[str, Any]:
    d = {"kind": ev.kind, "level": ev.level}
    d.update({f.name: getattr(ev, f.name) for f in fields(ev)})
    return d


def to_dict(ev: Any) -> dict[str, Any]:
    """JSON form of an event: ``{"kind", "level", <fields>}`` (strict JSON, no inf/NaN)."""
    if hasattr(ev, "to_dict"):
        return ev.to_dict()
    return _plain_dict(ev)


def from_dict(d: Mapping[str, Any]) -> Any:
    """Inverse of :func:`to_dict`. A dict without ``kind`` is a version-1 DP-SGD event.

    Raises:
        AccountingError: unknown kind, unknown or missing keys, invalid values.
    """
    if not isinstance(d, Mapping):
        raise AccountingError(f"an event must be a JSON object, got {type(d).__name__}")
    d = dict(d)
    kind = d.pop("kind", PoissonSampledGaussian.kind)
    level = d.pop("level", None)
    if kind == Composed.kind:
        return Composed(tuple(from_dict(e) for e in d.get("events", [])))
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise AccountingError(f"unknown event kind {kind!r}; known: {', '.join(EVENT_TYPES)}")
    if level is not None and level != cls.level:
        raise AccountingError(f"event kind {kind!r} is {cls.level}-level, not {level!r}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    keys = set(d)
    if not required <= keys or not keys <= names:
        raise AccountingError(
            f"{kind} event keys {sorted(keys)} do not match the schema {sorted(names)} "
            f"(required: {sorted(required)})"
        )
    if cls is GaussianRelease:
        for k in ("sensitivity_add_remove", "sensitivity_replace_one"):
            if d.get(k, 0) is None:
                d[k] = math.inf
    return cls(**d)


def with_relation(ev: Any, relation: str) -> Any:
    """``ev`` with its relation stamped (unchanged if already ``relation``).

    Raises:
        AccountingError: the event already states another relation.
    """
    check_relation(relation)
    if ev.relation is None:
        return replace(ev, relation=relation)
    if ev.relation != relation:
        raise AccountingError(
            f"{ev.kind} event of round {ev.round} is stated under {ev.relation!r}, the ledger under "
            f"{relation!r}; one hospital states one relation"
        )
    return ev


def client_sample_rate(q: float, *, coins_secret: bool, participation_hidden: bool) -> float:
    """The client-sampling rate a client-level ε may credit against one party.

    Amplification by sampling needs the party not to know who took part: the coins must
    be secret (drawn from the OS CSPRNG, not a config seed) *and* participation must be
    hidden from that party (not listed in history, not visible as an exact participant
    count). Otherwise the credit is void and the rate is 1.
    """
    if not 0 < q <= 1:
        raise AccountingError(f"client sample rate must lie in (0, 1], got {q!r}")
    return float(q) if (coins_secret and participation_hidden) else 1.0


def record_level(events: Iterable[Any]) -> list[Any]:
    """The record-level events (DP-SGD and Gaussian releases), in order."""
    return [e for e in events if e.level == RECORD]


def client_level(events: Iterable[Any]) -> list[Any]:
    """The client-level events (distributed discrete Gaussian), in order."""
    return [e for e in events if e.level == CLIENT]
