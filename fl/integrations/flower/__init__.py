"""fedvault as a Flower plug-in (``pip install fedvault[flower]``, flwr 1.41.x).

Client: ``ClientApp(mods=[FedVaultMod(load_site)])`` — DP-SGD with the hospital's
persistent ledger, then fedvault's SecAgg(+) client state machine.
Server: ``SecureFedAvg(registry, SecAggConfig(...)).start(grid, arrays, num_rounds)``
— drives the protocol's stages through Flower messages and yields only the sum.
Node material (identity key, registry, ledger, per-round secrets) lives in a node
directory on the hospital's disk: :mod:`fl.integrations.flower.node`.
"""

try:
    import flwr  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("fedvault.fl.integrations.flower needs Flower: pip install 'fedvault[flower]' (flwr 1.41.x)") from e

from .mod import FedVaultMod, PolicyError, node_dir_from_context
from .node import NodeDir, NodeSetupError, Registry, provision
from .strategy import SecureFedAvg
from .workflow import RoundAborted, RoundOutcome, SecAggConfig, secure_round


def __getattr__(name: str):  # noqa: ANN202 - the site (torch, Opacus) loads only when a stage trains
    if name in ("HospitalSite", "Site"):
        from . import site

        return getattr(site, name)
    raise AttributeError(name)

__all__ = [
    "FedVaultMod", "PolicyError", "node_dir_from_context", "NodeDir", "NodeSetupError", "Registry", "provision",
    "HospitalSite", "Site", "SecureFedAvg", "RoundAborted", "RoundOutcome", "SecAggConfig", "secure_round",
]
