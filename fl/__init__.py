"""fedvault.fl: federated learning between hospitals (round engine, hospitals, transports, CLI).

``federate(cfg, model=..., data=...)`` runs a study in this process and returns a
:class:`~fl.simulation.FederationRun` (imported lazily: ``import fedvault.fl`` loads no torch).
"""

from typing import Any

__all__ = ["federate", "run_federation", "FederationRun"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedvault.fl import simulation

        return getattr(simulation, name)
    raise AttributeError(f"module 'fedvault.fl' has no attribute {name!r}")
