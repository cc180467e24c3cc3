"""Key setup, once per study: a key holder's key pair, or a trusted dealer's t-of-l shares.

Trust: the setup (holder key generation, or the dealer) is honest and the dealer forgets
the factorisation and the polynomial; each secret goes only to its owner (``holder_key``
to the key holder, ``shares[i]`` to hospital ``i``) over a confidential, authenticated
channel.  :class:`KeySetup` holds every secret only so that a simulation can play every
party in one process.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from fedvault.secagg.paillier import (CrtDecryptor, FastEncryptor, RandomBytes, generate_keypair,
                                      keypair_from_primes)
from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier_threshold import ThresholdKeyShare, ThresholdPublicKey, deal

from ..errors import ProtocolError
from .decrypt_log import MemoryDecryptLog
from .params import HOLDER_ID, PaillierParams, PublicSetup, check_threshold_policy

__all__ = ["KeySetup", "setup_keys", "public_to_record", "public_from_record", "share_to_record", "share_from_record",
           "holder_key_to_record", "holder_key_from_record"]


@dataclass(eq=False)
class KeySetup:
    """The study's keys: the public part plus, for simulation, every party's secret part.

    ``logs[party]`` is each decrypting party's decrypt-once log (in memory here; a
    deployment gives each decryptor a :class:`~protocols.paillier.DirectoryDecryptLog`).
    """

    public: PublicSetup
    holder_key: PaillierPrivateKey | None = field(default=None, repr=False)
    shares: dict[int, ThresholdKeyShare] = field(default_factory=dict, repr=False)
    logs: dict[int, MemoryDecryptLog] = field(default_factory=dict, repr=False)
    identity_seed: bytes = field(default=b"", repr=False)
    _encryptors: dict[bool, FastEncryptor] = field(default_factory=dict, repr=False)
    _decryptor: CrtDecryptor | None = field(default=None, repr=False)

    def encryptor(self, short_exponent: bool = False) -> FastEncryptor:
        """The (cached) DJN encryptor: its base is derived from ``n``, so all clients share one table."""
        if short_exponent not in self._encryptors:
            self._encryptors[short_exponent] = FastEncryptor(self.public.public_key, short_exponent=short_exponent)
        return self._encryptors[short_exponent]

    def crt_decryptor(self) -> CrtDecryptor:
        if self.holder_key is None:
            raise ProtocolError("this setup has no key holder")
        if self._decryptor is None:
            self._decryptor = CrtDecryptor(self.holder_key)
        return self._decryptor

    def log(self, party: int) -> MemoryDecryptLog:
        return self.logs.setdefault(party, MemoryDecryptLog())

    def simulated_identities(self, ids: Sequence[int]) -> dict[int, Ed25519PrivateKey]:
        """Deterministic Ed25519 identities for a simulation (derived from a seed drawn at setup)."""
        out = {}
        for i in ids:
            h = hashes.Hash(hashes.SHA256())
            h.update(b"fedvault/paillier/sim-identity/v1\x00" + self.identity_seed + struct.pack(">I", i))
            out[i] = Ed25519PrivateKey.from_private_bytes(h.finalize())
        return out


def setup_keys(params: PaillierParams, *, rng: RandomBytes = os.urandom, holder: int | None = None,
               keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None,
               primes: tuple[int, int] | None = None) -> KeySetup:
    """Generate the study's keys once (expensive); reuse the result for every round.

    ``holder`` mode: a fresh phe key pair (or ``keypair``, or one built from ``primes``),
    held by ``holder`` (default :data:`HOLDER_ID`, a party outside the clients).
    ``threshold`` mode: a dealer deals ``params.t``-of-``len(clients)`` shares over a
    safe-prime modulus (``2t > l`` is required); ``primes`` supplies precomputed safe primes.

    Pass the study's full client list in ``params.clients``: threshold shares go to those
    hospitals, and later rounds may use any subset of them as contributors.
    """
    ident = rng(32)
    if params.keys == "holder":
        if keypair is None:
            keypair = keypair_from_primes(*primes) if primes else generate_keypair(params.key_bits)
        pk, sk = keypair
        if pk.n.bit_length() != params.key_bits:
            raise ProtocolError(f"key has {pk.n.bit_length()} bits, params say {params.key_bits}")
        who = HOLDER_ID if holder is None else int(holder)
        return KeySetup(PublicSetup("holder", pk, holder=who), holder_key=sk, identity_seed=ident)
    check_threshold_policy(params.t, len(params.clients))
    pub, shares = deal(len(params.clients), params.t, params.key_bits, rng=rng, safe_primes=primes)
    parties = tuple(params.clients)
    return KeySetup(PublicSetup("threshold", pub.public_key, parties=parties, threshold_key=pub),
                    shares={parties[s.index - 1]: s for s in shares}, identity_seed=ident)


# -- serialisation of what a deployment's parties keep (the key ceremony) --------------------------
# Records are JSON-ready dicts of hex integers; the files that carry them (with the roster they are
# bound to, signatures and fingerprints) live in the fl layer (fl.integrations.flower.ceremony).
def _hex(x: int) -> str:
    return format(int(x), "x")


def _int(rec: Mapping[str, Any], key: str) -> int:
    v = rec[key]
    if not isinstance(v, str) or not v or len(v) > 4096:
        raise ProtocolError(f"field {key!r} must be a hex string")
    return int(v, 16)


def _exact(v: Any, what: str) -> int:
    if type(v) is not int:
        raise ProtocolError(f"field {what!r} must be an integer, got {v!r}")
    return v


def public_to_record(public: PublicSetup) -> dict[str, Any]:
    """The public key setup as a JSON-ready dict (public values only)."""
    rec: dict[str, Any] = {"mode": public.mode, "key_bits": public.public_key.n.bit_length(), "n": _hex(public.public_key.n)}
    if public.mode == "holder":
        rec["holder"] = int(public.holder)  # type: ignore[arg-type]
    else:
        tk = public.threshold_key
        assert tk is not None
        rec.update(threshold=tk.threshold, parties=[int(p) for p in public.parties], v=_hex(tk.v),
                   verification_keys=[_hex(tk.verification_keys[i]) for i in range(1, tk.parties + 1)])
    return rec


def public_from_record(rec: Mapping[str, Any]) -> PublicSetup:
    """Rebuild a :class:`PublicSetup` from :func:`public_to_record`'s dict.

    Raises:
        ProtocolError: a malformed record; :class:`~protocols.errors.ThresholdError` for a
            minority threshold (``2t <= l``), whoever dealt it.
    """
    try:
        mode = rec["mode"]
        n = _int(rec, "n")
        if n.bit_length() != _exact(rec["key_bits"], "key_bits") or n < 3 or n % 2 == 0:
            raise ProtocolError(f"modulus has {n.bit_length()} bits, the record says {rec['key_bits']}")
        pk = PaillierPublicKey(n)
        if mode == "holder":
            return PublicSetup("holder", pk, holder=_exact(rec["holder"], "holder"))
        if mode != "threshold":
            raise ProtocolError(f"mode must be 'holder' or 'threshold', got {mode!r}")
        parties = tuple(_exact(p, "parties") for p in rec["parties"])
        t = _exact(rec["threshold"], "threshold")
        check_threshold_policy(t, len(parties))
        vks = [int(v, 16) for v in rec["verification_keys"]]
        if len(vks) != len(parties):
            raise ProtocolError(f"{len(vks)} verification keys for {len(parties)} share-holders")
        n2 = n * n
        v = _int(rec, "v")
        if not all(0 < x < n2 for x in (v, *vks)):
            raise ProtocolError("verification keys must lie in Z*_(n^2)")
        tk = ThresholdPublicKey(pk, t, len(parties), v, {i + 1: x for i, x in enumerate(vks)})
        return PublicSetup("threshold", pk, parties=parties, threshold_key=tk)
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"malformed public key setup ({type(e).__name__}: {e})") from None


def share_to_record(share: ThresholdKeyShare) -> dict[str, Any]:
    """A threshold share as a dict: SECRET (goes to its share-holder only)."""
    return {"index": int(share.index), "secret": _hex(share.secret)}


def share_from_record(rec: Mapping[str, Any], public: PublicSetup) -> ThresholdKeyShare:
    """A share checked against the public setup: ``v^(Δ s_i) = v_i mod n^2`` (its verification key).

    Raises:
        ProtocolError: malformed, not a threshold setup, or a share that does not belong to
            ``public`` (another key, or another share-holder's index).
    """
    tk = public.threshold_key
    if public.mode != "threshold" or tk is None:
        raise ProtocolError("a key share needs a threshold public setup")
    try:
        index, secret = rec["index"], _int(rec, "secret")
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"malformed key share ({type(e).__name__}: {e})") from None
    if type(index) is not int:
        raise ProtocolError(f"share index must be an integer, got {index!r}")
    if not 1 <= index <= tk.parties:
        raise ProtocolError(f"share index {index} is outside 1..{tk.parties}")
    n2 = public.public_key.nsquare
    if pow(tk.v, tk.delta * secret, n2) != tk.verification_keys[index]:
        raise ProtocolError(f"share {index} does not match the public setup's verification key "
                            "(a share of another key, or a corrupted file)")
    return ThresholdKeyShare(index, secret, tk)


def holder_key_to_record(key: PaillierPrivateKey) -> dict[str, Any]:
    """The key holder's private key as a dict (the primes): SECRET (stays on the holder's machine)."""
    return {"p": _hex(key.p), "q": _hex(key.q)}


def holder_key_from_record(rec: Mapping[str, Any], public: PublicSetup) -> PaillierPrivateKey:
    """The holder's private key, checked to factor ``public``'s modulus.

    Raises:
        ProtocolError: malformed, or not the key of this public setup.
    """
    if public.mode != "holder":
        raise ProtocolError("a key holder's private key needs a holder public setup")
    try:
        p, q = _int(rec, "p"), _int(rec, "q")
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"malformed private key ({type(e).__name__}: {e})") from None
    if p * q != public.public_key.n or p == q or min(p, q) < 3:
        raise ProtocolError("this private key does not belong to the public key setup (p q != n)")
    try:
        return keypair_from_primes(p, q)[1]
    except SecAggError as e:
        raise ProtocolError(f"malformed private key: {e}") from None
