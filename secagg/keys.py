"""Key agreement and signatures for secure aggregation.

* Per-round **X25519** key pairs; :func:`agree` turns an ECDH shared secret into a
  32-byte seed with ``HKDF-SHA256(ECDH(a, B), info="fedvault/secagg/agree/v1" || context)``.
  The *context* binds the seed to its use (session, round, the two ids, the purpose),
  so a seed for one pair, round or purpose says nothing about another.
* Long-term **Ed25519** identity keys; :func:`sign` / :func:`verify` over
  domain-separated messages.  :func:`verify` raises :class:`IntegrityError`.
* Raw 32-byte (de)serialisation of public keys, and key generation from an injected
  :data:`~secagg.prg.RandomSource` (never a global RNG).

X25519 private keys are generated *clamped* (RFC 7748): bits 0-2 and 255 cleared,
bit 254 set.  Clamping is what X25519 does anyway, so the key is unchanged in
meaning, and a clamped key is < 2^255, which lets :mod:`secagg.shamir` share it as
one field element.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import IntegrityError, ParameterError
from .prg import RandomSource

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_AGREE_INFO = b"fedvault/secagg/agree/v1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()


def clamp_x25519(secret: bytes) -> bytes:
    """RFC 7748 clamping of a 32-byte X25519 scalar."""
    if len(secret) != KEY_BYTES:
        raise ParameterError(f"X25519 secret must be {KEY_BYTES} bytes, got {len(secret)}")
    b = bytearray(secret)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return bytes(b)


def generate_x25519(rng: RandomSource) -> X25519PrivateKey:
    """A fresh clamped X25519 private key from ``rng``."""
    return X25519PrivateKey.from_private_bytes(clamp_x25519(rng(KEY_BYTES)))


def generate_ed25519(rng: RandomSource) -> Ed25519PrivateKey:
    """A fresh Ed25519 identity key from ``rng``."""
    return Ed25519PrivateKey.from_private_bytes(rng(KEY_BYTES))


def x25519_private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, _RAW_PRIV, _NOENC)


def x25519_from_private_bytes(data: bytes) -> X25519PrivateKey:
    if len(data) != KEY_BYTES:
        raise ParameterError(f"X25519 private key must be {KEY_BYTES} bytes")
    return X25519PrivateKey.from_private_bytes(data)


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey | X25519PublicKey | Ed25519PublicKey) -> bytes:
    """Raw 32-byte public key of a private or public X25519/Ed25519 key."""
    if isinstance(key, (X25519PrivateKey, Ed25519PrivateKey)):
        key = key.public_key()
    return key.public_bytes(_RAW, _RAW_PUB)


def x25519_public(data: bytes) -> X25519PublicKey:
    if len(data) != KEY_BYTES:
        raise IntegrityError(f"X25519 public key must be {KEY_BYTES} bytes, got {len(data)}")
    return X25519PublicKey.from_public_bytes(data)


def ed25519_public(data: bytes) -> Ed25519PublicKey:
    if len(data) != KEY_BYTES:
        raise IntegrityError(f"Ed25519 public key must be {KEY_BYTES} bytes, got {len(data)}")
    try:
        return Ed25519PublicKey.from_public_bytes(data)
    except ValueError as e:  # pragma: no cover - cryptography accepts any 32 bytes today
        raise IntegrityError("invalid Ed25519 public key") from e


_PROBE = X25519PrivateKey.from_private_bytes(clamp_x25519(bytes(range(1, 33))))


def check_x25519_public(data: bytes) -> None:
    """Raise :class:`IntegrityError` unless ``data`` is a usable X25519 public key.

    A low-order point (one of the 8-torsion points, in any of its encodings) gives the
    all-zero shared secret with *every* clamped private key, because clamped scalars
    are multiples of the cofactor 8; so one exchange with a fixed key detects it.
    """
    try:
        _PROBE.exchange(x25519_public(data))
    except ValueError as e:
        raise IntegrityError("X25519 public key has low order (the shared secret would be zero)") from e


def agree(private: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    """32-byte seed ``HKDF-SHA256(X25519(private, peer), info=AGREE_INFO || context)``.

    Raises :class:`IntegrityError` for a malformed or low-order peer key (an
    all-zero shared secret), which only a malicious peer can produce.
    """
    try:
        shared = private.exchange(x25519_public(peer_public))
    except ValueError as e:
        raise IntegrityError("X25519 key agreement failed: the peer's public key is invalid") from e
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AGREE_INFO + context).derive(shared)


def agree_many(private: X25519PrivateKey, peer_public: bytes, contexts: "list[bytes]") -> list[bytes]:
    """``[agree(private, peer_public, c) for c in contexts]`` with a single X25519 exchange."""
    try:
        shared = private.exchange(x25519_public(peer_public))
    except ValueError as e:
        raise IntegrityError("X25519 key agreement failed: the peer's public key is invalid") from e
    return [
        HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AGREE_INFO + c).derive(shared) for c in contexts
    ]


def sign(identity: Ed25519PrivateKey, message: bytes) -> bytes:
    """Ed25519 signature (64 bytes) of ``message`` (callers domain-separate ``message``)."""
    return identity.sign(message)


def verify(identity_public: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 signature; raise :class:`IntegrityError` if it does not verify."""
    if len(signature) != SIGNATURE_BYTES:
        raise IntegrityError("signature has the wrong length")
    try:
        ed25519_public(identity_public).verify(signature, message)
    except InvalidSignature as e:
        raise IntegrityError("signature does not verify") from e
