"""Hypothesis properties of the consistency rule (SPEC 1.2), on the real state machines:
over random cohorts, graphs, declared colluders, dropouts and split views, a malicious
server never obtains t self-mask-seed shares and t mask-key shares of one hospital."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedvault.protocols.secagg import SecAggParams, ThreatModel

from _secagg_attack import Harness, graph_of, split_view_attack


@st.composite
def split_case(draw):
    n = draw(st.integers(5, 12))
    graph = draw(st.sampled_from(["complete", "sparse"]))
    c = draw(st.integers(0, (n - 2) // 2))
    try:
        params = SecAggParams(b"prop-split", 1, tuple(range(n)), graph=graph,
                              threat_model=ThreatModel(colluders=c, dropouts=0))
    except ValueError:
        params = SecAggParams(b"prop-split", 1, tuple(range(n)), graph=graph, threat_model=ThreatModel(colluders=0,
                                                                                                       dropouts=0))
        c = 0
    victim = draw(st.integers(0, n - 1))
    others = [i for i in range(n) if i != victim]
    colluders = set(draw(st.lists(st.sampled_from(others), max_size=c, unique=True)))
    honest = [i for i in others if i not in colluders]
    sides = draw(st.lists(st.sampled_from("AB-"), min_size=len(honest), max_size=len(honest)))
    A = {h for h, s in zip(honest, sides) if s == "A"}
    B = {h for h, s in zip(honest, sides) if s == "B"}  # "-": shown nothing (dropped by the server)
    return params, victim, colluders, (A, B)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_case())
def test_no_split_view_gets_both_shares_of_a_hospital(case):
    params, victim, colluders, partition = case
    h = Harness(params)
    b, s, recovered = split_view_attack(h, victim, colluders, partition=partition)
    t = h.params.t
    assert recovered is None
    assert not (len(b) >= t and len(s) >= t), (len(b), len(s), t, sorted(colluders))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(5, 10), st.sampled_from(["complete", "sparse"]), st.integers(0, 9))
def test_an_honest_decision_is_backed(n, graph, victim):
    """Liveness of the rule: with everyone shown the same survivor set, every neighbour reveals."""
    params = SecAggParams(b"prop-live", 1, tuple(range(n)), graph=graph, threat_model=ThreatModel(colluders=0,
                                                                                                  dropouts=0))
    h = Harness(params)
    victim %= n
    everyone = set(range(n)) - {victim}
    b, s, _ = split_view_attack(h, victim, set(), partition=(everyone, set()))
    assert len(b) == len(graph_of(h)[victim]) >= h.params.t and not s
