"""Packed Paillier aggregation in the sans-IO shape of every fedvault protocol.

Parties, roles and messages (every message on the common codec, :mod:`protocols.codec`)::

    hospital k   PaillierClient    --Upload------------> server   Enc(pack(x_k)) + proof of plaintext
                                                                  knowledge, signed by k (Ed25519)
    server       PaillierServer    --AggregateRequest--> decryptor(s)   the verified uploads
    key holder   HolderDecryptor   --AggregatePlaintext-> server   plaintexts of the sum      (keys="holder")
    share-holder ThresholdParty    --DecryptionShare---> server   proven share of the sum    (keys="threshold")

Modules: :mod:`.params` (parameters, public setup, threshold policy, guarantee),
:mod:`.setup` (key generation / trusted dealer), :mod:`.messages` (wire format),
:mod:`.verify` (upload checks), :mod:`.client`, :mod:`.server`, :mod:`.decryptor` (roles,
each with its own stage enum), :mod:`.decrypt_log` (decrypt-once state), :mod:`.vectors`
(test vectors).  :func:`simulate_round` runs one round through
:func:`protocols.driver.run_in_memory`.  ``protocols/SPEC.md`` (Paillier part) has the
full specification and what each party learns.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedvault.secagg.paillier import RandomBytes, seeded_random

from ..driver import DriverStats, Transcript, run_in_memory
from ..errors import AbortError, UsageError
from .client import ClientStage, PaillierClient
from .decrypt_log import DecryptLog, DirectoryDecryptLog, MemoryDecryptLog
from .decryptor import DecryptorStage, HolderDecryptor, ThresholdParty
from .messages import AggregatePlaintext, AggregateRequest, DecryptionShare, Upload, decode
from .params import DEFAULT_VALUE_BITS, HOLDER_ID, PaillierGuarantee, PaillierParams, PublicSetup
from .server import STAGES, PaillierServer, ServerStage
from .setup import KeySetup, setup_keys

__all__ = [
    "PaillierParams", "PublicSetup", "PaillierGuarantee", "KeySetup", "setup_keys", "HOLDER_ID", "DEFAULT_VALUE_BITS",
    "PaillierClient", "ClientStage", "PaillierServer", "ServerStage", "STAGES", "HolderDecryptor", "ThresholdParty",
    "DecryptorStage", "DecryptLog", "MemoryDecryptLog", "DirectoryDecryptLog", "Upload", "AggregateRequest",
    "AggregatePlaintext", "DecryptionShare", "decode", "RoundResult", "simulate_round", "simulation_parties",
]


@dataclass(frozen=True)
class RoundResult:
    """Outcome of :func:`simulate_round`.

    ``total``: decoded float sum of the contributors' clipped vectors (error at most
    ``layout.error_bound(len(contributors))`` per coordinate); ``upload_bytes``: wire bytes
    each contributing client sent; ``download_bytes``: wire bytes each party (decryptors
    included) was sent; ``seconds``: ``encrypt`` (slowest client: encryption + proof),
    ``sum`` (the server: verification, homomorphic sum, decoding), ``decrypt`` (slowest
    decryptor: verification + decryption or proven share);
    ``guarantee``: :meth:`PaillierGuarantee.as_dict`; ``refused``: messages the server
    refused, by sender; ``rejected_shares``: share-holders whose share failed its proof.
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    upload_bytes: dict[int, int]
    seconds: dict[str, float]
    rejected_shares: dict[int, str] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    refused: dict[int, list[str]] = field(default_factory=dict)
    guarantee: dict = field(default_factory=dict)


def _derive(seed: bytes, label: bytes, who: int) -> RandomBytes:
    return seeded_random(b"fedvault/paillier/sim/v2\x00" + bytes(seed) + b"\x00" + label + struct.pack(">I", who))


