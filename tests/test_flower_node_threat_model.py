"""A Flower node judges the server's SecAgg parameters against its OWN threat model
(issue 12, attack 2 over the Flower Mod path): the parameters arrive from the server, so
their threat model is only the server's claim."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

from fedvault.fl.integrations.flower.mod import check_policy  # noqa: E402
from fedvault.protocols.errors import ProtocolError  # noqa: E402
from fedvault.protocols.secagg import SecAggParams  # noqa: E402
from fedvault.protocols.secagg.threat import ThreatModel  # noqa: E402

CLIENTS = tuple(range(1, 8))


def _node(client: int = 1):
    return SimpleNamespace(client=client, registry=SimpleNamespace(members=CLIENTS))


def _params(**kw):
    return SecAggParams(session_id=b"s" * 16, round=1, clients=CLIENTS, graph="complete", **kw)


def test_server_claiming_fewer_colluders_is_refused():
    weak = _params(threat_model=ThreatModel(colluders=0))  # lower threshold: split view with a colluder
    strong = _params(threat_model=ThreatModel(colluders=2))
    assert weak.t < strong.t
    with pytest.raises(ProtocolError, match="colluding"):
        check_policy(weak, _node(), 3, ThreatModel(colluders=2))
    check_policy(strong, _node(), 3, ThreatModel(colluders=2))  # what the node asks for: accepted


def test_node_with_the_default_adversary_refuses_a_zero_colluder_claim():
    with pytest.raises(ProtocolError, match="colluding"):
        check_policy(_params(threat_model=ThreatModel(colluders=0)), _node(), 3, ThreatModel())
    check_policy(_params(), _node(), 3, ThreatModel())  # the protocol's default adversary


def test_insecure_test_only_parameters_are_refused():
    p = _params(threshold=4, insecure_test_only=True)  # a majority of 6, but below what C = 2 needs
    with pytest.raises(ProtocolError, match="insecure"):
        check_policy(p, _node(), 3)
