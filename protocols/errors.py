"""The one exception hierarchy of :mod:`protocols`.

A protocol object raises :class:`ProtocolError` (or a subclass) for anything a peer
could cause: malformed bytes, a message in the wrong stage, a replay, a bad
signature, a request that would leak. Honest callers never see one unless a peer
misbehaves or the round cannot complete.
"""


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocols`."""


class DecodeError(ProtocolError, ValueError):
    """Bytes on the wire are not a valid message of the expected schema and version."""


class StageError(ProtocolError):
    """A message or call arrived in a stage where it is not allowed."""


class RefusedError(ProtocolError):
    """An honest party refuses a request because answering it could leak private data."""


class AbortError(ProtocolError):
    """The round cannot complete (too few survivors); nothing private was revealed."""
