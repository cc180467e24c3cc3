"""Paillier's key ceremony for a deployment: each secret is created on, or sealed to, its owner's machine.

Only public material travels; every file is versioned, bound to the consortium roster
(its fingerprint) and checked on load with an error that says what to fix.

**Holder mode** (``aggregation.keys = "holder"``).  The key holder (a party outside the
hospitals, e.g. the privacy officer) enrols like a hospital (``fedvault enrol``), so the
roster holds its Ed25519 identity, and then on its own machine::

    fedvault paillier keygen NODE_DIR --bits 2048 --out paillier-public.json

creates the Paillier key pair in its node directory (``paillier-key.json``, mode 0600:
the primes; it never leaves the machine) and writes the public setup file, signed by its
identity key.  Every hospital node and the coordinator install that file after comparing
its fingerprint with the one the key holder announced out of band.

**Threshold mode** (``aggregation.keys = "threshold"``).  A dealer deals ``t``-of-``l``
shares (``2t > l``) to the roster's hospitals.  Each hospital first makes a one-time
X25519 key to receive its share (``fedvault paillier share-key NODE_DIR``: the private
key stays in the node directory, ``paillier-share-key.json`` — its public key signed by
the hospital's identity key — goes to the dealer); the dealer then runs::

    fedvault paillier deal --roster roster.json --threshold T --bits 2048 \\
        --share-keys share-key-1.json ... --out DIR

and writes ``DIR/paillier-public.json`` and one ``DIR/share-<id>-<name>.json`` per
hospital, each sealed to that hospital's X25519 key (ephemeral X25519 + HKDF-SHA256 +
AES-256-GCM, the header as associated data: only that hospital can open it, and a share
file renamed, moved to another hospital or edited is refused).  **The dealer is trusted**:
it sees the factorisation and every share while it deals, so it must run on a machine
the consortium trusts and delete its output (and the primes never touch disk) after
delivery; the shares themselves may then travel over any channel.  ``--plaintext-shares``
writes unsealed share files instead (deliver each over a confidential, authenticated
channel).

**Install** (every node; the coordinator only loads the public file)::

    fedvault paillier install NODE_DIR --public paillier-public.json --fingerprint HEX [--share FILE]

checks the public file against the node's roster and the announced fingerprint, opens
and checks the share (its index is this hospital's, it matches the public verification
key), and writes ``paillier-public.json`` and ``paillier-share.json`` (mode 0600) into the
node directory, pinning the fingerprint in ``node.json``.

What each file holds: ``paillier-public.json`` — the modulus ``n`` (and for threshold
keys ``t``, the share-holders' ids, ``v`` and the verification keys ``v_i``), the roster
fingerprint, the key holder's signature (holder mode); public.  ``paillier-key.json`` —
the key holder's primes ``p, q``; secret.  ``paillier-share.json`` — the hospital's share
``s_i``; secret.  ``paillier-share-key.pem`` — the X25519 key a share is sealed to;
secret, deleted once the share is installed.

This module imports neither Flower nor torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedvault.secagg import keys as K

from .node import NodeDir, NodeSetupError, Registry, _write_private

PUBLIC_FORMAT = "fedvault-paillier-public"
SHARE_FORMAT = "fedvault-paillier-share"
SEALED_FORMAT = "fedvault-paillier-share-sealed"
SHARE_KEY_FORMAT = "fedvault-paillier-share-key"
HOLDER_KEY_FORMAT = "fedvault-paillier-key"
VERSION = 1
PUBLIC_FILE = "paillier-public.json"
SHARE_FILE = "paillier-share.json"
HOLDER_KEY_FILE = "paillier-key.json"
SHARE_KEY_FILE = "paillier-share-key.pem"
SHARE_REQUEST_FILE = "paillier-share-key.json"
SECURE_KEY_BITS = 2048

_FP_DOMAIN = b"fedvault/paillier-public/v1\0"
_SIG_DOMAIN = b"fedvault/paillier-public/holder-signature/v1\0"
_SHARE_KEY_DOMAIN = b"fedvault/paillier-share-key/v1\0"
_SEAL_CONTEXT = b"fedvault/paillier-share-seal/v1\0"


class CeremonyError(NodeSetupError):
    """A Paillier key-ceremony file is missing, malformed, or does not belong here; the message says what to fix."""


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _read_json(path: str | os.PathLike[str], fmt: str, what: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CeremonyError(f"{path}: cannot read the {what} ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CeremonyError(f"{path}: not a {what} (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                            f"expected {fmt!r})")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:
        raise CeremonyError(f"{path}: {what} version {doc.get('version')!r} is not supported (this fedvault reads "
                            f"version {VERSION}); regenerate it with this fedvault")
    return doc


def _check_bits(bits: int, allow_small: bool) -> None:
    if bits < SECURE_KEY_BITS and not allow_small:
        raise CeremonyError(f"a {bits}-bit Paillier key is for tests only (< 112-bit security); use --bits 2048 or "
                            "3072, or pass --insecure-test-key to make a test key")


# -- the public setup file ---------------------------------------------------------------------
@dataclass(frozen=True)
class PaillierPublicFile:
    """A checked public setup file: the protocol's :class:`~protocols.paillier.PublicSetup`, the roster it is
    bound to and its fingerprint (SHA-256 hex of the canonical body; compare it out of band)."""

    setup: Any  # protocols.paillier.PublicSetup
    roster: str
    fingerprint: str
    doc: dict

    @property
    def test_only(self) -> bool:
        return self.setup.public_key.n.bit_length() < SECURE_KEY_BITS

    def describe(self) -> str:
        s = self.setup
        bits = s.public_key.n.bit_length()
        size = f"{bits}-bit" + (" (TEST-ONLY key size: not for patient data)" if bits < SECURE_KEY_BITS else "")
        if s.mode == "holder":
            who = f"key holder: client {s.holder} ({self.doc['holder_name']})"
        else:
            who = f"t = {s.threshold} of {len(s.parties)} share-holders {list(s.parties)}"
        return f"Paillier {s.mode} key, {size}, {who}; fingerprint {self.fingerprint}"

    def check_config(self, keys: str, key_bits: int, threshold: int | None = None) -> None:
        """Refuse a study config (``aggregation.keys / key_bits / threshold``) this key cannot serve."""
        s = self.setup
        if keys != s.mode:
            raise CeremonyError(f"the config says aggregation.keys = {keys!r} but the installed Paillier setup is "
                                f"{s.mode!r}; run the {keys} ceremony or fix the config")
        if int(key_bits) != s.public_key.n.bit_length():
            raise CeremonyError(f"the config says aggregation.key_bits = {key_bits} but the Paillier key has "
                                f"{s.public_key.n.bit_length()} bits; set key_bits = {s.public_key.n.bit_length()}")
        if keys == "threshold" and threshold is not None and int(threshold) != s.threshold:
            raise CeremonyError(f"the config says aggregation.threshold = {threshold} but the key was dealt "
                                f"{s.threshold}-of-{len(s.parties)}; set threshold = {s.threshold}")


def _public_body(setup: Any, registry: Registry) -> dict:
    from fedvault.protocols.paillier.setup import public_to_record

    body = {"format": PUBLIC_FORMAT, "version": VERSION, "roster": registry.fingerprint(),
            "setup": public_to_record(setup)}
    if setup.mode == "holder":
        body["holder_name"] = registry.name(int(setup.holder))
    else:
        body["names"] = [registry.name(int(p)) for p in setup.parties]
    return body


def _public_fingerprint(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_FP_DOMAIN + _canonical({k: v for k, v in body.items()
                                                   if k not in ("fingerprint", "signature")})).hexdigest()


def _write_public(body: dict, path: Path, identity: Any = None) -> str:
    fp = _public_fingerprint(body)
    doc = dict(body, fingerprint=fp)
    if identity is not None:
        doc["signature"] = K.sign(identity, _SIG_DOMAIN + bytes.fromhex(fp)).hex()
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return fp


def load_public(path: str | os.PathLike[str], registry: Registry, fingerprint: str | None = None) -> PaillierPublicFile:
    """Load and check a public setup file against ``registry`` (the roster this party trusts).

    ``fingerprint``: the one announced out of band (the coordinator and each node pass it
    at install; ``None`` only where the fingerprint is already pinned).

    Raises:
        CeremonyError: not a public setup file, another roster, a fingerprint that does not
            match (edited file, or not the announced one), a holder not in the roster or whose
            signature fails, share-holders not in the roster, a minority threshold (2t <= l).
    """
    from fedvault.protocols.errors import ProtocolError, ThresholdError
    from fedvault.protocols.paillier.setup import public_from_record

    doc = _read_json(path, PUBLIC_FORMAT, "Paillier public setup")
    fp = _public_fingerprint(doc)
    if doc.get("fingerprint") != fp:
        raise CeremonyError(f"{path}: the Paillier public setup does not match its own fingerprint (edited or "
                            "corrupt); ask for the file again")
    if fingerprint is not None and fingerprint.strip().lower() != fp:
        raise CeremonyError(f"{path}: fingerprint {fp} is not the announced {fingerprint}; do not install it "
                            "(compare with the key holder / dealer out of band)")
    if doc.get("roster") != registry.fingerprint():
        raise CeremonyError(f"{path}: the Paillier setup was made for roster {str(doc.get('roster'))[:16]}..., this "
                            f"party trusts roster {registry.fingerprint()[:16]}...; redo the ceremony on the "
                            "installed roster")
    try:
        setup = public_from_record(doc["setup"])
    except ThresholdError as e:
        raise CeremonyError(f"{path}: refused: {e}") from e
    except (ProtocolError, KeyError, TypeError) as e:
        raise CeremonyError(f"{path}: malformed Paillier public setup ({e})") from e
    members = registry.members
    if setup.mode == "holder":
        h = int(setup.holder)
        if h not in members or members[h].name != doc.get("holder_name"):
            raise CeremonyError(f"{path}: the key holder (client {h}, {doc.get('holder_name')!r}) is not in the "
                                "roster; the key holder must enrol and be in the roster before `paillier keygen`")
        try:
            K.verify(members[h].identity, bytes.fromhex(str(doc.get("signature", ""))), _SIG_DOMAIN + bytes.fromhex(fp))
        except Exception as e:  # noqa: BLE001 - secagg.keys raises its own typed error; bad hex is ValueError
            raise CeremonyError(f"{path}: the public setup is not signed by the roster's key holder "
                                f"{members[h].name!r}; refuse it") from e
    else:
        names = doc.get("names")
        if not isinstance(names, list) or len(names) != len(setup.parties):
            raise CeremonyError(f"{path}: the share-holders' names are missing")
        for p, name in zip(setup.parties, names):
            if p not in members or members[p].name != name:
                raise CeremonyError(f"{path}: share-holder {p} ({name!r}) is not in the roster; the dealer must deal "
                                    "for the installed roster")
    return PaillierPublicFile(setup, str(doc["roster"]), fp, doc)


# -- holder mode -------------------------------------------------------------------------------
def keygen(node_dir: str | os.PathLike[str], bits: int, out: str | os.PathLike[str], *,
           allow_small: bool = False, primes: tuple[int, int] | None = None) -> PaillierPublicFile:
    """Holder mode, on the key holder's machine: a fresh key pair in its node directory, the public file at ``out``.

    The node must be enrolled with its roster installed (``fedvault roster install``): the
    key holder's roster id is the ``holder`` of the setup, and its identity key signs the
    public file.  ``paillier-key.json`` (the primes, 0600) is created exclusively: an
    existing key is never overwritten.  ``primes``: tests only (precomputed primes).
    """
    from fedvault.protocols.paillier.params import PublicSetup
    from fedvault.protocols.paillier.setup import holder_key_to_record
    from fedvault.secagg.errors import SecAggError
    from fedvault.secagg.paillier import generate_keypair, keypair_from_primes

    node = NodeDir(node_dir)
    _check_bits(int(bits), allow_small)
    key_path = node.path / HOLDER_KEY_FILE
    if key_path.exists():
        raise CeremonyError(f"{key_path} already holds a Paillier key; a node holds one study key (use a new node "
                            "directory for a new study)")
    try:
        pk, sk = keypair_from_primes(*primes) if primes else generate_keypair(int(bits))
    except SecAggError as e:
        raise CeremonyError(f"cannot make a {bits}-bit key: {e}") from e
    if pk.n.bit_length() != int(bits):
        raise CeremonyError(f"the key has {pk.n.bit_length()} bits, not {bits}")
    setup = PublicSetup("holder", pk, holder=node.client)
    body = _public_body(setup, node.registry)
    fp = _public_fingerprint(body)
    secret = {"format": HOLDER_KEY_FORMAT, "version": VERSION, "roster": node.registry.fingerprint(),
              "client": node.client, "public": fp, "key": holder_key_to_record(sk)}
    _write_private(key_path, (json.dumps(secret) + "\n").encode(), exclusive=True)
    _write_public(body, Path(out), node.identity())
    pub = load_public(out, node.registry, fp)
    _install_public(node, Path(out), pub)
    return pub


# -- threshold mode: receiving keys, the dealer, sealing -----------------------------------------
def share_key(node_dir: str | os.PathLike[str]) -> dict:
    """A hospital's one-time X25519 key to receive its sealed share (threshold mode), on its own machine.

    Writes ``paillier-share-key.pem`` (0600, stays here) and ``paillier-share-key.json``
    (the public key, signed by the hospital's identity key: send it to the dealer).
    Returns the public document.
    """
    node = NodeDir(node_dir)
    x = X25519PrivateKey.generate()
    pem = x.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        _write_private(node.path / SHARE_KEY_FILE, pem, exclusive=True)
    except FileExistsError:
        raise CeremonyError(f"{node.path / SHARE_KEY_FILE} exists: this node already asked for a share; send its "
                            f"{SHARE_REQUEST_FILE} to the dealer (or delete both files to start over)") from None
    pub = K.public_bytes(x)
    doc = {"format": SHARE_KEY_FORMAT, "version": VERSION, "roster": node.registry.fingerprint(),
           "client": node.client, "name": node.name, "x25519": pub.hex()}
    doc["signature"] = K.sign(node.identity(), _SHARE_KEY_DOMAIN + _canonical(doc)).hex()
    (node.path / SHARE_REQUEST_FILE).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def read_share_key(path: str | os.PathLike[str], registry: Registry) -> tuple[int, bytes]:
    """A hospital's share-key document, checked against the roster: ``(client id, X25519 public key)``."""
    doc = _read_json(path, SHARE_KEY_FORMAT, "Paillier share key")
    body = {k: v for k, v in doc.items() if k != "signature"}
    if doc.get("roster") != registry.fingerprint():
        raise CeremonyError(f"{path}: made for another roster ({str(doc.get('roster'))[:16]}...); the hospital must "
                            "install the roster being dealt for, then run `fedvault paillier share-key` again")
    try:
        client, pub = int(doc["client"]), bytes.fromhex(doc["x25519"])
        member = registry.members[client]
        if member.name != doc.get("name"):
            raise KeyError(client)
        K.check_x25519_public(pub)
        K.verify(member.identity, bytes.fromhex(doc["signature"]), _SHARE_KEY_DOMAIN + _canonical(body))
    except Exception as e:  # noqa: BLE001 - any failure means: do not seal a share to this key
        raise CeremonyError(f"{path}: not a share key signed by a roster member's identity key ({e}); ask the "
                            "hospital for its paillier-share-key.json again") from e
    return client, pub


def _seal_header(doc: Mapping[str, Any]) -> bytes:
    return _SEAL_CONTEXT + _canonical({k: v for k, v in doc.items() if k not in ("nonce", "ciphertext")})


def _seal(header: dict, recipient: bytes, plaintext: bytes) -> dict:
    eph = X25519PrivateKey.generate()
    doc = dict(header, format=SEALED_FORMAT, recipient=recipient.hex(), ephemeral=K.public_bytes(eph).hex())
    aad = _seal_header(doc)
    key = K.agree(eph, recipient, hashlib.sha256(aad).digest())
    nonce = os.urandom(12)
    doc["nonce"] = nonce.hex()
    doc["ciphertext"] = AESGCM(key).encrypt(nonce, plaintext, aad).hex()
    return doc


def _unseal(doc: Mapping[str, Any], private: X25519PrivateKey, path: Any) -> bytes:
    try:
        recipient = bytes.fromhex(str(doc.get("recipient", "")))
    except ValueError:
        recipient = b""
    if recipient != K.public_bytes(private):
        raise CeremonyError(f"{path}: this share is sealed to another key (not this node's {SHARE_KEY_FILE}); it is "
                            "another hospital's share, or this node made a new share key after the deal")
    aad = _seal_header(doc)
    try:
        key = K.agree(private, bytes.fromhex(str(doc["ephemeral"])), hashlib.sha256(aad).digest())
        return AESGCM(key).decrypt(bytes.fromhex(str(doc["nonce"])), bytes.fromhex(str(doc["ciphertext"])), aad)
    except (InvalidTag, KeyError, ValueError, TypeError, Exception) as e:  # noqa: BLE001 - any failure: a typed refusal
        raise CeremonyError(f"{path}: the sealed share does not open (edited, truncated or not for this node); ask "
                            "the dealer for it again") from e


@dataclass(frozen=True)
class DealResult:
    public: PaillierPublicFile
    public_path: Path
    shares: dict[int, Path]


def deal(roster: str | os.PathLike[str], threshold: int, bits: int, out: str | os.PathLike[str], *,
         share_keys: Sequence[str | os.PathLike[str]] | None = None, hospitals: Sequence[str] | None = None,
         plaintext: bool = False, allow_small: bool = False, primes: tuple[int, int] | None = None) -> DealResult:
    """Threshold mode, the trusted dealer: ``threshold``-of-``l`` shares for the roster's hospitals.

    ``hospitals``: names of the share-holders (default: every roster member except one named
    ``key_holder``).  ``share_keys``: each hospital's ``paillier-share-key.json``; every share is
    sealed to its hospital.  ``plaintext=True`` writes unsealed share files instead (deliver each
    over a confidential, authenticated channel).  Refuses ``2t <= l``.

    Trust: the dealer sees the factorisation and every share.  It keeps none of them in
    memory after returning and writes the primes nowhere, but it must run on a trusted
    machine, and ``out`` must be deleted once the shares are delivered.
    """
    from fedvault.protocols.errors import ThresholdError
    from fedvault.protocols.paillier.params import PublicSetup, check_threshold_policy
    from fedvault.protocols.paillier.setup import share_to_record
    from fedvault.secagg.errors import SecAggError
    from fedvault.secagg.paillier_threshold import deal as deal_shares

    reg = Registry.load(roster)
    names = list(hospitals) if hospitals else [m.name for _, m in sorted(reg.members.items()) if m.name != "key_holder"]
    by_name = {m.name: i for i, m in reg.members.items()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise CeremonyError(f"{missing} are not in the roster {reg.fingerprint()[:16]}...")
    parties = tuple(sorted(by_name[n] for n in names))
    try:
        check_threshold_policy(int(threshold), len(parties))
    except ThresholdError as e:
        raise CeremonyError(f"refused: {e}") from e
    _check_bits(int(bits), allow_small)
    recipients: dict[int, bytes] = {}
    if not plaintext:
        if not share_keys:
            raise CeremonyError("no share keys given: each hospital runs `fedvault paillier share-key NODE_DIR` and "
                                "sends its paillier-share-key.json (pass them with --share-keys), or pass "
                                "--plaintext-shares and deliver each share over a confidential channel")
        for p in share_keys:
            c, pub = read_share_key(p, reg)
            if c in recipients:
                raise CeremonyError(f"two share keys for client {c} ({reg.name(c)})")
            recipients[c] = pub
        lacking = [reg.name(c) for c in parties if c not in recipients]
        if lacking:
            raise CeremonyError(f"no share key from {lacking}; every share-holder sends its paillier-share-key.json")
    try:
        tpub, shares = deal_shares(len(parties), int(threshold), int(bits), safe_primes=primes)
    except SecAggError as e:
        raise CeremonyError(f"cannot deal a {bits}-bit key: {e}") from e
    setup = PublicSetup("threshold", tpub.public_key, parties=parties, threshold_key=tpub)
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CeremonyError(f"{out_dir} is not empty (an earlier deal?); deal into a new, empty directory so that no "
                            "share of another deal is delivered by mistake")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    body = _public_body(setup, reg)
    public_path = out_dir / PUBLIC_FILE
    fp = _write_public(body, public_path)
    written = {}
    for party, share in zip(parties, shares):
        header = {"format": SHARE_FORMAT, "version": VERSION, "roster": reg.fingerprint(), "public": fp,
                  "client": party, "name": reg.name(party)}
        doc = dict(header, share=share_to_record(share))
        if not plaintext:
            doc = _seal(header, recipients[party], _canonical(share_to_record(share)))
        path = out_dir / f"share-{party}-{reg.name(party)}.json"
        _write_private(path, (json.dumps(doc, indent=1) + "\n").encode())
        written[party] = path
    del shares
    return DealResult(load_public(public_path, reg, fp), public_path, written)


# -- install and load on a node ----------------------------------------------------------------
def _install_public(node: NodeDir, src: Path, pub: PaillierPublicFile) -> None:
    dst = node.path / PUBLIC_FILE
    if src.resolve() != dst.resolve():
        dst.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    info = json.loads((node.path / "node.json").read_text(encoding="utf-8"))
    info["paillier"] = pub.fingerprint
    (node.path / "node.json").write_text(json.dumps(info) + "\n", encoding="utf-8")


def _share_doc(path: Path, node: NodeDir) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CeremonyError(f"{path}: cannot read the share file ({e})") from e
    if isinstance(raw, dict) and raw.get("format") == SEALED_FORMAT:
        doc = _read_json(path, SEALED_FORMAT, "sealed Paillier share")
        try:
            pem = (node.path / SHARE_KEY_FILE).read_bytes()
        except FileNotFoundError:
            raise CeremonyError(f"{path} is sealed, but {node.path} has no {SHARE_KEY_FILE} to open it (it is "
                                "another node's share, or this node's share key was deleted: ask for a new deal)") from None
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, X25519PrivateKey):
            raise CeremonyError(f"{node.path / SHARE_KEY_FILE} is not an X25519 key")
        try:
            inner = json.loads(_unseal(doc, key, path))
        except ValueError as e:  # authenticated, so the dealer wrote it: a dealer bug or another format
            raise CeremonyError(f"{path}: the sealed share is not a share record; ask the dealer for it again") from e
        return dict({k: v for k, v in doc.items() if k in ("version", "roster", "public", "client", "name")},
                    format=SHARE_FORMAT, share=inner)
    return _read_json(path, SHARE_FORMAT, "Paillier share")


def _check_share(doc: Mapping[str, Any], node: NodeDir, pub: PaillierPublicFile, path: Any) -> Any:
    from fedvault.protocols.errors import ProtocolError
    from fedvault.protocols.paillier.setup import share_from_record

    if doc.get("roster") != node.registry.fingerprint():
        raise CeremonyError(f"{path}: this share was dealt for another roster; ask the dealer for a share of the "
                            "installed roster")
    if type(doc.get("client")) is not int or doc.get("client") != node.client or doc.get("name") != node.name:
        raise CeremonyError(f"{path}: this is the share of client {doc.get('client')} ({doc.get('name')!r}), not of "
                            f"this hospital (client {node.client}, {node.name!r}); install your own share")
    if doc.get("public") != pub.fingerprint:
        raise CeremonyError(f"{path}: this share belongs to Paillier setup {str(doc.get('public'))[:16]}..., not to "
                            f"the installed {pub.fingerprint[:16]}...; install the public file of the same deal")
    if pub.setup.mode != "threshold" or node.client not in pub.setup.parties:
        raise CeremonyError(f"{path}: the installed Paillier setup gives client {node.client} no share")
    try:
        share = share_from_record(doc["share"], pub.setup)
    except (ProtocolError, KeyError, TypeError) as e:
        raise CeremonyError(f"{path}: {e}") from e
    if share.index != pub.setup.share_index(node.client):
        raise CeremonyError(f"{path}: share index {share.index} is not this hospital's "
                            f"({pub.setup.share_index(node.client)}): a share of another hospital")
    return share


def install(node_dir: str | os.PathLike[str], public: str | os.PathLike[str], fingerprint: str | None,
            share: str | os.PathLike[str] | None = None) -> PaillierPublicFile:
    """A node accepts the Paillier setup (and, in threshold mode, its share); see the module docstring.

    Raises:
        CeremonyError: see :func:`load_public`; a share that is missing (threshold mode, a
            share-holder), sealed to another node, another hospital's, of another deal or
            roster, or that fails its verification key.
    """
    node = NodeDir(node_dir)
    pub = load_public(public, node.registry, fingerprint)
    if pub.setup.mode == "threshold" and node.client in pub.setup.parties and share is None:
        raise CeremonyError(f"{node.name} holds a share of this threshold key: pass --share with the file the dealer "
                            "sent")
    if share is not None:
        s = _check_share(_share_doc(Path(share), node), node, pub, share)
        doc = {"format": SHARE_FORMAT, "version": VERSION, "roster": node.registry.fingerprint(),
               "public": pub.fingerprint, "client": node.client, "name": node.name,
               "share": {"index": s.index, "secret": format(s.secret, "x")}}
        _write_private(node.path / SHARE_FILE, (json.dumps(doc) + "\n").encode())
        try:
            (node.path / SHARE_KEY_FILE).unlink()  # its only purpose was to receive this share
        except FileNotFoundError:
            pass
    _install_public(node, Path(public), pub)
    return pub


def node_public(node: NodeDir) -> PaillierPublicFile:
    """The public setup installed in ``node`` (pinned fingerprint, roster checked)."""
    path = node.path / PUBLIC_FILE
    if not path.is_file():
        raise CeremonyError(f"{node.path}: no Paillier public setup installed; run `fedvault paillier install "
                            f"{node.path} --public paillier-public.json --fingerprint HEX`")
    info = json.loads((node.path / "node.json").read_text(encoding="utf-8"))
    pinned = info.get("paillier")
    if not pinned:
        raise CeremonyError(f"{node.path}: the Paillier public setup was never accepted (no pinned fingerprint); "
                            "install it with `fedvault paillier install`")
    return load_public(path, node.registry, pinned)


def node_secret(node: NodeDir) -> Any:
    """This node's Paillier secret: the holder's private key (holder mode, on the key holder's node), its
    threshold share (threshold mode, on a share-holder's node), or ``None`` (nothing to decrypt here)."""
    from fedvault.protocols.errors import ProtocolError
    from fedvault.protocols.paillier.setup import holder_key_from_record

    pub = node_public(node)
    s = pub.setup
    if s.mode == "holder":
        if int(s.holder) != node.client:
            return None
        path = node.path / HOLDER_KEY_FILE
        if not path.is_file():
            raise CeremonyError(f"{path} is missing: this node is the key holder of the installed setup but holds no "
                                "private key (restore it from the key holder's backup, or redo `paillier keygen`)")
        _check_private_mode(path)
        doc = _read_json(path, HOLDER_KEY_FORMAT, "Paillier private key")
        if doc.get("public") != pub.fingerprint or doc.get("client") != node.client:
            raise CeremonyError(f"{path}: this private key belongs to another Paillier setup than the installed "
                                f"{pub.fingerprint[:16]}...")
        try:
            return holder_key_from_record(doc["key"], s)
        except (ProtocolError, KeyError, TypeError) as e:
            raise CeremonyError(f"{path}: {e}") from e
    if node.client not in s.parties:
        return None
    path = node.path / SHARE_FILE
    if not path.is_file():
        raise CeremonyError(f"{path} is missing: client {node.client} holds a share of the installed threshold key; "
                            "install it with `fedvault paillier install ... --share FILE`")
    _check_private_mode(path)
    return _check_share(_read_json(path, SHARE_FORMAT, "Paillier share"), node, pub, path)


def _check_private_mode(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CeremonyError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")


# -- what a deployment's app loads ----------------------------------------------------------------
def _aggregation(cfg: Any) -> Any:
    a = cfg.aggregation
    if a.mode != "paillier":
        raise CeremonyError(f"the config says aggregation.mode = {a.mode!r}; Paillier keys are for mode \"paillier\"")
    return a


def coordinator_setup(path: str | os.PathLike[str], registry: Registry, cfg: Any,
                      fingerprint: str | None = None) -> Any:
    """The coordinator's Paillier public setup for the study ``cfg``: the file checked against its own
    roster (and the announced ``fingerprint``, if given) and against the config's ``aggregation.keys /
    key_bits / threshold``.  Returns the :class:`~protocols.paillier.PublicSetup`."""
    a = _aggregation(cfg)
    pub = load_public(path, registry, fingerprint)
    pub.check_config(a.keys, a.key_bits, a.threshold)
    return pub.setup


def node_setup(node: NodeDir, cfg: Any) -> tuple[Any, Any]:
    """A node's ``(public setup, secret)`` for the study ``cfg`` (see :func:`node_public`,
    :func:`node_secret`), the public setup checked against the node's own config."""
    a = _aggregation(cfg)
    pub = node_public(node)
    pub.check_config(a.keys, a.key_bits, a.threshold)
    return pub.setup, node_secret(node)
