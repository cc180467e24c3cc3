"""The aggregator's role: collect proven uploads, ask the decryptor(s), decode the sum.

Stages (the values are the transport's stage names)::

    UPLOAD --advance (>= min_clients verified uploads)--> DECRYPT --advance--> DONE
    UPLOAD --advance (too few)--> ABORTED          DECRYPT --advance (no answer / < t valid shares)--> ABORTED

``receive`` in UPLOAD verifies each upload as a decryptor will (signature, key, sizes,
units, proof of plaintext knowledge) and refuses -- attributed to the sender, state
unchanged -- anything else.  ``advance`` closes UPLOAD and returns the same
:class:`AggregateRequest` for the key holder, or for every share-holder.  In DECRYPT it
accepts the holder's plaintexts or each party's decryption share (a share that fails
its proof is refused and recorded in :attr:`rejected_shares`); ``advance`` then
combines ``t`` valid shares (threshold) or takes the holder's answer, unpacks the slot
sums and checks each is one honest inputs can produce (:class:`SumRangeError`
otherwise: some contributor encrypted an out-of-range plaintext).

What the server learns: who uploaded, the ciphertexts (semantically secure), the sum of
the contributors' encoded inputs, and in threshold mode the decryption shares (which
reveal nothing beyond the sum).
"""

from __future__ import annotations

import enum
from typing import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier import EncryptedVector
from fedvault.secagg.paillier_threshold import DecryptionShare as _Share
from fedvault.secagg.paillier_threshold import ShareVerificationError, combine, verify_share

from ..codec import SERVER_ID, Message
from ..errors import (AbortError, DuplicateClientError, InconsistentError, InputError, ProofError, ReplayError,
                      StageError, SumRangeError)
from ..session import SessionResult
from .decryptor import share_context
from .messages import AggregatePlaintext, AggregateRequest, DecryptionShare, Upload, decode, elements
from .params import PaillierParams, PublicSetup
from .verify import UploadVerifier

__all__ = ["ServerStage", "PaillierServer", "STAGES"]


class ServerStage(enum.Enum):
    UPLOAD = "upload"
    DECRYPT = "decrypt"
    DONE = "done"
    ABORTED = "aborted"


STAGES = ("upload", "decrypt")


