"""The hospital's role: encrypt, prove, sign, upload once (and, in threshold mode, answer as a share-holder).

Stages::

    READY --start()--> UPLOADED                       (holder mode, or no key share: done)
    UPLOADED --AggregateRequest--> DONE               (threshold mode: delegated to its ThresholdParty)
    any --refusal--> ABORTED (terminal)

The hospital computes everything it adds on its own side with its own randomness
(``rng``, ``os.urandom`` in deployments): the clipped, quantised, packed vector, the DJN
exponents, and the proof of plaintext knowledge; it signs the upload with its identity
key.  What it learns: nothing about other hospitals (in threshold mode it sees the
other uploads' ciphertexts in the aggregate request, which are semantically secure).
"""

from __future__ import annotations

import enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedvault.secagg.errors import SecAggError
from fedvault.secagg.paillier import FastEncryptor, RandomBytes, ciphertext_bytes
from fedvault.secagg.paillier_proofs import encrypt_and_prove

from ..codec import Message
from ..errors import InputError, ProtocolError, StageError
from .decryptor import ThresholdParty
from .messages import Upload, pack_elements, signed
from .params import PaillierParams, PublicSetup
from .verify import proof_context

__all__ = ["ClientStage", "PaillierClient"]


class ClientStage(enum.Enum):
    READY = "ready"
    UPLOADED = "uploaded"
    DONE = "done"
    ABORTED = "aborted"


class PaillierClient:
    """One hospital in one round.

    Args:
        params, public: the round's parameters and the study's public key setup.
        client_id: this hospital's id (in ``params.clients``).
        identity: its long-term Ed25519 key (the server and decryptors hold the public half).
        encryptor: the DJN encryptor for the study key (shared table; no secret in it).
        rng: this hospital's secret randomness (``os.urandom``; a seeded stream only to replay tests).
        x: the float64 vector to contribute (or call :meth:`set_input` before :meth:`start`).
        decryptor: its :class:`ThresholdParty` in threshold mode (answers the aggregate request).
        workers: processes for encryption and proving.
    """

    def __init__(self, params: PaillierParams, public: PublicSetup, client_id: int, identity: Ed25519PrivateKey,
                 encryptor: FastEncryptor, rng: RandomBytes, *, x: np.ndarray | None = None,
                 decryptor: ThresholdParty | None = None, workers: int | None = None) -> None:
        if client_id not in params.clients:
            raise ProtocolError(f"client {client_id} is not in this round's clients")
        if encryptor.public_key.n != public.public_key.n or encryptor.short_exponent != params.short_exponent:
            raise ProtocolError("encryptor does not match the study key / exponent setting")
        if decryptor is not None and decryptor.party != client_id:
            raise ProtocolError("a hospital's decryptor role must carry its own id")
        self.params, self.public, self.id = params, public, client_id
        self._identity, self._encryptor, self._rng = identity, encryptor, rng
        self.decryptor = decryptor
        self.workers = workers
        self.stage = ClientStage.READY
        self._x: np.ndarray | None = None
        if x is not None:
            self.set_input(x)

    def set_input(self, x: np.ndarray) -> None:
        """This round's update: a finite 1-D float vector (clipped to ``[-clip, clip]`` when encoded)."""
        if self.stage is not ClientStage.READY:
            raise StageError(f"client {self.id}: the input is set before the upload")
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1 or a.size == 0 or a.size >= 2 ** 32:
            raise InputError(f"input must be a non-empty 1-D vector, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise InputError("input contains NaN or infinity; fix the update before encrypting")
        self._x = a

    @property
    def done(self) -> bool:
        if self.stage is ClientStage.UPLOADED:
            return self.decryptor is None
        return self.stage in (ClientStage.DONE, ClientStage.ABORTED)

    def start(self) -> list[Message]:
        """Clip, pack, encrypt, prove and sign the input: ``[Upload]``."""
        if self.stage is not ClientStage.READY:
            raise StageError(f"client {self.id} already uploaded this round")
        if self._x is None:
            raise StageError(f"client {self.id} has no input; call set_input first")
        p, fp = self.params, self.public.fingerprint()
        try:
            vec, proof = encrypt_and_prove(self._encryptor, p.layout, self._x, rng=self._rng, workers=self.workers,
                                           context=proof_context(p, self.id, fp, int(self._x.size)))
        except SecAggError as exc:
            self.stage = ClientStage.ABORTED
            raise InputError(f"client {self.id} cannot encrypt its update: {exc}") from exc
        w = ciphertext_bytes(p.key_bits)
        up = signed(Upload(p.session_tag, p.round, self.id, fp, vec.length, w, vec.to_bytes(),
                           pack_elements((proof.commitment, proof.z_m, proof.z_a), w), bytes(64)), self._identity)
        self._x = None
        self.stage = ClientStage.UPLOADED
        return [up]

    def receive(self, data: bytes | Message) -> list[Message]:
        """Threshold mode: the aggregate request, answered by this hospital's :class:`ThresholdParty`."""
        if self.stage is not ClientStage.UPLOADED or self.decryptor is None:
            stage = self.stage
            self.stage = ClientStage.ABORTED
            raise StageError(f"client {self.id} expects no message in stage {stage.value}")
        try:
            out = self.decryptor.receive(data)
        except ProtocolError:
            self.stage = ClientStage.ABORTED
            raise
        self.stage = ClientStage.DONE
        return out

    # -- compatibility -------------------------------------------------------------------
    def upload(self, x: np.ndarray) -> bytes:
        """``set_input(x)`` then ``start()``; the upload's wire bytes."""
        self.set_input(x)
        return self.start()[0].encode()
