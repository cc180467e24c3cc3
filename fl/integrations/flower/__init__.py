"""fedvault as a Flower plug-in (``pip install fedvault[flower]``, flwr 1.41 or 1.42).

Client: ``FedVaultMod(load_site).register(app)`` on a plain ``ClientApp`` — DP-SGD
with the hospital's persistent ledger, then fedvault's SecAgg(+) client state machine.
Server: ``SecureFedAvg(registry, SecAggConfig(...)).start(grid, arrays, num_rounds)``
— a Flower Message-API strategy whose training step is a secure round.
The round engine over Flower (every aggregation mode, the whole study):
``FlowerTransport(grid, roster)`` is a :class:`fl.engine.Transport`; nodes answer with
``EngineNode(load_party).register(app)`` (:mod:`.transport`).
A whole deployment from one fedvault config: ``server_app("study.toml")`` /
``client_app("study.toml")`` (:mod:`.app`), the same study as ``fedvault run study.toml``.
Node material (identity key, roster, ledger, per-round secrets) lives in a node
directory on the hospital's disk (:mod:`fl.integrations.flower.node`); each hospital
creates its key itself (``fedvault enrol``), only public keys travel
(``fedvault roster build`` / ``fedvault roster install``).

Names load lazily: ``fedvault.fl.integrations.flower.node`` and ``.cli`` import
neither Flower nor torch, so enrolment works (and ``fedvault --help`` stays fast)
without them.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "FedVaultMod": "mod", "PolicyError": "mod", "MisconfiguredError": "mod", "node_dir_from_context": "mod",
    "WeakParametersError": "mod", "node_threat_model": "mod", "node_min_cohort": "mod",
    "NodeDir": "node", "NodeSetupError": "node", "Registry": "node", "provision": "node", "enrol": "node",
    "build_roster": "node", "install_roster": "node",
    "SecureFedAvg": "strategy",
    "RoundAborted": "workflow", "Misconfigured": "workflow", "RoundOutcome": "workflow", "SecAggConfig": "workflow",
    "secure_round": "workflow",
    "InProcessGrid": "local", "flower_in_process": "local",
    "FlowerTransport": "transport", "EngineNode": "transport", "Party": "transport",
    "HospitalSite": "site", "Site": "site",
    "server_app": "app", "client_app": "app",
}
_NEEDS_FLWR = {"mod", "strategy", "workflow", "local", "wire", "transport", "app"}


def __getattr__(name: str) -> Any:
    mod = _NAMES.get(name)
    if mod is None:
        raise AttributeError(name)
    if mod in _NEEDS_FLWR:
        try:
            import flwr  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("fedvault.fl.integrations.flower needs Flower: pip install 'fedvault[flower]' "
                              "(flwr 1.41 or 1.42)") from e
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


__all__ = sorted(_NAMES)
