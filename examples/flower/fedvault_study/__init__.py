"""Flower app: the breast-cancer study of ``fedvault.toml`` on fedvault's round engine."""

from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "fedvault.toml"  # the study; `fedvault run` takes the same file
