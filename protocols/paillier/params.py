"""Public parameters of a packed-Paillier round, what every party knows about the keys, and the guarantee.

Threshold policy (issue 12, attack 6): in ``threshold`` mode the key is dealt ``t``-of-``l``
with ``2t > l`` — two disjoint quorums cannot both answer, so a server cannot obtain two
different aggregates of one round from honest share-holders.  :class:`PublicSetup`
refuses any threshold key with ``2t <= l`` (whoever dealt it), so every role refuses it.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from phe.paillier import PaillierPublicKey

from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier import PackingLayout
from fedvault.secagg.paillier_threshold import ThresholdPublicKey

from ..codec import SESSION_TAG_BYTES
from ..errors import ProtocolError, ThresholdError

__all__ = ["DEFAULT_VALUE_BITS", "HOLDER_ID", "PaillierParams", "PublicSetup", "PaillierGuarantee",
           "check_threshold_policy"]

DEFAULT_VALUE_BITS = 16
HOLDER_ID = 0
"""Party id of a key holder that is not one of the clients (a privacy officer)."""


def check_threshold_policy(threshold: int, parties: int) -> None:
    """Raise :class:`ThresholdError` unless ``2 <= t <= l`` and ``2t > l`` (a strict majority)."""
    if not 2 <= threshold <= parties:
        raise ThresholdError(f"threshold must be in 2..{parties} (the number of share-holders), got {threshold}")
    if 2 * threshold <= parties:
        raise ThresholdError(
            f"threshold {threshold} of {parties} share-holders lets two disjoint quorums answer two different "
            f"aggregates of one round (their difference is one hospital's update); use t >= {parties // 2 + 1}")


@dataclass(frozen=True)
class PaillierParams:
    """One round's public parameters (every party must hold the same values).

    Args:
        session_id: unique per study (bound into every message through the session tag).
        round: round number.
        clients: ids of the hospitals that may contribute this round (distinct, 1..2^32-2).
        min_clients: fewest contributions a decryptor will open (>= 2).
        keys: ``"holder"`` (one key holder decrypts) or ``"threshold"`` (t of the hospitals).
        key_bits: Paillier modulus size (2048 or 3072 in deployments).
        slot_bits: bits per quantised value (default 16); headroom for ``len(clients)``
            summands is added on top (see :class:`~secagg.paillier_packing.PackingLayout`).
        clip: values are clipped to ``[-clip, clip]`` before encoding.
        threshold: ``t`` for ``keys="threshold"`` at key setup (default a strict majority of
            ``clients``); must satisfy ``2t > l`` (see :func:`check_threshold_policy`).
        short_exponent: DJN short-exponent encryption (a stronger assumption; see
            :mod:`secagg.paillier`).
    """

    session_id: bytes
    round: int
    clients: tuple[int, ...]
    min_clients: int
    keys: Literal["holder", "threshold"]
    key_bits: int = 2048
    slot_bits: int | None = None
    clip: float = 1.0
    threshold: int | None = None
    short_exponent: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", tuple(int(c) for c in self.clients))
        if not isinstance(self.session_id, (bytes, bytearray)) or not 1 <= len(self.session_id) <= 255:
            raise ProtocolError("session_id must be 1..255 bytes")
        if not 0 <= int(self.round) < 2 ** 32:
            raise ProtocolError("round must be in 0..2^32-1")
        if len(set(self.clients)) != len(self.clients) or not self.clients:
            raise ProtocolError("clients must be a non-empty tuple of distinct ids")
        if any(not 0 < c < 2 ** 32 - 1 for c in self.clients):
            raise ProtocolError("client ids must be in 1..2^32-2 (0 is the key holder, 2^32-1 the server)")
        if not 2 <= self.min_clients <= len(self.clients):
            raise ProtocolError(f"min_clients must be in 2..{len(self.clients)}: decrypting fewer than two "
                                "contributions would reveal one hospital's update")
        if self.keys not in ("holder", "threshold"):
            raise ProtocolError(f"keys must be 'holder' or 'threshold', got {self.keys!r}")
        if self.keys == "threshold" and self.threshold is not None and not 2 <= self.threshold:
            raise ThresholdError(f"threshold must be at least 2, got {self.threshold}")
        self.layout  # validates key_bits / slot_bits / clip

    @property
    def t(self) -> int:
        """Threshold used when dealing a key for these clients (default ``floor(n/2) + 1``)."""
        return self.threshold if self.threshold is not None else len(self.clients) // 2 + 1

    @property
    def layout(self) -> PackingLayout:
        """Packing with headroom for every client's contribution."""
        try:
            return PackingLayout(self.key_bits, self.slot_bits or DEFAULT_VALUE_BITS, len(self.clients),
                                 float(self.clip))
        except SecAggError as exc:
            raise ProtocolError(f"bad packing parameters: {exc}") from exc

    @property
    def session_tag(self) -> bytes:
        """16-byte tag in every message header: SHA-256 of the session id and every parameter."""
        h = hashes.Hash(hashes.SHA256())
        h.update(b"fedvault/paillier/session/v1\x00" + struct.pack(">B", len(self.session_id)) + bytes(self.session_id))
        h.update(struct.pack(">II", self.round, len(self.clients)) + b"".join(struct.pack(">I", c) for c in self.clients))
        h.update(struct.pack(">IBHHdIB", self.min_clients, self.keys == "threshold", self.key_bits,
                             self.slot_bits or DEFAULT_VALUE_BITS, float(self.clip), self.threshold or 0,
                             bool(self.short_exponent)))
        return h.finalize()[:SESSION_TAG_BYTES]


