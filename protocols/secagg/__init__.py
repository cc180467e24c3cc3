"""SecAgg / SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020): the recipe.

``simulate_round`` runs one round in memory: it builds the :class:`Client` and
:class:`Server` state machines, moves *wire bytes* between them (every message is
encoded and decoded), simulates clients vanishing at chosen stages, and returns the
decoded sum of exactly the survivors' inputs.  Tests, notebooks, ``fl`` and network
integrations all drive the same state machines; only the transport differs.

>>> params = SecAggParams(b"demo", 0, (1, 2, 3, 4), threshold=2)
>>> res = simulate_round(params, {i: np.full(3, 0.25) for i in params.clients})
>>> res.total.tolist()
[1.0, 1.0, 1.0]

See ``protocols/SPEC.md`` for the message formats, the state diagram and what each
party learns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedvault.secagg import keys as K
from fedvault.secagg.errors import ParameterError
from fedvault.secagg.prg import DeterministicRandom

from ..driver import DriverStats, run_in_memory
from ..errors import InputError
from .messages import Message
from .client import Client, ClientStage
from .params import SecAggParams
from .threat import Guarantee, ThreatModel
from .server import STAGES, Server, ServerStage

__all__ = [
    "SecAggParams",
    "ThreatModel",
    "Guarantee",
    "Client",
    "ClientStage",
    "Server",
    "ServerStage",
    "STAGES",
    "RoundResult",
    "simulate_round",
    "simulation_identities",
]

DEFAULT_SEED = bytes(32)


@dataclass
class RoundResult:
    """Outcome of one simulated round.

    total
        Decoded float64 sum of the survivors' inputs (``encoder.decode_sum``).
    encoded_total
        The raw sum in Z_(2^bits) (uint32/uint64).
    survivors
        U3: the clients whose inputs are in the sum.
    dropped
        ``{stage: [clients lost at that stage]}`` as observed by the server.
    upload_bytes / download_bytes
        Wire bytes each client sent / received.
    client_seconds
        Seconds each client spent inside its state machine (encoding and masking included).
    server_seconds
        Seconds the server spent inside its state machine.
    """

    total: np.ndarray
    encoded_total: np.ndarray
    survivors: tuple[int, ...]
    dropped: dict[str, list[int]]
    upload_bytes: dict[int, int]
    download_bytes: dict[int, int]
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    blame: dict[int, list[str]] = field(default_factory=dict)
    disputes: list[tuple[int, int]] = field(default_factory=list)
    guarantee: dict = field(default_factory=dict)

    @property
    def max_client_seconds(self) -> float:
        return max(self.client_seconds.values(), default=0.0)


def simulation_identities(seed: bytes, clients: Collection[int]) -> dict[int, Ed25519PrivateKey]:
    """Deterministic Ed25519 identity keys for simulated clients (never for deployments)."""
    root = DeterministicRandom(seed, b"identities")
    return {i: K.generate_ed25519(root.child(b"identity/%d" % i)) for i in sorted(clients)}


def simulate_round(
    params: SecAggParams,
    inputs: Mapping[int, np.ndarray],
    *,
    drop: Mapping[str, Collection[int]] | None = None,
    seed: bytes = DEFAULT_SEED,
    identities: Mapping[int, Ed25519PrivateKey] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    transcript: list[tuple[str, int, bytes]] | None = None,
    threads: int = 2,
) -> RoundResult:
    """Run one SecAgg/SecAgg+ round in memory between honest parties.

    inputs
        ``{client: vector}`` for every client in ``params.clients``: float vectors in
        ``[-clip, clip]`` (encoded by each client) or already-encoded unsigned vectors
        of the encoder's dtype.  A client is only asked for its input when it reaches
        the masked-input stage, so ``inputs`` may be a lazy mapping.
    drop
        ``{stage: clients}``: clients that vanish at that stage (send nothing from
        then on).  Stages: ``advertise``, ``share``, ``masked_input``, ``consistency``,
        ``unmask``.
    seed
        32 bytes from which every party's randomness (and, if ``identities`` is None,
        identity keys) is derived: the same seed replays the round byte-for-byte.
    clock
        Timer for the reported seconds (only used for measurement).
    threads
        Worker threads each party uses for mask expansion (results do not depend on it).
    transcript
        If given, every wire message is appended as ``("up"|"down", client, bytes)``
        in the order sent (for test vectors and replay checks).

    Raises :class:`AbortError` when the threshold cannot be met (nothing revealed),
    :class:`InputError` if an input is invalid, :class:`ParameterError` for bad parameters.
    """
    drop = {k: set(v) for k, v in (drop or {}).items()}
    bad_stage = set(drop) - set(STAGES)
    if bad_stage:
        raise ParameterError(f"unknown dropout stage(s) {sorted(bad_stage)}; use {STAGES}")
    missing = set(params.clients) - set(inputs.keys())
    if missing:
        raise ParameterError(f"no input for clients {sorted(missing)[:5]}")
    if params.dim is None:
        first = inputs[params.clients[0]]
        params = params.with_dim(int(np.asarray(first).shape[0]))
    if identities is None:
        identities = simulation_identities(seed, params.clients)
    id_pub = {i: K.public_bytes(identities[i]) for i in params.clients}
    root = DeterministicRandom(seed, b"simulate_round")

    stats = DriverStats()
    t0 = clock()
    server = Server(params, id_pub, threads=threads, rng=root.child(b"server"))
    stats.server_seconds += clock() - t0
    clients: dict[int, _LazyInput] = {}
    for i in params.clients:
        t0 = clock()
        c = Client(params, i, identities[i], id_pub, root.child(b"client/%d" % i), threads=threads)
        stats.party_seconds[i] = clock() - t0
        clients[i] = _LazyInput(c, inputs, i)

    try:
        run_in_memory(server, clients, drop=drop, clock=clock, transcript=transcript, stats=stats)
    except _LocalInputError as e:
        raise e.error from None

    assert server.stage is ServerStage.DONE and server.result is not None
    enc = params.encoder
    survivors = server.survivors
    total = enc.decode_sum(server.result, len(survivors))
    return RoundResult(
        blame=dict(server.blame),
        disputes=list(server.disputes),
        guarantee=params.guarantee().as_dict(),
        total=total,
        encoded_total=server.result,
        survivors=survivors,
        dropped={s: list(server.dropped.get(s, [])) for s in STAGES},
        upload_bytes=stats.upload_bytes,
        download_bytes=stats.download_bytes,
        client_seconds=stats.party_seconds,
        server_seconds=stats.server_seconds,
    )


class _LazyInput:
    """A :class:`Client` as a :class:`~protocols.session.ClientRole` that fetches its input
    from a (possibly lazy) mapping only when the masked-input stage needs it."""

    def __init__(self, client: Client, inputs: Mapping[int, np.ndarray], i: int) -> None:
        self.client, self._inputs, self._i = client, inputs, i

    @property
    def stage(self) -> ClientStage:
        return self.client.stage

    @property
    def done(self) -> bool:
        return self.client.done

    def start(self) -> list[Message]:
        return self.client.start()

    def receive(self, data: bytes | Message) -> list[Message]:
        if self.client.stage is ClientStage.AWAIT_SHARES:
            try:
                self.client.set_input(self._inputs[self._i])
            except InputError as e:  # the caller's input, not a peer's message: not a refusal
                raise _LocalInputError(e) from e
        return self.client.receive(data)


class _LocalInputError(Exception):
    def __init__(self, error: InputError) -> None:
        super().__init__(str(error))
        self.error = error
