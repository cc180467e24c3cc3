"""Protocol state saved and restored between Flower messages, on the hospital's own disk.

A SuperNode may start a fresh ClientApp process for every message.  Instead of
replaying the round, the node saves its live client role after every message it
answers (:func:`save`, before the reply leaves) and the next process restores it
(:func:`load`): the same object, in the same stage, with the same keys and shares.

Where.  ``<node>/rounds/<key>.state``: written atomically (temporary file, ``fsync``,
rename), mode 0600 in the 0700 node directory, deleted when the round ends or aborts,
swept at the next start.  It holds the round's secrets (ephemeral private keys, self-
mask seed, shares received), exactly what the process held in memory; nothing of it
enters a Flower record, ``Context.state`` or a log.

Format.  Python's pickle protocol with two restrictions: private keys are written as
their raw bytes (``cryptography`` keys are not picklable) and random sources as their
seed, label and position (:class:`StreamRandom`); and :func:`load` only resolves
classes of fedvault, numpy, gmpy2 and ``cryptography`` (an allowlist), so even a
tampered state file cannot name arbitrary callables.  The file is written and read
only by the hospital's own process; the server never sees or supplies it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedvault.secagg.prg import DeterministicRandom

_RAW = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
_ALLOWED = ("fedvault.", "numpy", "gmpy2", "cryptography.", "collections", "enum", "phe", "copyreg", "_codecs")
_FUNCTIONS = {("secrets", "token_bytes"), ("os", "urandom")}  # the OS CSPRNG as a role's byte source
_BUILTINS = {"frozenset", "set", "tuple", "list", "dict", "bytearray", "bytes", "int", "float", "complex", "slice",
             "range", "object", "getattr"}


class StreamRandom:
    """A seeded AES-CTR byte source (:class:`secagg.prg.DeterministicRandom`) that can be saved:
    it remembers how many bytes it gave, and a restored copy continues the same stream."""

    def __init__(self, seed: bytes, label: bytes = b"", position: int = 0) -> None:
        self._seed, self._label, self._pos = bytes(seed), bytes(label), 0
        self._d = DeterministicRandom(self._seed, self._label)
        if position:
            self(position)

    def __call__(self, n: int) -> bytes:
        out = self._d(n)
        self._pos += n
        return out

    def __reduce__(self) -> tuple:
        return (StreamRandom, (self._seed, self._label, self._pos))


def _x25519(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _ed25519(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def _x25519_pub(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


def _ed25519_pub(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, X25519PublicKey):
            return (_x25519_pub, (obj.public_bytes_raw(),))
        if isinstance(obj, Ed25519PublicKey):
            return (_ed25519_pub, (obj.public_bytes_raw(),))
        if isinstance(obj, X25519PrivateKey):
            return (_x25519, (obj.private_bytes(*_RAW),))
        if isinstance(obj, Ed25519PrivateKey):
            return (_ed25519, (obj.private_bytes(*_RAW),))
        if isinstance(obj, DeterministicRandom):
            raise pickle.PicklingError("a DeterministicRandom cannot be saved mid-stream; use StreamRandom")
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name in ("_x25519", "_ed25519", "_x25519_pub", "_ed25519_pub", "StreamRandom"):
            return super().find_class(module, name)
        if (module, name) in _FUNCTIONS or (module == "builtins" and name in _BUILTINS):
            return super().find_class(module, name)
        if module.startswith(_ALLOWED) or module in ("numpy", "gmpy2", "collections", "enum", "phe", "copyreg",
                                                     "_codecs"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a saved protocol state may not name {module}.{name}")


class SnapshotError(RuntimeError):
    """A role could not be saved (it holds something that cannot be restored) or restored."""


def dumps(role: Any) -> bytes:
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(role)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise SnapshotError(f"cannot save {type(role).__name__}: {e}") from e
    return buf.getvalue()


def loads(data: bytes) -> Any:
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - any failure means: no usable state
        raise SnapshotError(f"cannot restore the saved protocol state: {type(e).__name__}: {e}") from e


def save(path: Path, role: Any) -> None:
    """Write the role's state to ``path`` atomically (0600)."""
    data = dumps(role)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load(path: Path) -> Any | None:
    """The role saved at ``path``, or None if there is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return loads(data)


def forget(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
