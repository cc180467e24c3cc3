"""The round engine over Flower (FlowerTransport + EngineNode on Flower's public Grid interface, in this
process): the same study gives the same aggregates as the in-process simulation transport in every
aggregation mode (exact for the secure modes: same contributions, same sums), with the engine's client
sampling, refusals, per-site evaluation, federated statistics, early stopping, personalisation and ledgers;
client-level DP over Flower adds the noise."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedvault.fl.config import from_dict  # noqa: E402

BASE = {"data": {"hospitals": 4}, "privacy": {"noise_multiplier": 1.0, "reproducible": True}, "seed": 3,
        "training": {"rounds": 2}}
MODES = {
    "plaintext": {"aggregation": {"mode": "plaintext"}, "training": {"rounds": 2, "client_fraction": 0.8}},
    "secagg_complete": {"aggregation": {"mode": "secagg"}},
    "secagg_sparse": {"aggregation": {"mode": "secagg", "graph": "sparse"}, "data": {"hospitals": 6}},
    "paillier_holder": {"aggregation": {"mode": "paillier", "key_bits": 512}, "data": {"hospitals": 3}},
    "paillier_threshold": {"aggregation": {"mode": "paillier", "keys": "threshold", "key_bits": 512},
                           "data": {"hospitals": 3}},
}


def _cfg(mode: str, **extra):  # noqa: ANN003
    raw = copy.deepcopy(BASE)
    for k, v in {**MODES[mode], **extra}.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(raw)


def _run(cfg, flower: bool):  # noqa: ANN001, ANN202
    from fedvault.fl import simulation
    from fedvault.fl.integrations.flower.local import FlowerInProcess

    used = []

    def transport(parties, **kw):  # noqa: ANN001, ANN003, ANN202
        used.append(FlowerInProcess(parties, **kw))
        return used[-1]

    run = simulation.federate(cfg, baseline=False, transport=transport if flower else None)
    return run, used


@pytest.mark.parametrize("mode", list(MODES))
def test_simulation_and_flower_give_the_same_study(mode):
    cfg = _cfg(mode)
    sim, _ = _run(cfg, False)
    fl, used = _run(cfg, True)
    (flower,) = used  # the study really went through Flower messages
    assert flower.grid.client_seconds > 0 and len(flower.transport.nodes) == len(flower.grid.contexts)
    a, b = sim.history, fl.history
    assert [r.get("participants") for r in a["rounds"]] == [r.get("participants") for r in b["rounds"]]
    wa = np.concatenate([p.detach().numpy().ravel() for p in sim.model.state_dict().values()])
    wb = np.concatenate([p.detach().numpy().ravel() for p in fl.model.state_dict().values()])
    if mode == "plaintext":
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-12)
    else:
        assert np.array_equal(wa, wb)  # the same sums, bit for bit
    assert a["final"]["metrics"] == b["final"]["metrics"]
    assert [r.get("epsilon") for r in a["rounds"]] == [r.get("epsilon") for r in b["rounds"]]
    assert a["final"].get("max_epsilon") == b["final"].get("max_epsilon") is not None


def test_client_level_dp_over_flower_adds_the_noise():
    """Every hospital contributes a zero update through FlowerTransport with client-level DP: the decoded
    aggregate is pure distributed discrete Gaussian noise, with the variance the setup announces
    (n * sigma_client^2 / scale^2 per coordinate), added by the hospitals on their side."""
    import math

    from flwr.clientapp import ClientApp

    from fedvault.fl.engine import RoundSetup, make_mode
    from fedvault.fl.hospital import VectorParticipant, model_digest
    from fedvault.fl.integrations.flower import InProcessGrid
    from fedvault.fl.integrations.flower.transport import EngineNode, FlowerTransport, Party
    from fedvault.fl.simulation import simulation_identities
    from fedvault.secagg import keys as K

    n, dim, z, clip = 4, 3001, 1.0, 1.0
    cfg = from_dict({"data": {"hospitals": n}, "seed": 1, "privacy": {"noise_multiplier": 1.0,
                     "client_noise_multiplier": z}, "aggregation": {"mode": "secagg", "update_clip": clip}})
    ids = {f"h{k}": k + 1 for k in range(n)}
    idents = simulation_identities(cfg, ids)
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    mode = make_mode(cfg, ids)
    params, noise = mode.params("update", 1, tuple(sorted(ids.values())), clip, None, dim, z)
    assert noise is not None
    w = np.zeros(dim - 1)
    setup = RoundSetup(round=1, purpose="update", protocol="secagg", params=params, parties=ids,
                       contributors=frozenset(ids.values()), weights=w, model_sha256=model_digest(w),
                       update_clip=clip, round_seed=mode.round_seed("update", 1), identity_keys=keys,
                       client_noise=noise)
    zero = np.zeros(dim)
    zero[-1] = 1.0
    parties = [VectorParticipant(name, i, lambda r, wts: zero, cfg, i - 1, identity=idents[i])
               for name, i in sorted(ids.items())]
    app = ClientApp()
    EngineNode(lambda ctx: Party(parties[ctx.node_id - 10], keys)).register(app)
    transport = FlowerTransport(InProcessGrid(app, {10 + k: {} for k in range(n)}), list(ids), timeout=5.0)
    out = transport.run_session(setup, mode.server(params, keys))
    assert out.aborted is None and sorted(out.contributors) == sorted(ids)
    total = out.total
    assert total[-1] == n  # the count coordinate is not noised
    noise_part = total[:-1]
    expect = n * noise.sigma_client ** 2 / math.ldexp(1.0, noise.frac_bits) ** 2
    var = float(np.mean(noise_part ** 2))
    # 3000 coordinates: the sample variance is within ~3 * sqrt(2/3000) = 8% of the truth.
    assert abs(var / expect - 1) < 0.15, (var, expect)
    assert abs(float(noise_part.mean())) < 4 * math.sqrt(expect / noise_part.size)


def _session(mode_name: str, tmp_path, fresh: bool):  # noqa: ANN001, ANN202
    """One engine session over Flower with known contributions (no training, secret randomness), every node
    with a vault: ``(outcome, expected sum, join calls)``."""
    import os

    from flwr.clientapp import ClientApp

    from fedvault.fl.engine import RoundSetup, make_mode
    from fedvault.fl.hospital import KeyHolder, VectorParticipant, model_digest
    from fedvault.fl.integrations.flower import InProcessGrid
    from fedvault.fl.integrations.flower.transport import EngineNode, FlowerTransport, Party
    from fedvault.fl.simulation import simulation_identities
    from fedvault.secagg import keys as K

    n, dim = 4, 50
    agg = {"secagg": {"mode": "secagg"}, "paillier_holder": {"mode": "paillier", "key_bits": 512},
           "paillier_threshold": {"mode": "paillier", "keys": "threshold", "key_bits": 512}}[mode_name]
    cfg = from_dict({"data": {"hospitals": n}, "seed": 2, "privacy": {"enabled": False}, "aggregation": agg})
    ids = {f"h{k}": k + 1 for k in range(n)}
    idents = simulation_identities(cfg, {**ids, "key_holder": 0})
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    public, holder_key, shares = None, None, {}
    if agg["mode"] == "paillier":
        from fedvault.protocols.paillier import PaillierParams, setup_keys

        p0 = PaillierParams(session_id=b"setup", round=0, clients=tuple(ids.values()), min_clients=2,
                            keys=cfg.aggregation.keys, key_bits=512, clip=1.0)
        ks = setup_keys(p0, rng=os.urandom, holder=0)
        public, holder_key, shares = ks.public, ks.holder_key, dict(ks.shares)
    mode = make_mode(cfg, ids, public)
    params, _ = mode.params("update", 1, tuple(sorted(ids.values())), 1.0, None, dim, None)
    rng = np.random.default_rng(0)
    vecs = {i: rng.uniform(-1, 1, dim) for i in ids.values()}
    joins = []

    def make(i):  # noqa: ANN001, ANN202
        return lambda r, w: joins.append(i) or vecs[i]

    parties = [VectorParticipant(name, i, make(i), cfg, i - 1, identity=idents[i]) for name, i in sorted(ids.items())]
    for vp in parties:
        vp.key_share = shares.get(vp.party)
    if public is not None and public.mode == "holder":
        parties.append(KeyHolder(0, holder_key, idents[0]))
    w = np.zeros(dim - 1)
    import dataclasses

    from fedvault.fl.engine import bound_session_id

    params = dataclasses.replace(params, session_id=bound_session_id(params.session_id, model_digest(w)))
    all_parties = {**ids, **mode.decryptors()}
    setup = RoundSetup(round=1, purpose="update", protocol=mode.name, params=params, parties=all_parties,
                       contributors=frozenset(ids.values()), weights=w, model_sha256=model_digest(w), update_clip=1.0,
                       round_seed=mode.round_seed("update", 1), identity_keys=keys, public=public)
    app = ClientApp()
    EngineNode(lambda ctx: Party(parties[ctx.node_id - 10], keys, public,
                                 vault=tmp_path / f"vault-{ctx.node_id}")).register(app)
    grid = InProcessGrid(app, {10 + k: {} for k in range(len(parties))}, fresh_process=fresh)
    out = FlowerTransport(grid, list(ids), timeout=5.0).run_session(setup, mode.server(params, keys))
    return out, sum(vecs.values()), joins


@pytest.mark.parametrize("mode", ["secagg", "paillier_holder", "paillier_threshold"])
def test_a_fresh_process_per_message_continues_from_the_saved_role(mode, tmp_path):
    """As on a SuperNode that starts a process per message: every role is restored from the node's vault,
    nobody contributes twice, the sum is the contributions' sum, and no saved role outlives the session."""
    out, expect, joins = _session(mode, tmp_path, fresh=True)
    assert out.aborted is None, (out.aborted, out.refused)
    assert sorted(joins) == [1, 2, 3, 4]
    np.testing.assert_allclose(out.total, expect, atol=1e-3)
    assert not list(tmp_path.rglob("*.state"))


