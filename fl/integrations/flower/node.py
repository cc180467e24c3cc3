"""What a hospital keeps on its own disk, outside anything Flower stores or logs.

A *node directory* (``--node-config 'fedvault-dir="..."'``, mode 0700) holds:

``identity.pem``
    The hospital's long-term Ed25519 identity key (PKCS#8, mode 0600), created on
    the hospital's own machine by :func:`enrol` (``fedvault enrol``).  It signs the
    per-round protocol keys and the survivor set; it never leaves the node.
``enrolment.json``
    The public part sent to the coordinator: name, public key, fingerprint, and a
    signature by the key over the name (proof of possession).
``registry.json``
    The consortium's roster, built by the coordinator from the public enrolments
    only (:func:`build_roster`), installed by the hospital after comparing its
    fingerprint with the one announced out of band (:func:`install_roster`).
    Clients check every signature against *their own copy*, so a server cannot
    substitute keys.
``node.json``
    ``{"client": <id>, "name": <hospital name>, "roster": <pinned fingerprint>}`` (public).
``ledger.json``
    The hospital's persistent privacy ledger (:class:`dp.ledger.PrivacyLedger`).
``paillier-public.json``, ``paillier-key.json``, ``paillier-share.json``
    Paillier's key ceremony (:mod:`.ceremony`): the study's public key setup (pinned in
    ``node.json`` as ``"paillier"``), and the key holder's private key or the hospital's
    threshold share (mode 0600; :meth:`NodeDir.paillier_public`, :meth:`NodeDir.paillier_secret`).
``rounds/``
    One 32-byte secret seed and the saved protocol state per round in progress, and
    one start marker per (server session, round) ever started (:class:`RoundVault`).

Why the vault.  A Flower SuperNode may start a fresh ``flwr-clientapp`` process for
every message, and the only state Flower carries between them is ``Context.state``,
which Flower keeps (and may persist) itself.  Flower's own SecAgg+ mod puts its
private keys there.  fedvault instead draws one seed per round from ``os.urandom``,
keeps it in ``rounds/`` (created with ``O_EXCL``, mode 0600, deleted as soon as the
round ends, swept at the next start if a crash left it) and derives all of the
client's randomness from it with the AES-CTR DRBG of :mod:`secagg.prg`;
``Context.state`` holds only the *public* messages the server sent.  The start
marker makes a second start of the same (session, round) fail, so a server can
never make a hospital train twice for one round or obtain two transcripts of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedvault.fl.errors import FLError
from fedvault.secagg import keys as K

REGISTRY_FORMAT = "fedvault-flower-registry"
SEED_BYTES = 32


class NodeSetupError(FLError, RuntimeError):
    """A node directory or registry is missing or malformed; the message says what to provision."""


@dataclass(frozen=True)
class Member:
    client: int
    name: str
    identity: bytes  # raw Ed25519 public key


class Registry:
    """The consortium's roster: client id -> (name, Ed25519 public key), with its fingerprint.

    The fingerprint is the SHA-256 of the canonical member list (ids, names, keys).
    Every hospital pins it when it installs the roster (:func:`install_roster`),
    after comparing it with the one the coordinator announced out of band, so a
    roster swapped on disk or by the coordinator later is refused.
    """

    def __init__(self, members: Mapping[int, Member]):
        self.members = dict(members)
        names = [m.name for m in self.members.values()]
        if len(set(names)) != len(names):
            raise NodeSetupError("registry lists a hospital name twice")
        keys = [m.identity for m in self.members.values()]
        if len(set(keys)) != len(keys):
            raise NodeSetupError("registry lists one identity key for two hospitals")

    def identity_keys(self) -> dict[int, bytes]:
        return {i: m.identity for i, m in self.members.items()}

    def name(self, client: int) -> str:
        return self.members[client].name

    def _canonical(self) -> dict:
        return {str(i): {"name": m.name, "identity": m.identity.hex()} for i, m in sorted(self.members.items())}

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical member list: what hospitals compare and pin."""
        body = json.dumps(self._canonical(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"fedvault/roster/v1\0" + body).hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {"format": REGISTRY_FORMAT, "version": 1, "clients": self._canonical(), "fingerprint": self.fingerprint()},
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
            raise NodeSetupError(f"{path}: cannot read the consortium registry ({e}); install the roster the "
                                 "coordinator built with `fedvault roster install`") from e
        reg = cls(members)
        if "fingerprint" in doc and doc["fingerprint"] != reg.fingerprint():
            raise NodeSetupError(f"{path}: the roster's members do not match its fingerprint (edited or corrupt)")
        return reg


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class RoundVault:
    """Per-round secret seeds and start markers, on the node's disk only (see the module docstring).

    ``<tag>-<round>.seed``
        The round's 32-byte secret (mode 0600), deleted when the round ends or
        aborts, and swept at the next start if a crash left it behind.
    ``<session>-<round>.started``
        An empty marker created (``O_EXCL``) when the hospital first commits to a
        (server session, round).  It is never deleted: a second start of the same
        server session and round is refused even after the secret is gone, so the
        hospital never trains or is charged twice for one round and never answers
        the same round with two key sets.
    """

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, session_tag: bytes, round: int) -> Path:
        return self.dir / f"{session_tag.hex()}-{round}.seed"

    def _marker(self, session: bytes, round: int) -> Path:
        return self.dir / f"{hashlib.sha256(session).hexdigest()[:32]}-{round}.started"

    def started(self, session: bytes, round: int) -> bool:
        return self._marker(session, round).exists()

    def claim(self, session: bytes, round: int) -> None:
        """Mark (server session, round) as started on this node; refuses a second start."""
        try:
            _write_private(self._marker(session, round), b"", exclusive=True)
        except FileExistsError:
            raise NodeSetupError(
                f"round {round} of this session was already started on this node; refusing to start it again "
                "(a restarted round would train and charge the ledger twice, or reveal the input under two key sets)"
            ) from None

    def state_path(self, session_tag: bytes, round: int) -> Path:
        """Where the round's saved protocol state lives (:mod:`.snapshot`)."""
        return self.dir / f"{session_tag.hex()}-{round}.state"

    def sweep(self) -> list[str]:
        """Delete every round secret and saved state left on disk (a crash or a lost Flower state)."""
        gone = []
        for p in [*self.dir.glob("*.seed"), *self.dir.glob("*.state"), *self.dir.glob("*.state.tmp*")]:
            try:
                p.unlink()
                gone.append(p.name)
            except FileNotFoundError:
                pass
        return gone

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
        """Forget a round's secret and saved state (the round is over or aborted)."""
        for p in (self._path(session_tag, round), self.state_path(session_tag, round)):
            try:
                p.unlink()
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
        if "client" not in info or not (self.path / "registry.json").is_file():
            raise NodeSetupError(f"{self.path} has no installed roster (enrolled, but `fedvault roster install "
                                 f"roster.json --node {self.path} --fingerprint HEX` was not run yet)")
        self.client = int(info["client"])
        self.name = str(info["name"])
        self.registry = Registry.load(self.path / "registry.json")
        pinned = info.get("roster")
        if pinned is not None and pinned != self.registry.fingerprint():
            raise NodeSetupError(f"{self.path}/registry.json is not the roster this hospital accepted (fingerprint "
                                 f"{self.registry.fingerprint()[:16]}..., pinned {str(pinned)[:16]}...)")
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

    def paillier_public(self) -> Any:
        """The installed Paillier public setup (:class:`~protocols.paillier.PublicSetup`), checked against this
        node's roster and its pinned fingerprint; raises :class:`.ceremony.CeremonyError` saying what to install."""
        from .ceremony import node_public

        return node_public(self).setup

    def paillier_secret(self) -> Any:
        """This node's Paillier secret: the key holder's private key, this hospital's threshold key share, or
        ``None`` when it decrypts nothing; checked against the installed public setup (:mod:`.ceremony`)."""
        from .ceremony import node_secret

        return node_secret(self)