def simulation_parties(params: PaillierParams, setup: KeySetup, inputs: Mapping[int, np.ndarray], *, seed: bytes,
                       identities: Mapping[int, Ed25519PrivateKey] | None = None, workers: int | None = None
                       ) -> tuple[PaillierServer, dict[int, PaillierClient | HolderDecryptor | ThresholdParty]]:
    """The server and every party of one simulated round (clients for ``inputs``, the decryptor(s))."""
    if setup.public.mode != params.keys:
        raise UsageError(f"setup is for keys={setup.public.mode!r}, params say {params.keys!r}")
    unknown = set(inputs) - set(params.clients)
    if unknown:
        raise UsageError(f"inputs for clients {sorted(unknown)} who are not in params.clients")
    ids = identities if identities is not None else setup.simulated_identities(
        sorted(set(params.clients) | set(setup.public.decryptors())))
    pubs = {i: k.public_key() for i, k in ids.items()}
    server = PaillierServer(params, setup.public, pubs, workers=workers)
    enc = setup.encryptor(params.short_exponent)
    parties: dict[int, PaillierClient | HolderDecryptor | ThresholdParty] = {}
    thr: dict[int, ThresholdParty] = {}
    if setup.public.mode == "threshold":
        for party in setup.public.parties:
            thr[party] = ThresholdParty(params, setup.public, party, setup.shares[party], ids[party], pubs,
                                        _derive(seed, b"party", party), log=setup.log(party), workers=workers)
    for cid in sorted(inputs):
        parties[cid] = PaillierClient(params, setup.public, cid, ids[cid], enc, _derive(seed, b"client", cid),
                                      x=inputs[cid], decryptor=thr.pop(cid, None), workers=workers)
    parties.update(thr)  # share-holders that contribute nothing this round
    if setup.public.mode == "holder":
        h = int(setup.public.holder)  # type: ignore[arg-type]
        if h in parties:
            raise UsageError("the key holder cannot also be a contributing client in this simulation")
        parties[h] = HolderDecryptor(params, setup.public, setup.crt_decryptor(), ids[h], pubs, log=setup.log(h),
                                     workers=workers)
    return server, parties


def simulate_round(params: PaillierParams, setup: KeySetup, inputs: Mapping[int, np.ndarray], *, seed: bytes,
                   identities: Mapping[int, Ed25519PrivateKey] | None = None, workers: int | None = None,
                   drop: Mapping[str, Collection[int]] | None = None, clock: Callable[[], float] = time.perf_counter,
                   transcript: Transcript | None = None) -> RoundResult:
    """Run one encrypted round in memory, moving wire bytes between the roles (:func:`run_in_memory`).

    ``inputs`` maps each contributing client to its float64 vector (clients missing from
    it do not upload).  ``setup`` comes from :func:`setup_keys` and is reused across
    rounds (its in-memory decrypt logs make every decryptor answer once per round).
    ``drop``: ``{"upload" | "decrypt": ids}`` parties that vanish at that stage.  All
    randomness derives from ``seed`` (a simulation: a round replays byte for byte).

    Raises :class:`AbortError` when the round cannot complete (too few uploads or shares).
    """
    if len(inputs) < params.min_clients:
        raise AbortError(f"{len(inputs)} clients provided inputs; at least {params.min_clients} are needed")
    server, parties = simulation_parties(params, setup, inputs, seed=seed, identities=identities, workers=workers)
    stats = DriverStats()
    stage_of: dict[int, dict[str, float]] = {}
    timed = {i: _StageTimer(role, server, stage_of.setdefault(i, {}), clock) for i, role in parties.items()}
    run_in_memory(server, timed, drop=drop, clock=clock, transcript=transcript, stats=stats)
    res = server.result()
    enc = [stage_of[i].get("upload", 0.0) for i in inputs]
    dec = [stage_of[i].get("decrypt", 0.0) for i in setup.public.decryptors() if i in stage_of]
    seconds = {"encrypt": max(enc, default=0.0), "sum": stats.server_seconds, "decrypt": max(dec, default=0.0)}
    up = {i: stats.upload_bytes[i] for i in sorted(inputs)}
    return RoundResult(np.asarray(res.total, dtype=np.float64), res.contributors, up, seconds,
                       dict(server.rejected_shares), dict(stats.download_bytes),
                       {k: list(v) for k, v in stats.dropped.items()}, dict(stats.refused), res.guarantee)


class _StageTimer:
    """Wraps a role to split its time by the server's stage (encryption vs decryption of one hospital)."""

    def __init__(self, role, server: PaillierServer, acc: dict[str, float], clock: Callable[[], float]) -> None:
        self.role, self._server, self._acc, self._clock = role, server, acc, clock

    stage = property(lambda self: self.role.stage)
    done = property(lambda self: self.role.done)

    def _timed(self, fn, *args):
        key = self._server.stage.value
        t = self._clock()
        try:
            return fn(*args)
        finally:
            self._acc[key] = self._acc.get(key, 0.0) + self._clock() - t

    def start(self):
        return self._timed(self.role.start)

    def receive(self, data):
        return self._timed(self.role.receive, data)

