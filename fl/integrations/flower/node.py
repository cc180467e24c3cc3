"""What a hospital keeps on its own disk, outside anything Flower stores or logs.

A *node directory* (``--node-config 'fedvault-dir="..."'``, mode 0700) holds:

``node.json``
    ``{"client": <fedvault client id>, "name": <hospital name>}`` (public).
``identity.pem``
    The hospital's long-term Ed25519 identity key (PKCS#8, mode 0600).  It signs
    the per-round SecAgg keys and the survivor set; it never leaves the node.
``registry.json``
    The consortium's registry: every member's client id, name and Ed25519 public
    key, agreed out of band (the PKI).  Clients check every signature against
    *their own copy*, so a server cannot substitute keys.
``ledger.json``
    The hospital's persistent privacy ledger (:class:`dp.ledger.PrivacyLedger`).
``rounds/``
    One 32-byte secret seed per secure-aggregation round in progress
    (:class:`RoundVault`).

Why the vault.  A Flower SuperNode starts a fresh ``flwr-clientapp`` process for
every message, and the only state Flower carries between them is ``Context.state``,
which Flower keeps (and may persist) itself.  Flower's own SecAgg+ mod puts its
private keys there.  fedvault instead draws one seed per round from ``os.urandom``,
keeps it in ``rounds/`` (created with ``O_EXCL``, mode 0600, deleted as soon as the
round ends) and derives all of the client's randomness from it with the AES-CTR
DRBG of :mod:`secagg.prg`; ``Context.state`` holds only the *public* messages the
server sent, from which each process rebuilds the protocol state machine by replay.
``O_EXCL`` also makes a second start of the same (session, round) fail, so a server
can never obtain two transcripts from the same keys.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedvault.secagg import keys as K

REGISTRY_FORMAT = "fedvault-flower-registry"
SEED_BYTES = 32


class NodeSetupError(RuntimeError):
    """A node directory or registry is missing or malformed; the message says what to provision."""


@dataclass(frozen=True)
class Member:
    client: int
    name: str
    identity: bytes  # raw Ed25519 public key


class Registry:
    """The consortium's members: client id -> (name, Ed25519 public key)."""

    def __init__(self, members: Mapping[int, Member]):
        self.members = dict(members)
        names = [m.name for m in self.members.values()]
        if len(set(names)) != len(names):
            raise NodeSetupError("registry lists a hospital name twice")

    def identity_keys(self) -> dict[int, bytes]:
        return {i: m.identity for i, m in self.members.items()}

    def name(self, client: int) -> str:
        return self.members[client].name

    def to_json(self) -> str:
        return json.dumps(
            {"format": REGISTRY_FORMAT, "version": 1,
             "clients": {str(i): {"name": m.name, "identity": m.identity.hex()} for i, m in sorted(self.members.items())}},
            indent=2, sort_keys=True,
        ) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Registry":
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            if doc.get("format") != REGISTRY_FORMAT or doc.get("version") != 1:
                raise ValueError("not a fedvault registry (format/version)")
            members = {}
            for k, v in doc["clients"].items():
                ident = bytes.fromhex(v["identity"])
                if len(ident) != 32:
                    raise ValueError(f"client {k}: identity must be 32 bytes")
                members[int(k)] = Member(int(k), str(v["name"]), ident)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise NodeSetupError(f"{path}: cannot read the consortium registry ({e}); run `python -m "
                                 "fedvault.fl.integrations.flower.provision` or copy the consortium's registry.json") from e
        return cls(members)


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class RoundVault:
    """Per-round secret seeds, on the node's disk only (see the module docstring)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, session_tag: bytes, round: int) -> Path:
        return self.dir / f"{session_tag.hex()}-{round}.seed"

    def create(self, session_tag: bytes, round: int) -> bytes:
        """A fresh seed for a round that never started here; refuses a second start."""
        seed = os.urandom(SEED_BYTES)
        try:
            _write_private(self._path(session_tag, round), seed, exclusive=True)
        except FileExistsError:
            raise NodeSetupError(
                f"round {round} of this session was already started on this node; refusing to start it again "
                "(restarting a round with the same keys could reveal the hospital's input)"
            ) from None
        return seed

    def get(self, session_tag: bytes, round: int) -> bytes:
        try:
            seed = self._path(session_tag, round).read_bytes()
        except FileNotFoundError:
            raise NodeSetupError(f"no secret for round {round} of this session on this node (finished, aborted "
                                 "or never started); the node cannot continue this round") from None
        if len(seed) != SEED_BYTES:
            raise NodeSetupError("corrupt round secret")
        return seed

    def burn(self, session_tag: bytes, round: int) -> None:
        """Forget a round's secret (the round is over or aborted)."""
        try:
            self._path(session_tag, round).unlink()
        except FileNotFoundError:
            pass


class NodeDir:
    """A hospital's node directory (layout in the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not (self.path / "node.json").is_file():
            raise NodeSetupError(f"{self.path} is not a fedvault node directory (no node.json); provision it with "
                                 "`python -m fedvault.fl.integrations.flower.provision`")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise NodeSetupError(f"{self.path} is readable by others (mode {mode:o}); run chmod 700 on it")
        info = json.loads((self.path / "node.json").read_text(encoding="utf-8"))
        self.client = int(info["client"])
        self.name = str(info["name"])
        self.registry = Registry.load(self.path / "registry.json")
        member = self.registry.members.get(self.client)
        if member is None or member.name != self.name:
            raise NodeSetupError(f"client {self.client} ({self.name}) is not in this node's registry")
        self.vault = RoundVault(self.path / "rounds")
        self.ledger_path = self.path / "ledger.json"

    def identity(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key((self.path / "identity.pem").read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey) or K.public_bytes(key) != self.registry.members[self.client].identity:
            raise NodeSetupError(f"{self.path}/identity.pem does not match the registry's key for {self.name}")
        return key


def provision(root: str | os.PathLike[str], names: list[str], dirs: list[str] | None = None) -> Registry:
    """Create node directories ``root/<dirs[k]>`` (default: the names) with fresh identity
    keys, and ``root/registry.json``.

    The one-machine stand-in for a consortium's enrolment: in a real deployment each
    hospital generates its key on its own machine and sends only the public key.
    Client ids are 1, 2, ... in the order of ``names``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys = {i + 1: Ed25519PrivateKey.generate() for i in range(len(names))}
    reg = Registry({i: Member(i, names[i - 1], K.public_bytes(k)) for i, k in keys.items()})
    (root / "registry.json").write_text(reg.to_json(), encoding="utf-8")
    for i, name in enumerate(names, start=1):
        d = root / (dirs[i - 1] if dirs else name)
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        pem = keys[i].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        _write_private(d / "identity.pem", pem)
        (d / "node.json").write_text(json.dumps({"client": i, "name": name}) + "\n", encoding="utf-8")
        (d / "registry.json").write_text(reg.to_json(), encoding="utf-8")
    return reg