def test_a_node_served_by_two_processes_continues_from_the_newest_saved_role(tmp_path):
    """Flower's simulation engine runs several ClientApp processes and hands a node's messages to any of
    them: a process whose live role is older than the one another process saved since must restore the
    saved one (before: it answered from its stale role, got e.g. ForwardedShares in stage await_keys, and
    the node dropped out of the round; with every node alternating the round aborted)."""
    from flwr.clientapp import ClientApp

    from fedvault.fl.engine import make_mode, open_session
    from fedvault.fl.hospital import VectorParticipant
    from fedvault.fl.integrations.flower import InProcessGrid
    from fedvault.fl.integrations.flower import transport as T
    from fedvault.fl.simulation import simulation_identities
    from fedvault.secagg import keys as K

    n, dim = 4, 50
    cfg = from_dict({"data": {"hospitals": n}, "seed": 2, "privacy": {"enabled": False},
                     "aggregation": {"mode": "secagg"}})
    ids = {f"h{k}": k + 1 for k in range(n)}
    idents = simulation_identities(cfg, ids)
    keys = {i: K.public_bytes(k) for i, k in idents.items()}
    rng = np.random.default_rng(0)
    vecs = {i: rng.uniform(-1, 1, dim) for i in ids.values()}
    parties = [VectorParticipant(name, i, (lambda i: lambda r, w: vecs[i])(i), cfg, i - 1, identity=idents[i])
               for name, i in sorted(ids.items())]
    app = ClientApp()
    T.EngineNode(lambda ctx: T.Party(parties[ctx.node_id - 10], keys, vault=tmp_path / f"vault-{ctx.node_id}")
                 ).register(app)
    saved = vars(T).setdefault("_SAVED", {})  # what this process saved (absent before the fix)
    caches = [({}, {}), ({}, {})]  # two ClientApp processes: their live roles and what each saved
    turn = [0]
    ends = []

    def switch_process(grid, messages):  # noqa: ANN001, ANN202 - every push is served by the other process
        ends.extend(m for m in messages if str(m.content.config_records[T.RECORD]["stage"]) == "end")
        mine = caches[turn[0] % 2]
        mine[0].clear(), mine[0].update(T._ROLES), mine[1].clear(), mine[1].update(saved)
        turn[0] += 1
        other = caches[turn[0] % 2]
        T._ROLES.clear(), T._ROLES.update(other[0]), saved.clear(), saved.update(other[1])

    grid = InProcessGrid(app, {10 + k: {} for k in range(n)}, on_push=switch_process)
    transport = T.FlowerTransport(grid, list(ids), timeout=5.0, poll_interval=0.01)
    setup, server = open_session(cfg, make_mode(cfg, ids), 1, "update", list(ids), weights=np.zeros(dim - 1),
                                 clip=1.0, identity_keys=keys)
    try:
        out = transport.run_session(setup, server)
    finally:
        T._ROLES.clear(), saved.clear()
    assert out.aborted is None and not out.dropped, (out.aborted, out.dropped)
    assert sorted(out.contributors) == sorted(ids)
    np.testing.assert_allclose(out.total, sum(vecs.values()), atol=1e-6)
    assert turn[0] > 4  # the session's steps really alternated between the two processes
    # every node's role finished and was forgotten on its side: no extra "end" exchange, no saved role left
    assert not ends and not list(tmp_path.rglob("*.state"))
