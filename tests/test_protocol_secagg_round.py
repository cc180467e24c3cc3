"""End-to-end SecAgg/SecAgg+ rounds: exact sums of exactly the survivors, dropouts, aborts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedvault.protocols.errors import AbortError, InputError
from fedvault.protocols.secagg import STAGES, SecAggParams, simulate_round
from fedvault.protocols.secagg.threat import ThreatModel

NO_COLLUDERS = ThreatModel(colluders=0)
from fedvault.secagg.errors import ParameterError
from fedvault.secagg.masking import plain_sum


def _inputs(params: SecAggParams, dim: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only; the protocol never uses numpy's RNG
    return {i: rng.uniform(-params.clip, params.clip, dim) for i in params.clients}


def _expected(params: SecAggParams, inputs, survivors) -> np.ndarray:
    enc = params.encoder
    return plain_sum([enc.encode(inputs[i]) for i in survivors], len(inputs[survivors[0]]), params.bits)


@pytest.mark.parametrize("graph", ["complete", "sparse"])
@pytest.mark.parametrize("bits", [20, 32, 64])
def test_no_dropout_sum_is_exact(graph, bits):
    params = SecAggParams(b"session-1", 3, tuple(range(1, 16)), graph=graph, bits=bits, clip=2.0)
    x = _inputs(params, 50)
    res = simulate_round(params, x, seed=b"s" * 32)
    assert res.survivors == params.clients
    assert np.array_equal(res.encoded_total, _expected(params, x, res.survivors))
    float_err = 16 * np.finfo(float).eps * 15 * params.clip  # the float64 reference sum's own rounding
    assert np.max(np.abs(res.total - sum(x.values()))) <= params.encoder.error_bound(15) + float_err
    assert set(res.upload_bytes) == set(params.clients) and min(res.upload_bytes.values()) > 50 * (bits // 8)
    assert res.server_seconds > 0 and res.max_client_seconds > 0


def test_sparse_graph_uses_fewer_neighbours_and_less_upload():
    ids = tuple(range(24))
    sparse = SecAggParams(b"s", 0, ids, graph="sparse")
    complete = SecAggParams(b"s", 0, ids, graph="complete")
    assert sparse.neighbourhood.max_degree() < 23
    x = _inputs(sparse, 4)
    rs, rc = simulate_round(sparse, x), simulate_round(complete, x)
    assert np.array_equal(rs.encoded_total, rc.encoded_total)
    assert max(rs.upload_bytes.values()) < max(rc.upload_bytes.values())


def test_dropouts_at_every_stage_are_recovered():
    params = SecAggParams(b"session-2", 0, tuple(range(16)), threshold=8, threat_model=NO_COLLUDERS)
    x = _inputs(params, 30)
    drop = {"advertise": [0], "share": [1], "masked_input": [2, 3], "consistency": [4], "unmask": [5]}
    res = simulate_round(params, x, drop=drop)
    assert res.survivors == tuple(range(4, 16))  # 4 and 5 sent masked inputs before vanishing
    assert res.dropped == {"advertise": [0], "reveal": [], "share": [1], "masked_input": [2, 3], "consistency": [4],
                           "unmask": [5]}
    assert np.array_equal(res.encoded_total, _expected(params, x, res.survivors))


def test_encoded_inputs_allow_integer_noise_first():
    params = SecAggParams(b"session-3", 0, (1, 2, 3, 4, 5), bits=32)
    x = _inputs(params, 10)
    enc = params.encoder
    noisy = {i: (enc.encode(v) + np.uint32(7)) for i, v in x.items()}  # e.g. integer DP noise
    res = simulate_round(params, noisy)
    assert np.array_equal(res.encoded_total, plain_sum(noisy.values(), 10, 32))


def test_same_seed_replays_byte_for_byte():
    params = SecAggParams(b"session-4", 9, (3, 5, 8, 13), threshold=2, threat_model=NO_COLLUDERS)
    x = _inputs(params, 6)
    t1, t2, t3 = [], [], []
    simulate_round(params, x, seed=b"a" * 32, transcript=t1, drop={"masked_input": [5]})
    simulate_round(params, x, seed=b"a" * 32, transcript=t2, drop={"masked_input": [5]})
    simulate_round(params, x, seed=b"b" * 32, transcript=t3, drop={"masked_input": [5]})
    assert t1 == t2
    assert t1 != t3


def test_abort_when_threshold_cannot_be_met():
    params = SecAggParams(b"session-5", 0, tuple(range(6)), threshold=4)
    x = _inputs(params, 5)
    with pytest.raises(AbortError):
        simulate_round(params, x, drop={"masked_input": [0, 1, 2]})  # 3 survivors < t = 4
    with pytest.raises(AbortError):
        simulate_round(params, x, drop={"unmask": [0, 1, 2]})  # too few shares to unmask
    with pytest.raises(AbortError):
        simulate_round(params, x, drop={"advertise": [0, 1, 2, 3]})


def test_bad_inputs_and_parameters():
    params = SecAggParams(b"session-6", 0, (1, 2, 3))
    with pytest.raises(InputError):
        simulate_round(params, {1: np.zeros(3), 2: np.zeros(3), 3: np.array([0, np.nan, 0])})
    with pytest.raises(InputError):
        simulate_round(params, {1: np.zeros(3), 2: np.zeros(3), 3: np.array([0, 1.5, 0])})
    with pytest.raises(InputError):
        simulate_round(params, {1: np.zeros(3), 2: np.zeros(3), 3: np.zeros(4)})
    with pytest.raises(ParameterError):
        simulate_round(params, {1: np.zeros(3), 2: np.zeros(3), 3: np.zeros(3)}, drop={"lunch": [1]})
    with pytest.raises(ParameterError):
        SecAggParams(b"s", 0, (1, 2, 3), threshold=3)  # above the neighbourhood size
    with pytest.raises(ParameterError):
        SecAggParams(b"s", 0, (1, 1, 3))
    with pytest.raises(ParameterError):
        SecAggParams(b"s", 0, (1, 2, 3), graph="ring")


@st.composite
def dropout_case(draw):
    n = draw(st.integers(3, 14))
    graph = draw(st.sampled_from(["complete", "sparse"]))
    ids = tuple(sorted(draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n, unique=True))))
    # Liveness of the state machines for every threshold, secure or not (security is tested elsewhere).
    params0 = SecAggParams(b"prop", 1, ids, graph=graph, bits=draw(st.sampled_from([24, 32, 40])), threshold=1,
                           insecure_test_only=True)
    t = draw(st.integers(1, params0.neighbourhood.min_degree()))
    params = SecAggParams(b"prop", 1, ids, threshold=t, graph=graph, bits=params0.bits, insecure_test_only=True)
    when = draw(st.lists(st.sampled_from((None,) * 10 + STAGES), min_size=n, max_size=n))
    drop: dict[str, list[int]] = {}
    for i, s in zip(ids, when):
        if s is not None:
            drop.setdefault(s, []).append(i)
    return params, drop


@settings(max_examples=60, deadline=None)
@given(dropout_case())
def test_any_dropout_pattern_gives_exact_survivor_sum_or_clean_abort(case):
    params, drop = case
    x = _inputs(params, 4, seed=len(drop))
    lost_before = {i for s in ("advertise", "share", "masked_input") for i in drop.get(s, [])}
    finishers = set(params.clients) - {i for v in drop.values() for i in v}
    listed_ids = set(params.clients) - set(drop.get("advertise", []))
    nbrs = {i: listed_ids - {i} for i in params.clients}  # complete graph over the list
    t = params.t
    # A member of the list that does not open its graph commitment stops the round; so does
    # a list shorter than the threat model allows.
    listed = len(params.clients) - len(drop.get("advertise", []))
    enough = not drop.get("reveal") and listed >= params.min_members and len(finishers) >= max(2, t) and all(
        len(nbrs[i] & finishers) >= t for i in params.clients if i not in drop.get("advertise", [])
    )
    try:
        res = simulate_round(params, x, drop=drop)
    except AbortError:
        event("aborted")
        assert not enough or params.graph == "sparse", "aborted although every client kept t live neighbours"
        return
    event("completed" + (" with dropouts" if drop else ""))
    assert set(res.survivors) <= set(params.clients) - lost_before
    if enough and params.graph == "complete":  # the sparse graph is only known once the round draws it
        assert set(res.survivors) == set(params.clients) - lost_before
    assert np.array_equal(res.encoded_total, _expected(params, x, res.survivors))


def test_server_sees_uniform_masked_vectors_of_zero_inputs():
    """On the wire, a client's masked all-zero vector passes a chi-square test on bytes; the sum is 0."""
    from scipy.stats import chisquare

    from fedvault.protocols.secagg.messages import MessageType, decode

    params = SecAggParams(b"uniform", 0, (1, 2, 3, 4), threshold=2, threat_model=NO_COLLUDERS)
    transcript: list = []
    res = simulate_round(params, {i: np.zeros(4096) for i in params.clients}, transcript=transcript)
    vectors = [decode(d).vector for way, _, d in transcript if way == "up" and d[5] == MessageType.MASKED_INPUT]
    assert len(vectors) == 4
    for v in vectors:
        assert chisquare(np.bincount(v.view(np.uint8), minlength=256)).pvalue > 1e-4
    assert not np.any(res.encoded_total) and not np.any(res.total)
