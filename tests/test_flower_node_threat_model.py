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


# -- the default is the node's OWN threat model, never the server's claim (issue 12, Flower Mod path) ---------
def test_without_a_declared_model_the_node_uses_the_protocol_default_not_the_servers_claim():
    # n = 7, complete graph: the protocol default is C = 2 (t >= 5); a server claiming C = 0 proposes t = 4,
    # with which the split view works with two colluders. Before: the node without a model took the claim.
    weak = _params(threat_model=ThreatModel(colluders=0))
    assert weak.t == 4
    with pytest.raises(ProtocolError, match="colluding with up to 2 of 7"):
        check_policy(weak, _node(), 3)
    check_policy(_params(), _node(), 3)  # the server's default parameters: accepted


def test_a_safe_threshold_is_accepted_whatever_the_claim():
    # n = 5: t = 3 whether derived from C = 0 or C = 1 (2t > 4 + 1); the node judges the numbers, not the claim
    clients = (1, 2, 3, 4, 5)
    p = SecAggParams(session_id=b"s" * 16, round=1, clients=clients, threat_model=ThreatModel(colluders=0))
    node = SimpleNamespace(client=1, registry=SimpleNamespace(members=clients))
    assert p.t == 3
    check_policy(p, node, 3)  # the default adversary at n = 5 is C = 1: safe
    with pytest.raises(ProtocolError, match="colluding with up to 2"):
        check_policy(p, node, 3, ThreatModel(colluders=2))


def test_sparse_proposal_from_a_zero_colluder_claim_is_refused_by_default():
    clients = tuple(range(1, 41))
    node = SimpleNamespace(client=1, registry=SimpleNamespace(members=clients))
    weak = SecAggParams(session_id=b"s" * 16, round=1, clients=clients, graph="sparse",
                        threat_model=ThreatModel(colluders=0))
    strong = SecAggParams(session_id=b"s" * 16, round=1, clients=clients, graph="sparse")
    assert weak.guarantee().graph == "sparse" and weak.t < strong.t
    with pytest.raises(ProtocolError, match="not safe against this node's threat model"):
        check_policy(weak, node, 3)
    check_policy(strong, node, 3)
    # "sparse" on 4 hospitals is the complete graph with the sparse default (5 %: no colluder, t = 2): a node
    # that declares nothing judges it as the complete graph it is (C = 1, t >= 3)
    four = (1, 2, 3, 4)
    small = SecAggParams(session_id=b"s" * 16, round=1, clients=four, graph="sparse")
    assert small.guarantee().graph == "complete" and small.t == 2
    with pytest.raises(ProtocolError, match="colluding with up to 1 of 4"):
        check_policy(small, SimpleNamespace(client=1, registry=SimpleNamespace(members=four)), 3)


def _ctx(node_config):
    return SimpleNamespace(node_config=node_config, run_config={})


def test_node_threat_model_comes_from_the_nodes_own_config(tmp_path):
    from fedvault.fl.integrations.flower import NodeSetupError
    from fedvault.fl.integrations.flower.mod import node_min_cohort, node_threat_model

    assert node_threat_model(_ctx({})) == ThreatModel()
    assert node_threat_model(_ctx({"fedvault-colluders": 0})) == ThreatModel(colluders=0)
    assert node_threat_model(_ctx({"fedvault-colluder-fraction": 0.2, "fedvault-security-bits": "60"})) == \
        ThreatModel(colluder_fraction=0.2, security_bits=60)
    cfg = tmp_path / "fedvault.toml"
    cfg.write_text("[training]\nmin_clients = 5\n[threat_model]\ncolluders = 2\nsecurity_bits = 50\n")
    assert node_threat_model(_ctx({"fedvault-config": str(cfg)})) == ThreatModel(colluders=2, security_bits=50)
    assert node_threat_model(_ctx({"fedvault-config": str(cfg), "fedvault-colluders": 3})) == \
        ThreatModel(colluders=3, security_bits=50)  # a single key overrides the file's
    assert node_min_cohort(_ctx({})) == 3 and node_min_cohort(_ctx({"fedvault-config": str(cfg)})) == 5
    for bad in ({"fedvault-colluders": "two"}, {"fedvault-colluders": -1}, {"fedvault-security-bits": 8},
                {"fedvault-colluders": 1, "fedvault-colluder-fraction": 0.1},
                {"fedvault-config": str(tmp_path / "missing.toml")}):
        with pytest.raises(NodeSetupError, match="fedvault-"):
            node_threat_model(_ctx(bad))


def test_mod_nodes_refuse_a_weak_server_before_training_unless_their_own_config_says_so(tmp_path):
    """End to end through FedVaultMod on an InProcessGrid: a server deriving its threshold from "0 colluders"
    (n = 4, t = 2) meets nodes that declare nothing (protocol default C = 1: t >= 3). Before, every node took
    the claim and trained; now every node refuses at advertise and nobody trains. A node whose own node
    config declares 0 colluders (a demo that wants dropout tolerance at n = 4) takes part."""
    from fedvault.fl.integrations.flower import Misconfigured, SecAggConfig, secure_round
    from flwr.app import Array, ArrayRecord

    import numpy as np

    from tests._flower_helpers import vector_federation

    weights = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    server = SecAggConfig(clip=20.0, min_clients=3, threat_model=ThreatModel(colluders=0))
    grid, reg, sites = vector_federation(tmp_path / "default", 4, 5)
    with pytest.raises(Misconfigured, match="not safe against this node's threat model"):
        secure_round(grid, reg, server, round=1, weights=weights)
    assert all(not s.trained for s in sites.values())

    grid, reg, sites = vector_federation(tmp_path / "declared", 4, 5, node_config={"fedvault-colluders": 0})
    out = secure_round(grid, reg, server, round=1, weights=weights)
    assert out.survivors == [f"hospital_{k}" for k in range(4)]
    np.testing.assert_allclose(out.total, sum(s.vector for s in sites.values()), atol=1e-4)
