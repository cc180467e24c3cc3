"""The ``[audit]`` table of a config file: :class:`AuditSettings` and :func:`load`.

``fl.config`` validates the table too (``FOREIGN_TABLES``), so ``fedvault run`` refuses a
bad ``[audit]`` key with the same message as ``fedvault audit``.

Light on purpose (no numpy, torch or scipy): the CLI validates settings before any
heavy import.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from fedvault.dp.faults import FAULT_NAMES
from fedvault.fl.config import Config, from_dict
from fedvault.fl.errors import ConfigError

FAULTS = FAULT_NAMES  # "none", "no_noise", "no_clipping" (see fedvault.dp.faults)
CANARY_KINDS = ("gradient", "input")


@dataclass(frozen=True)
class AuditSettings:
    """The ``[audit]`` table of a config file (all keys optional).

    Attributes:
        canary_kind: ``"gradient"`` (white-box gradient canaries in the canary hospital's
            DP-SGD steps, scored on every global model; the default) or ``"input"``
            (canary records in input space, scored on the first and final model).
        canaries: canaries requested (capped by the design's slots: directions × rounds
            for gradient canaries, features (× classes) for input canaries).
        gradient_norm: a gradient canary's norm in units of ``privacy.max_grad_norm``
            (honest clipping cuts it to 1; a missing clip lets it through).
        canary_norm: input canary feature norm ``s`` in standard deviations.
        canary_hospital: ``"largest"`` or a hospital name.
        confidence: confidence of the ε lower bound (e.g. 0.95).
        seed: seed of canary design and inclusion coins (independent of training).
        canary_clients: inserted canary clients of the client-level estimate (0: skip).
        unobserved_canaries: never-inserted directions for its null distribution.
        shadow_models: LiRA shadow models (0: loss attack only).
        membership: run the membership-inference report.
        fault: ``"none"``, ``"no_noise"`` or ``"no_clipping"`` — a deliberate bug
            (:mod:`fedvault.dp.faults`) to show that the audit catches it.
    """

    canary_kind: str = "gradient"
    canaries: int = 1000
    gradient_norm: float = 100.0
    canary_norm: float = 8.0
    canary_hospital: str = "largest"
    confidence: float = 0.95
    seed: int = 0
    canary_clients: int = 16
    unobserved_canaries: int = 500
    shadow_models: int = 4
    membership: bool = True
    fault: str = "none"

    def check(self) -> "AuditSettings":
        """Validate every key; raises :class:`ConfigError` naming the key and a fix."""
        if isinstance(self.canaries, bool) or not isinstance(self.canaries, int) or self.canaries < 4:
            raise ConfigError(f"audit.canaries = {self.canaries!r}: use a whole number >= 4, e.g. 100")
        if self.canary_kind not in CANARY_KINDS:
            raise ConfigError(f"audit.canary_kind = {self.canary_kind!r}: use one of {', '.join(CANARY_KINDS)}")
        if not (isinstance(self.gradient_norm, (int, float)) and 1 <= self.gradient_norm < 1e6):
            raise ConfigError(f"audit.gradient_norm = {self.gradient_norm!r}: use a number >= 1 (times max_grad_norm), e.g. 100")
        if not (isinstance(self.canary_norm, (int, float)) and 0 < self.canary_norm < 1e4):
            raise ConfigError(f"audit.canary_norm = {self.canary_norm!r}: use a positive number of standard deviations, e.g. 8")
        if not (isinstance(self.confidence, float) and 0.5 <= self.confidence < 1):
            raise ConfigError(f"audit.confidence = {self.confidence!r}: use a number in [0.5, 1), e.g. 0.95")
        for k in ("seed", "canary_clients", "unobserved_canaries", "shadow_models"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"audit.{k} = {v!r}: use a whole number >= 0")
        if self.canary_clients == 1 or (self.canary_clients and self.unobserved_canaries < 2):
            raise ConfigError("audit.canary_clients needs >= 2 canary clients and >= 2 unobserved_canaries (or 0 to skip)")
        if self.shadow_models == 1:
            raise ConfigError("audit.shadow_models: use 0 (loss attack only) or >= 2")
        if self.fault not in FAULTS:
            raise ConfigError(f"audit.fault = {self.fault!r}: use one of {', '.join(FAULTS)}")
        if not isinstance(self.membership, bool):
            raise ConfigError("audit.membership must be true or false")
        if not isinstance(self.canary_hospital, str) or not self.canary_hospital:
            raise ConfigError("audit.canary_hospital: use \"largest\" or a hospital name")
        return self

    def replace(self, **kw: Any) -> "AuditSettings":
        """A copy with the given keys changed (``None`` values are ignored), validated."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update({k: v for k, v in kw.items() if v is not None})
        return AuditSettings(**d).check()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def settings_from_dict(raw: Mapping[str, Any]) -> AuditSettings:
    """:class:`AuditSettings` from the ``[audit]`` table (unknown keys are refused)."""
    known = {f.name: f for f in fields(AuditSettings)}
    kw = {}
    for k, v in raw.items():
        if k not in known:
            raise ConfigError(f"unknown key {k!r} in [audit]; known keys: {', '.join(sorted(known))}")
        if known[k].type == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kw[k] = v
    return AuditSettings(**kw).check()


def load(path: str | Path) -> tuple[Config, AuditSettings]:
    """A fedvault config file plus its optional ``[audit]`` table."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; pass the path of a .toml file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e}); fix the syntax at that line") from None
    audit_raw = raw.get("audit", {})
    if not isinstance(audit_raw, Mapping):
        raise ConfigError("[audit] must be a table of keys")
    # fl.config validates the whole file, [audit] included (FOREIGN_TABLES -> settings_from_dict)
    return from_dict(raw, base_dir=p.resolve().parent), settings_from_dict(audit_raw)
