"""ServerApp: the coordinator of the study in ``fedvault.toml`` (fedvault's round engine over Flower)."""

from fedvault.fl.integrations.flower.app import server_app

from . import CONFIG

app = server_app(CONFIG)  # run config `fedvault-config` names another study file
