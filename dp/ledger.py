"""A hospital's privacy ledger: one event per round it took part in, budget enforcement,
and a tamper-evident JSON file.

In the style of Google's ``dp_accounting`` ``DpEvent``: a :class:`PrivacyEvent` is a
plain frozen value describing what happened in one round (``steps`` compositions of the
Poisson-subsampled Gaussian with rate ``sample_rate`` and noise multiplier
``noise_multiplier``). A :class:`PrivacyLedger` is the list of those events for one
hospital over the whole study; ε is always *recomputed* from the events by replaying them
through an Opacus accountant (:mod:`dp.accounting`), never stored as the source of
truth. Rounds a hospital sat out have no event and cost nothing.

Budget
------
With ``budget_epsilon`` set, :meth:`PrivacyLedger.would_exceed` answers, before any
training, whether recording an event would make ``ε(events + [event]) > budget`` at the
ledger's δ; :meth:`PrivacyLedger.record` refuses (raises :class:`BudgetExceeded`) such an
event. ε is non-decreasing in the number of steps, so checking the *planned* event and
never taking more than the planned steps keeps the final ε within budget.

File format and threat model
----------------------------
``save`` writes ``{"format", "version", "ledger": to_dict(), "digest": {"alg", "value"}}``
where the digest is SHA-256 (or HMAC-SHA256 when a ``key`` is given) over the canonical
JSON of ``ledger`` (sorted keys, no whitespace). ``load`` checks the schema (no unknown
or missing keys, types, ranges, strictly increasing rounds), the digest and that the
stored ε equals the ε recomputed from the events. An unkeyed digest detects corruption
and careless hand edits; only a keyed digest (HMAC with a key the editor does not hold)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fedvault.dp.accounting import check_accountant, opacus_epsilon
from fedvault.dp.errors import AccountingError, BudgetExceeded, LedgerIntegrityError

FORMAT = "fedvault-privacy-ledger"
VERSION = 1
SAMPLING_METHODS = ("poisson",)
_EVENT_KEYS = ("round", "noise_multiplier", "sample_rate", "steps", "sampling")
_LEDGER_KEYS = ("client", "delta", "accountant", "budget_epsilon", "epsilon", "events", "refused")
_EPS_RTOL = 1e-9


@dataclass(frozen=True)
class PrivacyEvent:
    """What one hospital spent in one round: ``steps`` Poisson-subsampled Gaussian steps.

    Attributes:
        round: federation round (>= 0).
        noise_multiplier: σ > 0; noise std is ``σ · max_grad_norm`` on the clipped sum.
        sample_rate: Poisson sampling probability q in (0, 1] (1 / batches per epoch).
        steps: optimizer steps actually taken (>= 1).
        sampling: ``"poisson"`` (the only method the accountants here support).
    """

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    sampling: str = "poisson"

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 0:
            raise AccountingError(f"event round must be an integer >= 0, got {self.round!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AccountingError(f"event steps must be an integer >= 1, got {self.steps!r}")
        for name in ("noise_multiplier", "sample_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AccountingError(f"event {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.noise_multiplier <= 0:
            raise AccountingError(
                f"noise_multiplier must be > 0 (got {self.noise_multiplier}): without noise "
                "DP-SGD gives no privacy guarantee"
            )
        if not 0.0 < self.sample_rate <= 1.0:
            raise AccountingError(f"sample_rate must lie in (0, 1], got {self.sample_rate}")
        if self.sampling not in SAMPLING_METHODS:
            raise AccountingError(
                f"sampling {self.sampling!r} is not supported: use one of {SAMPLING_METHODS}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON form ``{round, noise_multiplier, sample_rate, steps, sampling}``."""
        return {k: getattr(self, k) for k in _EVENT_KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PrivacyEvent":
        """Inverse of :meth:`to_dict`; rejects missing or unknown keys."""
        if not isinstance(d, Mapping):
            raise LedgerIntegrityError(f"an event must be a JSON object, got {type(d).__name__}")
        keys = set(d)
        required = set(_EVENT_KEYS) - {"sampling"}
        if not required <= keys or not keys <= set(_EVENT_KEYS):
            raise LedgerIntegrityError(
                f"event keys {sorted(keys)} do not match the schema {list(_EVENT_KEYS)}"
            )
        try:
            return cls(**dict(d))
        except AccountingError as e:
            raise LedgerIntegrityError(f"invalid event {dict(d)}: {e}") from e


class PrivacyLedger:
    """Privacy events of one hospital for a whole study, with an optional ε budget.

    Args:
        client: hospital identifier.
        delta: δ at which ε is reported, in (0, 1).
        accountant: ``"rdp"`` (Opacus ``RDPAccountant``) or ``"prv"`` (``PRVAccountant``).
        budget_epsilon: maximum ε the hospital accepts at ``delta`` (None: no cap).
    """

    def __init__(
        self,
        client: str,
        delta: float,
        accountant: str = "rdp",
        budget_epsilon: float | None = None,
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
        self.budget_epsilon = None if budget_epsilon is None else float(budget_epsilon)
        self._events: list[PrivacyEvent] = []
        self._refused: list[dict[str, Any]] = []
        self._cache: dict[tuple[PrivacyEvent, ...], float] = {}

    # -- queries ---------------------------------------------------------------
    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """The recorded events, oldest first."""
        return tuple(self._events)

    @property
    def refused(self) -> tuple[dict[str, Any], ...]:
        """Rounds this hospital declined: ``({"round": r, "reason": str}, ...)``."""
        return tuple(dict(r) for r in self._refused)

    @property
    def rounds(self) -> list[int]:
        """Rounds this hospital took part in."""
        return [e.round for e in self._events]

    def _eps(self, events: tuple[PrivacyEvent, ...]) -> float:
        if events not in self._cache:
            self._cache[events] = opacus_epsilon(events, self.delta, self.accountant)
        return self._cache[events]

    def epsilon(self) -> float:
        """ε spent so far at the ledger's δ (0 before any event)."""
        return self._eps(tuple(self._events))

    def epsilon_if(self, event: PrivacyEvent) -> float:
        """ε the hospital would have spent after also recording ``event``."""
        return self._eps(tuple(self._events) + (event,))

    def remaining(self) -> float | None:
        """Budget left (``budget − ε``), or None without a budget."""
        if self.budget_epsilon is None:
            return None
        return self.budget_epsilon - self.epsilon()

    def would_exceed(self, event: PrivacyEvent) -> str | None:
        """Reason string if recording ``event`` would push ε above the budget, else None."""
        self._check_order(event)
        if self.budget_epsilon is None:
            return None
        after = self.epsilon_if(event)
        if after > self.budget_epsilon:
            return (
                f"{self.client}: round {event.round} would raise ε from {self.epsilon():.4g} to "
                f"{after:.4g} > budget {self.budget_epsilon:.4g} at δ={self.delta:g} "
                f"(σ={event.noise_multiplier:.4g}, q={event.sample_rate:.4g}, steps={event.steps}); "
                "declining the round"
            )
        return None

    # -- updates ---------------------------------------------------------------
    def _check_order(self, event: PrivacyEvent) -> None:
        if not isinstance(event, PrivacyEvent):
            raise AccountingError(f"expected a PrivacyEvent, got {type(event).__name__}")
        if self._events and event.round <= self._events[-1].round:
            raise AccountingError(
                f"{self.client}: round {event.round} is not after the last recorded round "
                f"{self._events[-1].round}; a hospital takes part at most once per round"
            )

    def record(self, event: PrivacyEvent) -> float:
        """Append ``event`` and return the new ε.

        Raises:
            BudgetExceeded: the event would push ε above the budget (nothing recorded).
            AccountingError: the event's round is not after the last recorded round.
        """
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

    # -- JSON ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; the value of ``history.json["privacy"][client]``.

        ``{client, delta, accountant, budget_epsilon, epsilon, events: [...], refused: [...]}``
        (``epsilon`` is None if it is infinite).
        """
        eps = self.epsilon()
        return {
            "client": self.client,
            "delta": self.delta,
            "accountant": self.accountant,
            "budget_epsilon": self.budget_epsilon,
            "epsilon": eps if math.isfinite(eps) else None,
            "events": [e.to_dict() for e in self._events],
            "refused": [dict(r) for r in self._refused],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, check_epsilon: bool = True) -> "PrivacyLedger":
        """Rebuild a ledger from :meth:`to_dict` output.

        Raises :class:`LedgerIntegrityError` on unknown/missing keys, invalid events,
        rounds not strictly increasing, and (``check_epsilon``) when the stored ε differs
        from the ε recomputed from the events (relative tolerance 1e-9).
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
                d["client"], d["delta"], d["accountant"], budget_epsilon=d.get("budget_epsilon")
            )
        except AccountingError as e:
            raise LedgerIntegrityError(f"invalid ledger header: {e}") from e
        if not isinstance(d["events"], list):
            raise LedgerIntegrityError("ledger 'events' must be a list")
        for raw in d["events"]:
            ev = PrivacyEvent.from_dict(raw)
            if led._events and ev.round <= led._events[-1].round:
                raise LedgerIntegrityError(
                    f"ledger of {led.client}: rounds must strictly increase ({ev.round} after "
                    f"{led._events[-1].round})"
                )
            led._events.append(ev)
        for r in d.get("refused", []) or []:
            if not isinstance(r, Mapping) or set(r) != {"round", "reason"}:
                raise LedgerIntegrityError(f"invalid refusal entry {r!r}: want {{round, reason}}")
            try:
                led.refuse(r["round"], r["reason"])
            except AccountingError as e:
                raise LedgerIntegrityError(str(e)) from e
        if check_epsilon and "epsilon" in d:
            claimed = d["epsilon"]
            actual = led.epsilon()
            if claimed is None:
                ok = not math.isfinite(actual)
            elif isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
                ok = False
            else:
                ok = math.isclose(float(claimed), actual, rel_tol=_EPS_RTOL, abs_tol=1e-12)
            if not ok:
                raise LedgerIntegrityError(
                    f"ledger of {led.client} claims ε={claimed!r} but its events give "
                    f"ε={actual!r} ({led.accountant}, δ={led.delta:g}); the file was edited or corrupted"
                )
        return led

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyLedger):
            return NotImplemented
        return (
            self.client == other.client
            and self.delta == other.delta
            and self.accountant == other.accountant
            and self.budget_epsilon == other.budget_epsilon
            and self._events == other._events
            and self._refused == other._refused
        )

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(client={self.client!r}, delta={self.delta:g}, "
            f"accountant={self.accountant!r}, budget_epsilon={self.budget_epsilon!r}, "
            f"events={len(self._events)})"
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
        if doc["format"] != FORMAT or doc["version"] != VERSION:
            raise LedgerIntegrityError(
                f"{path}: format {doc['format']!r} version {doc['version']!r} is not "
                f"{FORMAT!r} version {VERSION}"
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