class PaillierServer:
    """The aggregator's side of one Paillier round (sans-IO)."""

    def __init__(self, params: PaillierParams, public: PublicSetup,
                 identities: Mapping[int, Ed25519PublicKey | bytes], *, workers: int | None = None) -> None:
        self.params, self.public = params, public
        self.verifier = UploadVerifier(params, public, identities, workers=workers)
        self.workers = workers
        self.stage = ServerStage.UPLOAD
        self._uploads: dict[int, Upload] = {}
        self._vectors: dict[int, EncryptedVector] = {}
        self._length: int | None = None
        self._aggregate: EncryptedVector | None = None
        self._plain: list[int] | None = None
        self._shares: dict[int, _Share] = {}
        self.rejected_shares: dict[int, str] = {}
        self.dropped: dict[str, list[int]] = {}
        self.total: np.ndarray | None = None
        self.slot_sums: np.ndarray | None = None

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(sorted(self._uploads))

    @property
    def done(self) -> bool:
        return self.stage in (ServerStage.DONE, ServerStage.ABORTED)

    # -- receiving -------------------------------------------------------------------------
    def receive(self, data: bytes | Message) -> None:
        """Take one party's message; a refusal raises a typed ``ProtocolError`` and changes nothing."""
        if self.done:
            raise StageError(f"server is {self.stage.value}; it accepts no more messages")
        msg = decode(data) if not isinstance(data, Message) else data
        if msg.session != self.params.session_tag or msg.round != self.params.round:
            raise ReplayError(f"message of {msg.sender} belongs to another session, parameter set or round")
        if self.stage is ServerStage.UPLOAD and isinstance(msg, Upload):
            return self._on_upload(msg)
        if self.stage is ServerStage.DECRYPT and isinstance(msg, AggregatePlaintext) and self.public.mode == "holder":
            return self._on_plaintext(msg)
        if self.stage is ServerStage.DECRYPT and isinstance(msg, DecryptionShare) and self.public.mode == "threshold":
            return self._on_share(msg)
        raise StageError(f"got {type(msg).__name__} from {msg.sender} in stage {self.stage.value} "
                         f"({self.public.mode} mode)")

    def _on_upload(self, up: Upload) -> None:
        if up.sender in self._uploads:
            raise DuplicateClientError(f"client {up.sender} already uploaded this round")
        vec = self.verifier.check(up, self._length)
        self._length = up.length
        self._uploads[up.sender] = up
        self._vectors[up.sender] = vec

    def _on_plaintext(self, msg: AggregatePlaintext) -> None:
        if msg.sender != self.public.holder:
            raise InconsistentError(f"{msg.sender} is not the key holder")
        self.verifier.check_signature(msg, "key holder")
        if self._plain is not None:
            raise DuplicateClientError("the key holder already answered")
        if msg.contributors != self.contributors:
            raise InconsistentError("the holder answered for another set of contributors")
        assert self._aggregate is not None
        vals = elements(msg.plaintexts, msg.width)
        n = self.public.public_key.n
        if len(vals) != len(self._aggregate.ciphertexts) or any(v >= n for v in vals):
            raise InputError(f"the holder's answer has {len(vals)} plaintexts in Z_n; expected "
                             f"{len(self._aggregate.ciphertexts)}")
        self._plain = vals

    def _on_share(self, msg: DecryptionShare) -> None:
        i = msg.sender
        if i not in self.public.parties:
            raise InconsistentError(f"{i} is not a share-holder")
        self.verifier.check_signature(msg, "share-holder")
        if self.public.share_index(i) in self._shares or i in self.rejected_shares:
            raise DuplicateClientError(f"party {i} already answered")
        if msg.contributors != self.contributors:
            raise InconsistentError(f"party {i} answered for another set of contributors")
        assert self._aggregate is not None and self.public.threshold_key is not None
        if msg.width != self.verifier.width:
            self.rejected_shares[i] = "wrong element width"
            raise InputError(f"share of party {i} has {msg.width}-byte elements, expected {self.verifier.width}")
        share = _Share(self.public.share_index(i), tuple(elements(msg.values, msg.width)),
                       int.from_bytes(msg.e, "big"), msg.z)
        try:
            verify_share(self.public.threshold_key, self._aggregate.ciphertexts, share,
                         context=share_context(self.params, self.contributors), workers=self.workers)
        except ShareVerificationError as exc:
            self.rejected_shares[i] = str(exc)
            raise ProofError(f"decryption share of party {i} rejected: {exc}") from exc
        self._shares[share.index] = share

    # -- stage deadline --------------------------------------------------------------------
    def advance(self) -> dict[int, Message]:
        """Close the current stage; returns ``{party: message}``.  Raises :class:`AbortError` (-> ABORTED)."""
        try:
            if self.stage is ServerStage.UPLOAD:
                return self._close_upload()
            if self.stage is ServerStage.DECRYPT:
                self._close_decrypt()
                return {}
        except AbortError:
            self.stage = ServerStage.ABORTED
            raise
        raise StageError(f"server is {self.stage.value}; nothing to advance")

    def _close_upload(self) -> dict[int, Message]:
        p = self.params
        self.dropped["upload"] = sorted(set(p.clients) - set(self._uploads))
        if len(self._uploads) < p.min_clients:
            raise AbortError(f"round aborted, nothing was revealed: {len(self._uploads)} verified uploads; "
                             f"at least {p.min_clients} are needed")
        ids = self.contributors
        self._aggregate = EncryptedVector.sum([self._vectors[i] for i in ids])
        req = AggregateRequest(p.session_tag, p.round, SERVER_ID, tuple(self._uploads[i] for i in ids))
        self.stage = ServerStage.DECRYPT
        return {d: req for d in self.public.decryptors()}

    def _close_decrypt(self) -> None:
        assert self._aggregate is not None
        lay, k = self.params.layout, len(self.contributors)
        if self.public.mode == "holder":
            if self._plain is None:
                self.dropped["decrypt"] = [int(self.public.holder)]  # type: ignore[arg-type]
                raise AbortError("round aborted: the key holder did not answer")
            plain = self._plain
        else:
            tk = self.public.threshold_key
            assert tk is not None
            answered = {self.public.parties[s - 1] for s in self._shares}
            self.dropped["decrypt"] = sorted(set(self.public.parties) - answered - set(self.rejected_shares))
            if len(self._shares) < tk.threshold:
                raise AbortError(f"round aborted: {len(self._shares)} valid decryption shares; {tk.threshold} are "
                                 f"needed (rejected: {sorted(self.rejected_shares)})")
            plain = combine(tk, list(self._shares.values()))
        sums = _unpack_checked(lay, plain, self._aggregate.length, k)
        self.slot_sums = sums
        self.total = lay.dequantise_sum(sums, k)
        self.stage = ServerStage.DONE

    # -- result ----------------------------------------------------------------------------
    def result(self) -> SessionResult:
        if self.stage is not ServerStage.DONE or self.total is None:
            raise StageError(f"no result in stage {self.stage.value}")
        return SessionResult(total=self.total, encoded_total=self.slot_sums, contributors=self.contributors,
                             dropped={k: list(v) for k, v in self.dropped.items()},
                             refused={i: [r] for i, r in self.rejected_shares.items()},
                             guarantee=self.public.guarantee(self.params).as_dict())


def _unpack_checked(layout, plain: list[int], length: int, summands: int) -> np.ndarray:
    """Slot sums of the decrypted aggregate; :class:`SumRangeError` unless each is in ``[0, K (2^b - 1)]``."""
    try:
        sums = layout.unpack(plain, length)
    except SecAggError as exc:
        raise SumRangeError(f"round aborted: the decrypted sum does not fit the packing ({exc}); a contributor "
                            "encrypted a plaintext outside its slots") from exc
    if sums.size and int(sums.max()) > summands * ((1 << layout.value_bits) - 1):
        raise SumRangeError("round aborted: a slot of the decrypted sum exceeds what the contributors' clipped "
                            "inputs can produce; a contributor encrypted an out-of-range value")
    return sums
