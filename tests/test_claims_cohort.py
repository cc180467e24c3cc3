"""SPEC §1.1 (sparse graph): "the list is at least n − D long; a shorter one is refused, since it
would concentrate the colluders" — the hypergeometric bound behind the parameters assumes the
server keeps at least ``n − D`` hospitals in the round's list ``L``.

Attack: a malicious server keeps the victim and a few hospitals of its choice in the COHORT it sends
(commitments are genuine), so the victim's neighbourhood is drawn from a small, colluder-rich list.
An honest client must refuse any list shorter than ``min_members = max(t + 1, n − D)``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedvault.protocols.errors import ThresholdError
from fedvault.protocols.secagg import SecAggParams, ThreatModel
from fedvault.protocols.secagg.messages import Cohort, decode

from _secagg_attack import Harness


def _cohorts(params: SecAggParams):
    h = Harness(params)
    for c in h.clients.values():
        for m in c.start():
            h.server.receive(m.encode())
    out = h.server.advance()
    return h, {i: decode(m.encode()) for i, m in out.items()}


@pytest.mark.parametrize("graph", ["sparse", "complete"])
def test_a_short_list_is_refused_by_an_honest_hospital(graph):
    n = 20
    params = SecAggParams(b"claims-cohort", 1, tuple(range(1, n + 1)), graph=graph,
                          threat_model=ThreatModel(colluders=2, dropouts=2))
    h, cohorts = _cohorts(params)
    victim = 7
    honest = cohorts[victim]
    assert isinstance(honest, Cohort) and len(honest.entries) == n
    need = h.params.min_members
    # sparse: n − D (the bound's population); complete: t + 1 (C_v ≤ C whatever the list)
    assert need == (max(h.params.t + 1, n - 2) if graph == "sparse" else h.params.t + 1)
    short = replace(honest, entries=tuple(e for e in honest.entries if e.client <= need - 1 or e.client == victim)[:need - 1])
    assert victim in [e.client for e in short.entries] and len(short.entries) == need - 1
    with pytest.raises(ThresholdError, match="concentrates colluders"):
        h.clients[victim].receive(short.encode())
    # The smallest list the threat model allows is accepted (the victim opens its commitment).
    h2, cohorts2 = _cohorts(params)
    ok = cohorts2[victim]
    exact = replace(ok, entries=tuple(e for e in ok.entries if e.client <= need or e.client == victim)[:need])
    assert len(exact.entries) == need and h2.clients[victim].receive(exact.encode())


def _broadcasts(params: SecAggParams):
    h, cohorts = _cohorts(params)
    for i, m in cohorts.items():
        for up in h.clients[i].receive(m.encode()):
            h.server.receive(up.encode())
    out = h.server.advance()
    return h, {i: decode(m.encode()) for i, m in out.items()}


@pytest.mark.parametrize("tamper", ["drop_one_opening", "swap_one_opening"])
def test_a_server_cannot_choose_the_graph_by_withholding_or_changing_an_opening(tamper):
    """SPEC §1.2: "the graph seed is SHA-256 over every opening in L"; a member that does not open
    aborts the round ("dropping it after seeing the others' openings would let the server choose
    among graphs"). The honest hospital derives the seed itself and refuses openings that do not
    cover exactly L, or do not open their commitments."""
    from fedvault.protocols.errors import InconsistentError, TamperedError

    n = 20
    params = SecAggParams(b"claims-graph", 1, tuple(range(1, n + 1)), graph="sparse",
                          threat_model=ThreatModel(colluders=2, dropouts=2))
    h, casts = _broadcasts(params)
    victim, other = 7, 12
    honest = casts[victim]
    assert len(honest.reveals) == n
    if tamper == "drop_one_opening":
        forged = replace(honest, reveals=tuple(r for r in honest.reveals if r.client != other))
        err, why = InconsistentError, "open exactly the commitments"
    else:
        forged = replace(honest, reveals=tuple(r._replace(value=bytes(32)) if r.client == other else r
                                               for r in honest.reveals))
        err, why = TamperedError, "does not open its commitment"
    with pytest.raises(err, match=why):
        h.clients[victim].receive(forged.encode())