@dataclass(frozen=True)
class PublicSetup:
    """What every party knows about the keys.

    ``threshold`` mode: ``parties`` are the share-holders (hospital ids), ``threshold_key``
    the dealt public key; the policy ``2t > l`` is checked here, so no role accepts a
    minority threshold.
    """

    mode: Literal["holder", "threshold"]
    public_key: PaillierPublicKey
    holder: int | None = None
    parties: tuple[int, ...] = ()
    threshold_key: ThresholdPublicKey | None = None

    def __post_init__(self) -> None:
        if self.mode == "threshold":
            if self.threshold_key is None or len(self.parties) != self.threshold_key.parties:
                raise ProtocolError("a threshold setup needs the dealt key and one share-holder per share")
            if len(set(self.parties)) != len(self.parties):
                raise ProtocolError("share-holders must be distinct")
            check_threshold_policy(self.threshold_key.threshold, len(self.parties))
        elif self.mode == "holder":
            if self.holder is None:
                raise ProtocolError("a holder setup names the key holder")
        else:
            raise ProtocolError(f"mode must be 'holder' or 'threshold', got {self.mode!r}")

    @property
    def threshold(self) -> int | None:
        return None if self.threshold_key is None else self.threshold_key.threshold

    def fingerprint(self) -> bytes:
        """SHA-256 of the modulus (and of the threshold verification keys), bound into every upload."""
        h = hashes.Hash(hashes.SHA256())
        n = self.public_key.n
        h.update(b"fedvault/paillier/key/v1\x00" + n.to_bytes((n.bit_length() + 7) // 8, "big"))
        if self.threshold_key is not None:
            h.update(self.threshold_key.fingerprint())
        return h.finalize()

    def share_index(self, party: int) -> int:
        """Shamir index (1-based) of a threshold party."""
        return self.parties.index(party) + 1

    def decryptors(self) -> tuple[int, ...]:
        """Ids the server sends the aggregate request to."""
        return self.parties if self.mode == "threshold" else (int(self.holder),)  # type: ignore[arg-type]

    def guarantee(self, params: PaillierParams) -> "PaillierGuarantee":
        """What a round with ``params`` under these keys guarantees (printed and recorded by every run)."""
        t = self.threshold
        l = len(self.parties)
        return PaillierGuarantee(
            keys=self.mode,
            key_bits=self.public_key.n.bit_length(),
            cohort=len(params.clients),
            min_sum=params.min_clients,
            threshold=t,
            parties=l if self.mode == "threshold" else None,
            colluding_parties=(min(t - 1, 2 * t - l - 1) if t is not None else None),
            slot_bits=params.layout.slot_bits,
            value_bits=params.layout.value_bits,
            max_shift=len(params.clients) * ((1 << params.layout.value_bits) - 1),
            clip=float(params.clip),
            short_exponent=params.short_exponent,
        )


@dataclass(frozen=True)
class PaillierGuarantee:
    """What one Paillier round guarantees (``line()`` is printed, ``as_dict()`` recorded).

    ``colluding_parties``: threshold share-holders that may collude with the server
    without breaking confidentiality (``< t``) or decrypt-once (``< 2t - l``).
    ``max_shift``: the largest amount (in quantisation steps) by which one malicious
    hospital can move one coordinate of the decoded sum without detection.  It knows its
    plaintext, but no range proof bounds it: it can add any value it chooses to the
    packed sum (mod n, carries and borrows included), so each coordinate can land anywhere
    in ``[-K clip, K clip]`` (``K`` contributors, at most the cohort) -- up to ``K`` times an
    honest hospital's influence (``2 clip``); anything further makes the round abort.
    """

    keys: str
    key_bits: int
    cohort: int
    min_sum: int
    threshold: int | None
    parties: int | None
    colluding_parties: int | None
    slot_bits: int
    value_bits: int
    max_shift: int
    clip: float
    short_exponent: bool

    @property
    def security_bits(self) -> int:
        """NIST SP 800-57 strength of the modulus (80 for 1024 bits, 112 for 2048, 128 for 3072); 0 below 1024."""
        if self.key_bits < 1024:
            return 0
        return 80 if self.key_bits < 2048 else 112 if self.key_bits < 3072 else 128 if self.key_bits < 7680 else 192

    def line(self) -> str:
        if self.keys == "holder":
            who = "the key holder is trusted not to collude with the server"
        elif self.colluding_parties:
            who = (f"t = {self.threshold} of {self.parties} share-holders, safe while at most "
                   f"{self.colluding_parties} of them collude with the server")
        else:
            who = f"t = {self.threshold} of {self.parties} share-holders, none of whom may collude with the server"
        assumption = "DCR + short-exponent DJN (non-standard)" if self.short_exponent else "DCR + DJN"
        strength = (f"~{self.security_bits}-bit security" if self.key_bits >= 2048 else
                    "TEST-ONLY key (< 112-bit security): not for patient data")
        return (f"paillier ({self.keys}, {self.key_bits}-bit, {strength}, {assumption}): "
                f"the server learns only the sum of >= {self.min_sum} contributions, each with a proof of plaintext "
                f"knowledge (colluding hospitals learn the sum of the honest ones); {who}; one answer per round; "
                f"a malicious hospital cannot read any update but can move each coordinate of the sum anywhere in "
                f"[-{self.cohort}*clip, {self.cohort}*clip] (clip = {self.clip:g}; no range proofs) or abort the round")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["protocol"] = "paillier"
        d["line"] = self.line()
        return d