ENROLMENT_FORMAT = "fedvault-enrolment"
_POP_DOMAIN = b"fedvault/enrol/v1\0"


def _pop_message(name: str, identity: bytes) -> bytes:
    return _POP_DOMAIN + name.encode("utf-8") + b"\0" + identity


def enrol(name: str, out: str | os.PathLike[str]) -> dict:
    """Create a hospital's node directory ``out`` (mode 0700) with a fresh identity key.

    Run on the hospital's own machine.  Writes ``identity.pem`` (Ed25519, PKCS#8,
    mode 0600, never leaves the machine), ``node.json`` and ``enrolment.json``: the
    public part to send to the coordinator — the name, the public key, its
    fingerprint and a signature by the key over the name (proof that the sender
    holds the private key).  Returns that public document.  Refuses to overwrite an
    existing identity.
    """
    if not name or len(name) > 200 or any(c in name for c in "\0\n/"):
        raise NodeSetupError("hospital name must be 1-200 printable characters without '/'")
    d = Path(out)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        _write_private(d / "identity.pem", pem, exclusive=True)
    except FileExistsError:
        raise NodeSetupError(f"{d} already holds an identity key; enrol into a new directory") from None
    pub = K.public_bytes(key)
    doc = {"format": ENROLMENT_FORMAT, "version": 1, "name": name, "identity": pub.hex(),
           "fingerprint": hashlib.sha256(pub).hexdigest(), "proof": K.sign(key, _pop_message(name, pub)).hex()}
    (d / "node.json").write_text(json.dumps({"name": name}) + "\n", encoding="utf-8")
    (d / "enrolment.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


def read_enrolment(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """A hospital's public enrolment document, checked: ``(name, identity key)``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != ENROLMENT_FORMAT or doc.get("version") != 1:
            raise ValueError("not a fedvault enrolment (format/version)")
        name, pub, proof = str(doc["name"]), bytes.fromhex(doc["identity"]), bytes.fromhex(doc["proof"])
        if len(pub) != 32:
            raise ValueError("malformed identity")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise NodeSetupError(f"{path}: cannot read the enrolment ({e})") from e
    try:
        K.verify(pub, proof, _pop_message(name, pub))
    except Exception as e:  # noqa: BLE001 - secagg.keys raises its own typed error
        raise NodeSetupError(f"{path}: the enrolment of {name!r} is not signed by its own key") from e
    return name, pub


def build_roster(enrolments: list[str | os.PathLike[str]]) -> Registry:
    """The coordinator's step: the roster from the hospitals' public enrolment documents.

    Client ids are 1, 2, ... in the order given.  Only public keys are read.
    """
    members = {}
    for i, path in enumerate(enrolments, start=1):
        name, pub = read_enrolment(path)
        members[i] = Member(i, name, pub)
    return Registry(members)


def install_roster(node_dir: str | os.PathLike[str], roster: str | os.PathLike[str],
                   fingerprint: str | None = None) -> "NodeDir":
    """A hospital accepts the roster: checks its fingerprint against the one announced out of band
    (``fingerprint``; ``None`` only when this process built the roster itself), finds its own key
    in it, and pins the fingerprint in ``node.json``."""
    d = Path(node_dir)
    reg = Registry.load(roster)
    if fingerprint is not None and fingerprint.lower() != reg.fingerprint():
        raise NodeSetupError(f"roster fingerprint {reg.fingerprint()} is not the announced {fingerprint}; "
                             "do not install it")
    key = serialization.load_pem_private_key((d / "identity.pem").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise NodeSetupError(f"{d}/identity.pem is not an Ed25519 key")
    mine = [m for m in reg.members.values() if m.identity == K.public_bytes(key)]
    if len(mine) != 1:
        raise NodeSetupError(f"this hospital's key is not in the roster (fingerprint {reg.fingerprint()[:16]}...)")
    info = json.loads((d / "node.json").read_text(encoding="utf-8"))
    if info.get("name") not in (None, mine[0].name):
        raise NodeSetupError(f"the roster names this key {mine[0].name!r}, the node is {info.get('name')!r}")
    (d / "registry.json").write_text(reg.to_json(), encoding="utf-8")
    (d / "node.json").write_text(json.dumps({"client": mine[0].client, "name": mine[0].name,
                                             "roster": reg.fingerprint()}) + "\n", encoding="utf-8")
    return NodeDir(d)


def provision(root: str | os.PathLike[str], names: list[str], dirs: list[str] | None = None) -> Registry:
    """One-machine stand-in for a consortium's enrolment (tests, demos, simulations).

    Runs the real steps — :func:`enrol` per hospital into ``root/<dirs[k]>``
    (default: the names), :func:`build_roster` from the public documents only,
    :func:`install_roster` in every node — and writes ``root/registry.json`` (the
    coordinator's copy).  Client ids are 1, 2, ... in the order of ``names``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / (dirs[k] if dirs else n) for k, n in enumerate(names)]
    for name, d in zip(names, paths):
        enrol(name, d)
    reg = build_roster([d / "enrolment.json" for d in paths])
    (root / "registry.json").write_text(reg.to_json(), encoding="utf-8")
    for d in paths:
        install_roster(d, root / "registry.json", reg.fingerprint())
    return reg
