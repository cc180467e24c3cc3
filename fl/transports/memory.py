"""The in-process transport: every party lives in this process; only encoded bytes move.

:class:`InMemoryTransport` implements :class:`fl.engine.Transport` for the simulation
behind ``fedvault run`` / ``fedvault demo`` and :func:`fl.simulation.federate`. It hands
a :class:`~fl.engine.RoundSetup` to each party (``party.join(setup)`` — the hospital
trains, encodes, adds its noise and masks/encrypts on its side) and then lets
:func:`protocols.driver.run_in_memory` move the protocol messages, as bytes, between the
parties' client roles and the server role. It never looks inside a message.

Dropouts are simulation-only: with ``aggregation.dropout = p`` a seeded RNG (public,
not a privacy value) picks, for each stage of the server role (its stage enum, in order),
which contributors vanish there (binomial with rate p among those still alive).

``transcript``: if a list is given, every message is appended as
``(direction, party, bytes)``, ``direction`` in ``"up"`` (to the server) or ``"down"``;
a test can check that the server received nothing but protocol bytes.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from fedvault.dp.errors import BudgetExceeded
from fedvault.fl.engine import RoundSetup, SessionOutcome
from fedvault.protocols.driver import DriverStats, run_in_memory
from fedvault.protocols.errors import AbortError
from fedvault.protocols.session import ServerRole

__all__ = ["Party", "InMemoryTransport", "simulated_stages"]

_TERMINAL = ("done", "aborted")


class Party(Protocol):
    """What the transport needs of a party (a :class:`~fl.hospital.Hospital`, a key holder, a canary)."""

    name: str

    def refusal(self, round: int) -> str | None: ...

    def join(self, setup: RoundSetup) -> Any: ...


def simulated_stages(server: Any) -> list[str]:
    """The server role's stages at which the simulation may drop parties, in order.

    Terminal stages are left out, and SecAgg's short graph-reveal stage too: a loss there
    stops the round by design, so it is not simulated.
    """
    return [s.value for s in type(server.stage) if s.value not in _TERMINAL + ("reveal",)]


class _Timed:
    """A client role with the seconds it spends starting (encode, noise, mask/encrypt) and answering."""

    def __init__(self, role: Any, clock: Callable[[], float]) -> None:
        self.role, self.clock = role, clock
        self.start_seconds = self.receive_seconds = 0.0

    @property
    def stage(self):  # noqa: ANN201
        return self.role.stage

    @property
    def done(self) -> bool:
        return self.role.done

    def start(self) -> list:
        t = self.clock()
        try:
            return self.role.start()
        finally:
            self.start_seconds += self.clock() - t

    def receive(self, data: Any) -> list:
        t = self.clock()
        try:
            return self.role.receive(data)
        finally:
            self.receive_seconds += self.clock() - t


class InMemoryTransport:
    """All parties in this process (see the module docstring).

    Args:
        parties: every party by name: hospitals, extra participants, key holder.
        roster: the contributing parties' names (hospitals and extra participants).
        dropout: per-stage dropout rate of the simulation (update sessions only).
        seed: seed of the dropout RNG (simulation only; not a privacy value).
        transcript: if a list, every wire message is appended to it.
    """

    def __init__(self, parties: Mapping[str, Party], *, roster: Sequence[str], dropout: float = 0.0, seed: int = 0,
                 clock: Callable[[], float] = time.perf_counter, transcript: list | None = None) -> None:
        self.parties = dict(parties)
        self._roster = list(roster)
        self.dropout = float(dropout)
        self._drop_rng = np.random.default_rng([seed, 0x5EC])
        self.clock = clock
        self.transcript = transcript

    def roster(self) -> list[str]:
        return list(self._roster)

    def ask(self, round: int, names: Sequence[str]) -> dict[str, str]:
        out = {}
        for n in names:
            reason = self.parties[n].refusal(round)
            if reason is not None:
                out[n] = reason
        return out

    def _drops(self, server: Any, ids: list[int]) -> dict[str, list[int]]:
        if not self.dropout:
            return {}
        alive = list(ids)
        drops: dict[str, list[int]] = {}
        for stage in simulated_stages(server):
            k = int(self._drop_rng.binomial(len(alive), self.dropout))
            if k:
                gone = sorted(int(x) for x in self._drop_rng.choice(alive, size=k, replace=False))
                drops[stage] = gone
                alive = [a for a in alive if a not in gone]
        return drops

    def run_session(self, setup: RoundSetup, server: ServerRole) -> SessionOutcome:
        back = {pid: n for n, pid in setup.parties.items()}
        roles: dict[int, Any] = {}
        refused: dict[str, str] = {}
        train: dict[str, float] = {}
        t_wall = self.clock()
        for name, pid in setup.parties.items():
            t0 = self.clock()
            try:
                roles[pid] = _Timed(self.parties[name].join(setup), self.clock)
            except BudgetExceeded as e:
                refused[name] = str(e)
                continue
            train[name] = self.clock() - t0
        t_proto = self.clock()
        drops = self._drops(server, sorted(setup.contributors)) if setup.purpose == "update" else {}
        aborted = None
        stats = DriverStats()
        try:
            run_in_memory(server, roles, drop=drops, clock=self.clock, transcript=self.transcript, stats=stats)
        except AbortError as e:
            from fedvault.fl.summary import name_parties

            aborted = name_parties(str(e), back)  # hospital names, not protocol party ids
        wall = self.clock() - t_proto
        contributors: list[str] = []
        total = None
        guarantee = None
        dropped_ids: Mapping[str, Sequence[int]] = getattr(server, "dropped", None) or stats.dropped
        if aborted is None:
            res = server.result()
            total = np.asarray(res.total, dtype=np.float64)
            contributors = [back[i] for i in res.contributors]
            dropped_ids = res.dropped
            guarantee = res.guarantee or None
        vecs = getattr(server, "individual_vectors", None) if aborted is None else None
        individual = {back[i]: np.asarray(v) for i, v in vecs().items()} if vecs is not None else None
        dropped = {s: [back[i] for i in v if i in back] for s, v in dropped_ids.items()}
        blamed: dict[str, list[str]] = {}
        attributed = [stats.refused, getattr(server, "blame", {}) or {}]
        if aborted is None:
            attributed.append(res.refused)
        for src in attributed:  # messages the server refused / misbehaviour, by sender
            for i, reasons in src.items():
                for why in reasons:
                    if why not in blamed.setdefault(back.get(i, str(i)), []):
                        blamed[back.get(i, str(i))].append(why)
        for i, why in stats.aborted.items():  # an honest party refused a server message and left
            from fedvault.fl.summary import name_parties

            refused.setdefault(back.get(i, str(i)), name_parties(why, back))
        upload = {back[i]: int(b) for i, b in stats.upload_bytes.items() if i in setup.contributors}
        download = {back[i]: int(b) for i, b in stats.download_bytes.items() if i in back}
        seconds = {"train": max(train.values(), default=0.0), "server": float(stats.server_seconds),
                   # slowest contributor's first message: encoding, client-level noise, masks/encryption
                   "client": max((r.start_seconds for i, r in roles.items() if i in setup.contributors), default=0.0),
                   "wall": wall, "session": self.clock() - t_wall}
        if setup.protocol == "paillier":  # slowest decryptor (key holder, or key-share holders)
            seconds["decrypt"] = max((r.receive_seconds for r in roles.values()), default=0.0)
        return SessionOutcome(total=total, contributors=contributors, refused=refused, dropped=dropped,
                              upload_bytes=upload, download_bytes=download, seconds=seconds, aborted=aborted,
                              individual=individual, guarantee=guarantee, blamed=blamed)

    def personalise(self, weights: np.ndarray, round: int) -> dict[str, dict[str, Any]]:
        return {n: self.parties[n].personalize(weights, round) for n in self._roster
                if hasattr(self.parties[n], "personalize")}
