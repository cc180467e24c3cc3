"""Compatibility: the hospital moved to :mod:`fl.hospital` (the legacy Flower ``Site`` and the
Flower example still import it from here)."""

from fedvault.fl.hospital import Hospital, LocalResult, clip_l2

__all__ = ["Hospital", "LocalResult", "clip_l2"]
