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
from typing import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from fedvault.secagg.paillier import (CrtDecryptor, FastEncryptor, RandomBytes, generate_keypair,
                                      keypair_from_primes)
from fedvault.secagg.paillier_threshold import ThresholdKeyShare, deal

from ..errors import ProtocolError
from .decrypt_log import MemoryDecryptLog
from .params import HOLDER_ID, PaillierParams, PublicSetup, check_threshold_policy

__all__ = ["KeySetup", "setup_keys"]


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
