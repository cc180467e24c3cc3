"""Decrypt-once records: a decryptor answers at most one contributor set per (session, round).

Why: two answers for one round over sets that differ by one hospital reveal that hospital's
update (their difference).  Memory is not enough: a restarted decryptor, or a second
process holding the same key, would answer again.  So every decryptor role is given a
:class:`DecryptLog` and *claims* the round in it -- after every check of the request has
passed (so a malformed or malicious request consumes nothing) and before it computes or
releases anything that depends on the key.  A claim of the same record again (same
contributors, same aggregate: e.g. the answer was lost and the server asks again) is
allowed; it reveals nothing new.

The roles do no I/O themselves; the caller passes the log.  :class:`MemoryDecryptLog` is
for simulations and tests; :class:`DirectoryDecryptLog` is the durable one: one file per
(session, round), created with an atomic ``link`` (exactly one of several concurrent
claimers wins, and a crash leaves either no record or a complete one).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes

from ..errors import AlreadyAnsweredError, ProtocolError

__all__ = ["DecryptLog", "MemoryDecryptLog", "DirectoryDecryptLog", "record_bytes"]


def record_bytes(contributors: tuple[int, ...], aggregate_digest: bytes) -> bytes:
    """The canonical record of one answer: sorted contributor ids and SHA-256 of the summed ciphertexts."""
    return json.dumps({"contributors": list(contributors), "aggregate_sha256": aggregate_digest.hex()},
                      sort_keys=True).encode()


@runtime_checkable
class DecryptLog(Protocol):
    """Durable decrypt-once state of one decrypting party."""

    def claim(self, session_id: bytes, round: int, record: bytes) -> None:
        """Record that this party answers ``record`` for ``(session_id, round)``.

        Raises :class:`~protocols.errors.AlreadyAnsweredError` if a *different* record is
        already there; returns normally if none was or the same one was.
        """
        ...


class MemoryDecryptLog:
    """In-memory log (simulations, tests): lost when the process ends."""

    def __init__(self) -> None:
        self._records: dict[tuple[bytes, int], bytes] = {}

    def claim(self, session_id: bytes, round: int, record: bytes) -> None:
        key = (bytes(session_id), int(round))
        old = self._records.setdefault(key, bytes(record))
        if old != record:
            raise AlreadyAnsweredError(f"already answered a different set of contributors for round {round}; "
                                       "a second answer could be differenced against the first")


class DirectoryDecryptLog:
    """One file per (session, round) in ``directory`` (create it with mode 0700 on the decryptor's machine).

    ``claim`` writes the record to a temporary file, ``fsync`` s it, and ``os.link`` s it to
    its final name, which fails if the name exists: the first claim wins atomically, even
    across processes sharing the directory; a later different claim is refused.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ProtocolError(f"decrypt log directory {self.directory} does not exist; create it (mode 0700)")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # a saved role (fl.integrations.flower.snapshot) names only fedvault classes and builtins
        return (type(self), (os.fspath(self.directory),))

    def _path(self, session_id: bytes, round: int) -> Path:
        h = hashes.Hash(hashes.SHA256())
        h.update(b"fedvault/paillier/decrypt-log/v1\x00" + bytes(session_id))
        return self.directory / f"{h.finalize().hex()[:32]}-{int(round):010d}.json"

    def claim(self, session_id: bytes, round: int, record: bytes) -> None:
        path = self._path(session_id, round)
        if path.exists():
            self._compare(path, record, round)
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".claim-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                self._compare(path, record, round)
                return
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            os.unlink(tmp)

    @staticmethod
    def _compare(path: Path, record: bytes, round: int) -> None:
        if path.read_bytes() != record:
            raise AlreadyAnsweredError(f"already answered a different set of contributors for round {round} "
                                       f"(record {path.name}); a second answer could be differenced against the first")
