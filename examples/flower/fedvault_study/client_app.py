"""ClientApp: one hospital of the study in ``fedvault.toml`` (node config ``fedvault-config``: its own copy)."""

from fedvault.fl.integrations.flower.app import client_app

from . import CONFIG

app = client_app(CONFIG)
