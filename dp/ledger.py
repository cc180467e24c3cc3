"""A hospital's privacy ledger: every privacy event of one hospital, budget enforcement,
and a tamper-evident JSON file.

In the style of Google's ``dp_accounting``: the ledger holds the hospital's events
(:mod:`dp.events`) — DP-SGD rounds (:class:`PoissonSampledGaussian`, alias
:class:`PrivacyEvent`), Gaussian releases of statistics (:class:`GaussianRelease`) and
client-level distributed-discrete-Gaussian rounds (:class:`DistributedDiscreteGaussian`)
— oldest first. ε is always *recomputed* from the events (:mod:`dp.accounting`), never
stored as the source of truth. Rounds a hospital sat out have no event and cost nothing.

One relation
------------
A ledger states its ε under one neighbouring relation (``relation``: ``"add_remove"`` or
``"replace_one"``), stamped on every event it records. Record-level ε (one patient) and
client-level ε (the whole hospital, distributed DP) are reported separately
(:meth:`PrivacyLedger.epsilon`, :meth:`PrivacyLedger.client_epsilon`).

Budget
------
With ``budget_epsilon`` set, :meth:`PrivacyLedger.would_exceed` answers, before any
training or release, whether recording a record-level event would make
``ε(events + [event]) > budget`` at the ledger's δ under its relation;
:meth:`PrivacyLedger.record` refuses (raises :class:`BudgetExceeded`) such an event. ε is
non-decreasing in the number of steps, so checking the *planned* event and never taking
more than the planned steps keeps the final ε within budget.

File format and threat model
----------------------------
``save`` writes ``{"format", "version", "ledger": to_dict(), "digest": {"alg", "value"}}``
where the digest is SHA-256 (or HMAC-SHA256 when a ``key`` is given) over the canonical
JSON of ``ledger`` (sorted keys, no whitespace). ``load`` checks the schema (no unknown
or missing keys, types, ranges, non-decreasing rounds), the digest and that the stored ε
equals the ε recomputed from the events. Version-1 files (DP-SGD events only, no
relation: they stated add/remove) still load. An unkeyed digest detects corruption and
careless hand edits; only a keyed digest (HMAC with a key the editor does not hold)
detects deliberate tampering — anyone can recompute a plain SHA-256. Either way an
auditor never has to trust the stored ε: it is recomputed from the events
(:mod:`dp.verify` does so without Opacus).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from fedvault.dp import events as E
from fedvault.dp.accounting import check_accountant, client_epsilon, record_epsilon
from fedvault.dp.errors import AccountingError, BudgetExceeded, LedgerIntegrityError
from fedvault.dp.events import (
    DistributedDiscreteGaussian,
    GaussianRelease,
    PoissonSampledGaussian,
    check_relation,
)

FORMAT = "fedvault-privacy-ledger"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SAMPLING_METHODS = ("poisson",)
_LEDGER_KEYS = (
    "client", "delta", "accountant", "relation", "budget_epsilon", "epsilon", "epsilon_accountant",
    "client_epsilon", "events", "refused", "skipped", "not_private",
)
_EPS_RTOL = 1e-9

#: The DP-SGD event (historical name); see :class:`dp.events.PoissonSampledGaussian`.
PrivacyEvent = PoissonSampledGaussian

__all__ = [
    "DistributedDiscreteGaussian", "GaussianRelease", "PoissonSampledGaussian", "PrivacyEvent",
    "PrivacyLedger", "canonical_json",
]


class PrivacyLedger:
    """Privacy events of one hospital for a whole study, with an optional ε budget.

    Args:
        client: hospital identifier.
        delta: δ at which ε is reported, in (0, 1).
        accountant: Opacus accountant kept live during training, ``"rdp"``
            (``RDPAccountant``) or ``"prv"`` (``PRVAccountant``); it states the ε under
            add/remove. Under replace-one the ε is dp_accounting's PLD.
        budget_epsilon: maximum record-level ε the hospital accepts at ``delta`` (None: no cap).
        relation: neighbouring relation the ε is stated under (``"add_remove"`` or
            ``"replace_one"``).
    """

    def __init__(
        self,
        client: str,
        delta: float,
        accountant: str = "rdp",
        budget_epsilon: float | None = None,
        relation: str = "add_remove",
    ) -> None:
        if not isinstance(client, str) or not client:
            raise AccountingError("client must be a non-empty string")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
            raise AccountingError(f"delta must lie in (0, 1), got {delta!r}; typical: 1e-5")
        if budget_epsilon is not None and (
            isinstance(budget_epsilon, bool)
            or not isinstance(budget_epsilon, (int, float))
            or not math.isfinite(budget_epsilon)
            or budget_epsilon <= 0
        ):
            raise AccountingError(
                f"budget_epsilon must be a positive finite number or None, got {budget_epsilon!r}"
            )
        self.client = client
        self.delta = float(delta)
        self.accountant = check_accountant(accountant)
        self.relation = check_relation(relation)
        self.budget_epsilon = None if budget_epsilon is None else float(budget_epsilon)
        self._events: list[Any] = []
        self._refused: list[dict[str, Any]] = []
        self._skipped: list[dict[str, Any]] = []
        self._not_private: list[dict[str, Any]] = []  # audit faults (dp.faults): never a guarantee
        self._cache: dict[tuple[Any, ...], float] = {}

    # -- queries ---------------------------------------------------------------
    @property
    def events(self) -> tuple[Any, ...]:
        """Every recorded event (record and client level), oldest first."""
        return tuple(self._events)

    @property
    def refused(self) -> tuple[dict[str, Any], ...]:
        """Rounds this hospital declined: ``({"round": r, "reason": str}, ...)``."""
        return tuple(dict(r) for r in self._refused)

    @property
    def not_private(self) -> tuple[dict[str, Any], ...]:
        """Rounds trained with a deliberate audit fault (:mod:`dp.faults`): ``({"round", "reason"}, ...)``.
        A ledger with any is not a privacy guarantee; ``fedvault verify`` refuses it."""
        return tuple(dict(r) for r in self._not_private)

    def mark_not_private(self, round: int, reason: str) -> None:
        """Record that ``round`` ran with a deliberate fault (test/audit only)."""
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise AccountingError(f"round must be an integer >= 0, got {round!r}")
        self._not_private.append({"round": round, "reason": str(reason)})

    @property
    def skipped(self) -> tuple[dict[str, Any], ...]:
        """Rounds that released nothing (e.g. too few hospitals sampled), with the reason."""
        return tuple(dict(r) for r in self._skipped)

    @property
    def rounds(self) -> list[int]:
        """Rounds this hospital trained in (DP-SGD events)."""
        return sorted({e.round for e in self._events if isinstance(e, PoissonSampledGaussian)})

    @property
    def epsilon_accountant(self) -> str:
        """Which accountant states :meth:`epsilon`: ``opacus-rdp``, ``opacus-prv`` or ``dp_accounting-pld``."""
        return f"opacus-{self.accountant}" if self.relation == "add_remove" else "dp_accounting-pld"

    def _eps(self, events: tuple[Any, ...]) -> float:
        if events not in self._cache:
            self._cache[events] = record_epsilon(events, self.delta, self.relation, self.accountant)
        return self._cache[events]

    def epsilon(self) -> float:
        """Record-level ε spent so far at the ledger's δ under its relation (0 before any event)."""
        return self._eps(tuple(E.record_level(self._events)))

    def epsilon_if(self, event: Any) -> float:
        """Record-level ε the hospital would have spent after also recording ``event``."""
        return self._eps(tuple(E.record_level(self._events)) + (E.with_relation(event, self.relation),))

    def client_epsilon(self) -> float | None:
        """Client-level ε of the distributed-DP events (None if there are none)."""
        evs = E.client_level(self._events)
        return client_epsilon(evs, self.delta) if evs else None

    def remaining(self) -> float | None:
        """Budget left (``budget − ε``), or None without a budget."""
        if self.budget_epsilon is None:
            return None
        return self.budget_epsilon - self.epsilon()

    def would_exceed(self, event: Any) -> str | None:
        """Reason string if recording ``event`` would push ε above the budget, else None."""
        event = self._check(event)
        if self.budget_epsilon is None or event.level != E.RECORD:
            return None
        after = self.epsilon_if(event)
        if after > self.budget_epsilon:
            what = (
                f"σ={event.noise_multiplier:.4g}, q={event.sample_rate:.4g}, steps={event.steps}"
                if isinstance(event, PoissonSampledGaussian)
                else f"{event.purpose}, std={event.std:.4g}"
            )
            return (
                f"{self.client}: round {event.round} would raise ε from {self.epsilon():.4g} to "
                f"{after:.4g} > budget {self.budget_epsilon:.4g} at δ={self.delta:g}, "
                f"{E.RELATION_TEXT[self.relation]} ({what}); declining the round"
            )
        return None

    # -- updates ---------------------------------------------------------------
    def _check(self, event: Any) -> Any:
        if not isinstance(event, (PoissonSampledGaussian, GaussianRelease, DistributedDiscreteGaussian)):
            raise AccountingError(f"expected a dp.events event, got {type(event).__name__}")
        event = E.with_relation(event, self.relation)
        if self._events and event.round < self._events[-1].round:
            raise AccountingError(
                f"{self.client}: round {event.round} comes before the last recorded round "
                f"{self._events[-1].round}; events are recorded in round order"
            )
        same = [e for e in self._events if e.round == event.round and e.kind == event.kind and e.purpose == event.purpose]
        if same:
            raise AccountingError(
                f"{self.client}: round {event.round} already has a {event.kind} event for "
                f"{event.purpose!r}; a hospital takes part at most once per round"
            )
        return event

    def record(self, event: Any) -> float:
        """Append ``event`` (its relation stamped) and return the new record-level ε.

        Raises:
            BudgetExceeded: the event would push ε above the budget (nothing recorded).
            AccountingError: the event's round is before the last recorded round, or it
                states another relation.
        """
        event = self._check(event)
        reason = self.would_exceed(event)
        if reason is not None:
            raise BudgetExceeded(reason, client=self.client, round=event.round)
        self._events.append(event)
        return self.epsilon()

    def refuse(self, round: int, reason: str) -> None:
        """Record that the hospital declined ``round`` (costs nothing)."""
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise AccountingError(f"round must be an integer >= 0, got {round!r}")
        self._refused.append({"round": round, "reason": str(reason)})

    def skip(self, round: int, reason: str) -> None:
        """Record that ``round`` released nothing about this hospital (costs nothing
        when no amplification credit is taken; see :func:`dp.events.client_sample_rate`)."""
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise AccountingError(f"round must be an integer >= 0, got {round!r}")
        self._skipped.append({"round": round, "reason": str(reason)})

    # -- JSON ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; the value of ``history.json["privacy"][client]``.

        ``{client, delta, accountant, relation, budget_epsilon, epsilon,
        epsilon_accountant, client_epsilon, events: [...], refused: [...], skipped: [...]}``
        (an infinite ε is written as None).
        """
        eps = self.epsilon()
        ceps = self.client_epsilon()
        return {
            "client": self.client,
            "delta": self.delta,
            "accountant": self.accountant,
            "relation": self.relation,
            "budget_epsilon": self.budget_epsilon,
            "epsilon": eps if math.isfinite(eps) else None,
            "epsilon_accountant": self.epsilon_accountant,
            "client_epsilon": None if ceps is None or not math.isfinite(ceps) else ceps,
            "events": [e.to_dict() for e in self._events],
            "refused": [dict(r) for r in self._refused],
            "skipped": [dict(r) for r in self._skipped],
            **({"not_private": [dict(r) for r in self._not_private]} if self._not_private else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, check_epsilon: bool = True) -> "PrivacyLedger":
        """Rebuild a ledger from :meth:`to_dict` output (version 1 ledgers included).

        Raises :class:`LedgerIntegrityError` on unknown/missing keys, invalid events,
        rounds going backwards, and (``check_epsilon``) when a stored ε differs from the ε
        recomputed from the events (relative tolerance 1e-9).
        """
        if not isinstance(d, Mapping):
            raise LedgerIntegrityError(f"a ledger must be a JSON object, got {type(d).__name__}")
        keys = set(d)
        required = {"client", "delta", "accountant", "events"}
        if not required <= keys or not keys <= set(_LEDGER_KEYS):
            raise LedgerIntegrityError(
                f"ledger keys {sorted(keys)} do not match the schema {list(_LEDGER_KEYS)}"
            )
        try:
            led = cls(
                d["client"], d["delta"], d["accountant"], budget_epsilon=d.get("budget_epsilon"),
                relation=d.get("relation", "add_remove"),
            )
        except AccountingError as e:
            raise LedgerIntegrityError(f"invalid ledger header: {e}") from e
        if not isinstance(d["events"], list):
            raise LedgerIntegrityError("ledger 'events' must be a list")
        for raw in d["events"]:
            try:
                ev = E.from_dict(raw)
                ev = led._check(ev)
            except AccountingError as e:
                raise LedgerIntegrityError(f"ledger of {led.client}: invalid event {raw!r}: {e}") from e
            led._events.append(ev)
        for name, add in (("refused", led.refuse), ("skipped", led.skip), ("not_private", led.mark_not_private)):
            for r in d.get(name, []) or []:
                if not isinstance(r, Mapping) or set(r) != {"round", "reason"}:
                    raise LedgerIntegrityError(f"invalid {name} entry {r!r}: want {{round, reason}}")
                try:
                    add(r["round"], r["reason"])
                except AccountingError as e:
                    raise LedgerIntegrityError(str(e)) from e
        if check_epsilon:
            for key, actual in (("epsilon", led.epsilon()), ("client_epsilon", led.client_epsilon())):
                if key not in d:
                    continue
                claimed = d[key]
                if actual is None:
                    ok = claimed is None
                elif claimed is None:
                    ok = not math.isfinite(actual)
                elif isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
                    ok = False
                else:
                    ok = math.isclose(float(claimed), actual, rel_tol=_EPS_RTOL, abs_tol=1e-12)
                if not ok:
                    raise LedgerIntegrityError(
                        f"ledger of {led.client} claims {key}={claimed!r} but its events give "
                        f"{actual!r} ({led.epsilon_accountant}, δ={led.delta:g}, {led.relation}); "
                        "the file was edited or corrupted"
                    )
        return led

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyLedger):
            return NotImplemented
        return (
            self.client == other.client
            and self.delta == other.delta
            and self.accountant == other.accountant
            and self.relation == other.relation
            and self.budget_epsilon == other.budget_epsilon
            and self._events == other._events
            and self._refused == other._refused
            and self._skipped == other._skipped
            and self._not_private == other._not_private
        )

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(client={self.client!r}, delta={self.delta:g}, "
            f"accountant={self.accountant!r}, relation={self.relation!r}, "
            f"budget_epsilon={self.budget_epsilon!r}, events={len(self._events)})"
        )

    # -- files -----------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        """Write the ledger atomically with a SHA-256 digest (HMAC-SHA256 with ``key``)."""
        body = self.to_dict()
        doc = {"format": FORMAT, "version": VERSION, "ledger": body, "digest": _digest(body, key)}
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2, sort_keys=True, allow_nan=False)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, key: bytes | None = None) -> "PrivacyLedger":
        """Read a ledger written by :meth:`save`, checking schema, digest and ε.

        Raises :class:`LedgerIntegrityError` if anything does not check out.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
            doc = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise LedgerIntegrityError(f"{path}: not a valid ledger JSON file ({e})") from e
        if not isinstance(doc, dict) or set(doc) != {"format", "version", "ledger", "digest"}:
            raise LedgerIntegrityError(
                f"{path}: not a fedvault ledger file (want keys format, version, ledger, digest)"
            )
        if doc["format"] != FORMAT or doc["version"] not in READABLE_VERSIONS:
            raise LedgerIntegrityError(
                f"{path}: format {doc['format']!r} version {doc['version']!r} is not "
                f"{FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))}"
            )
        expected = _digest(doc["ledger"], key)
        got = doc["digest"]
        if (
            not isinstance(got, dict)
            or got.get("alg") != expected["alg"]
            or not isinstance(got.get("value"), str)
            or not hmac.compare_digest(got["value"], expected["value"])
        ):
            raise LedgerIntegrityError(
                f"{path}: digest mismatch ({expected['alg']}); the ledger was edited or corrupted"
                + ("" if key is None else " or the wrong key was given")
            )
        return cls.from_dict(doc["ledger"])


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, ASCII, no NaN/inf)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _digest(body: Any, key: bytes | None) -> dict[str, str]:
    data = canonical_json(body)
    if key is None:
        return {"alg": "sha256", "value": hashlib.sha256(data).hexdigest()}
    return {"alg": "hmac-sha256", "value": hmac.new(key, data, hashlib.sha256).hexdigest()}


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not allowed")
