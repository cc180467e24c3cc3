"""Build the protocol roles a round needs (server side and party side) from public parameters.

Every aggregation protocol is driven through the role interfaces of
:mod:`protocols.session`; this module only constructs them (it never sees anything but
parameters, keys and the party's own vector) and, for SecAgg, gives the server object
``result()`` in the :class:`~protocols.session.SessionResult` shape.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from fedvault.protocols.errors import StageError
from fedvault.protocols.session import SessionResult


def secagg_guarantee(params: Any) -> dict[str, Any]:
    """The SecAgg run's guarantee (the protocol's own, when its parameters state one)."""
    g = getattr(params, "guarantee", None)
    if g is not None:
        g = g() if callable(g) else g
        d = g.as_dict() if hasattr(g, "as_dict") else dict(g)
        return {"protocol": "secagg", **d}
    return {
        "protocol": "secagg", "graph": params.graph, "threshold": params.t, "cohort": len(params.clients),
        "bits": params.bits,
        "line": (f"secagg ({params.graph} graph, t = {params.t} of each neighbourhood, {params.bits}-bit ring): the "
                 f"server learns only the sum of the survivors' inputs, as long as fewer than t of a client's "
                 f"neighbours collude with it"),
    }


class SecAggServerRole:
    """:class:`protocols.secagg.Server` with ``result()`` as a :class:`SessionResult`."""

    def __init__(self, server: Any) -> None:
        self._s = server
        self.params = server.params

    @property
    def stage(self):  # noqa: ANN201 - the server's stage enum
        return self._s.stage

    @property
    def done(self) -> bool:
        return self._s.stage.value == "done"

    @property
    def dropped(self) -> dict[str, list[int]]:
        return self._s.dropped

    def receive(self, data: Any) -> None:
        self._s.receive(data)

    def advance(self) -> Mapping[int, Any]:
        return self._s.advance()

    def result(self) -> SessionResult:
        res = getattr(self._s, "result", None)
        if callable(res):
            return res()
        if res is None:
            raise StageError("the SecAgg round has not finished")
        surv = tuple(self._s.survivors)
        from fedvault.protocols.secagg import STAGES

        return SessionResult(
            total=np.asarray(self.params.encoder.decode_sum(res, len(surv)), dtype=np.float64), encoded_total=res,
            contributors=surv, dropped={s: list(self._s.dropped.get(s, [])) for s in STAGES},
            refused=self.blame, guarantee=secagg_guarantee(self.params))

    @property
    def blame(self) -> dict[int, list[str]]:
        """Misbehaviour the server attributed to a party (refused messages, bad shares, disputes)."""
        out = {int(i): list(v) for i, v in getattr(self._s, "blame", {}).items()}
        for a, b in getattr(self._s, "disputes", []):
            out.setdefault(int(a), []).append(f"dispute with party {b} (complaint about its share)")
        return out


def secagg_client(params: Any, party: int, identity: Any, identity_keys: Mapping[int, bytes],
                  rng: Callable[[int], bytes], vector: np.ndarray) -> Any:
    from fedvault.protocols.secagg import Client

    c = Client(params, party, identity, identity_keys, rng)
    c.set_input(vector)
    return c


def secagg_server(params: Any, identity_keys: Mapping[int, bytes]) -> SecAggServerRole:
    from fedvault.protocols.secagg import Server

    return SecAggServerRole(Server(params, identity_keys))


_ENCRYPTORS: dict = {}


def _encryptor(public: Any, short_exponent: bool) -> Any:
    """The DJN encryptor of a study key (its base is derived from n; no secret in it; cached)."""
    from fedvault.secagg.paillier import FastEncryptor

    key = (public.public_key.n, short_exponent)
    if key not in _ENCRYPTORS:
        _ENCRYPTORS.clear()
        _ENCRYPTORS[key] = FastEncryptor(public.public_key, short_exponent=short_exponent)
    return _ENCRYPTORS[key]


def paillier_party(params: Any, public: Any, party: int, identity: Any, identity_keys: Mapping[int, bytes],
                   rng: Callable[[int], bytes], vector: np.ndarray | None, key_share: Any, log: Any) -> Any:
    """A hospital's role: its upload (if it contributes) and its threshold key share's answers (if it holds one)."""
    from fedvault.protocols.paillier import PaillierClient, ThresholdParty

    thr = None
    if key_share is not None and public.mode == "threshold":
        thr = ThresholdParty(params, public, party, key_share, identity, identity_keys, rng, log=log)
    if vector is None:
        if thr is None:
            raise StageError(f"party {party} neither contributes nor holds a key share in this round")
        return thr
    return PaillierClient(params, public, party, identity, _encryptor(public, params.short_exponent), rng,
                          x=vector, decryptor=thr)


def paillier_holder(params: Any, public: Any, private_key: Any, identity: Any, identity_keys: Mapping[int, bytes],
                    log: Any) -> Any:
    from fedvault.protocols.paillier import HolderDecryptor

    return HolderDecryptor(params, public, private_key, identity, identity_keys, log=log)


def paillier_server(params: Any, public: Any, identity_keys: Mapping[int, bytes]) -> Any:
    from fedvault.protocols.paillier import PaillierServer

    return PaillierServer(params, public, identity_keys)
