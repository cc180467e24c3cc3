"""Protocol guarantees of the Flower transport, with torch-free hospitals on an InProcessGrid:
exact sums, the model bound to the round (issue 12 item 6), no restart of a (session, round), stale secrets
swept, misconfiguration refused at enrolment."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord  # noqa: E402

from fedvault.fl.integrations.flower import RoundAborted, SecAggConfig, secure_round, wire  # noqa: E402
from tests._flower_helpers import vector_federation  # noqa: E402

DIM = 9


def _weights(v: float = 0.0) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(DIM - 1, v, np.float32))})


def test_exact_sum_and_node_killed_mid_round(tmp_path):
    grid, reg, sites = vector_federation(tmp_path, 5, DIM)

    def kill_at_masked_input(g, msgs):  # noqa: ANN001, ANN202
        if msgs and wire.RECORD in msgs[0].content.config_records:
            if msgs[0].content.config_records[wire.RECORD]["stage"] == "masked_input":
                g.kill(12)  # hospital_2 vanishes after sharing its keys

    grid.on_push = kill_at_masked_input
    out = secure_round(grid, reg, SecAggConfig(clip=20.0, min_clients=3, stage_timeout=1.0), round=1, weights=_weights())
    assert out.survivors == ["hospital_0", "hospital_1", "hospital_3", "hospital_4"]
    assert out.dropped["masked_input"] == ["hospital_2"]
    expect = sum(sites[k].vector for k in (0, 1, 3, 4))
    assert out.total[-1] == expect[-1]
    np.testing.assert_allclose(out.total, expect, atol=1e-4)


def test_a_round_cannot_be_restarted_and_stale_secrets_are_swept(tmp_path):
    grid, reg, sites = vector_federation(tmp_path, 3, DIM)
    stale = tmp_path / "hospital_0" / "rounds" / ("ab" * 16 + "-7.seed")
    stale.write_bytes(b"\0" * 32)  # left by a crash
    cfg = SecAggConfig(clip=20.0, min_clients=3)
    secure_round(grid, reg, cfg, round=1, weights=_weights(), session_id=b"s" * 16)
    assert not stale.exists()
    assert all(s.trained == [1] for s in sites.values())
    # The server starts the same (session, round) again, even with another model: every hospital refuses
    # before training, so nobody is charged twice and no second transcript of the round exists.
    with pytest.raises(RoundAborted):
        secure_round(grid, reg, cfg, round=1, weights=_weights(0.5), session_id=b"s" * 16)
    assert all(s.trained == [1] for s in sites.values())
    # A new round of the session is fine.
    secure_round(grid, reg, cfg, round=2, weights=_weights(), session_id=b"s" * 16)
    assert all(s.trained == [1, 2] for s in sites.values())


def test_misconfigured_clip_is_refused_at_enrolment(tmp_path):
    from fedvault.fl.integrations.flower import Misconfigured

    grid, reg, sites = vector_federation(tmp_path, 3, DIM)
    with pytest.raises(Misconfigured, match="clip") as e:
        secure_round(grid, reg, SecAggConfig(clip=1.0, min_clients=3), round=1, weights=_weights())
    assert "reach" not in str(e.value)  # the exact bound (it reveals the record count) stays on the hospital
    assert all(not s.trained for s in sites.values())
    with pytest.raises(Misconfigured, match="model has"):
        secure_round(grid, reg, SecAggConfig(clip=20.0, min_clients=3), round=1,
                     weights=ArrayRecord({"w": Array(np.zeros(3, np.float32))}))


def test_hospitals_shown_different_models_refuse_each_others_keys(tmp_path):
    """A server that commits hospital 3 to another model than hospitals 1 and 2 (to learn something from the
    difference) cannot make them accept one another: the model hash is inside every signed session tag."""
    from fedvault.protocols.errors import ProtocolError
    from fedvault.protocols.secagg import Client
    from fedvault.protocols.secagg.messages import SERVER_ID, KeyBroadcast, KeyEntry
    from fedvault.secagg.prg import DeterministicRandom

    from fedvault.fl.integrations.flower import NodeDir

    from tests._flower_helpers import vector_federation as _vf

    _vf(tmp_path, 3, DIM)
    nodes = {k + 1: NodeDir(tmp_path / f"hospital_{k}") for k in range(3)}
    roster = nodes[1].registry.fingerprint()
    m1, m2 = wire.model_hash(_weights(0.0)), wire.model_hash(_weights(1.0))
    from fedvault.protocols.secagg import SecAggParams

    honest = SecAggParams(wire.bound_session(b"s" * 16, m1, roster), 1, (1, 2, 3), dim=DIM, clip=20.0)
    from flwr.app import ConfigRecord

    params = {c: wire.params_from(ConfigRecord(wire.params_record(honest, b"s" * 16, m1, roster)
                                               | {"model": m1 if c < 3 else m2})) for c in (1, 2, 3)}
    assert params[1].session_tag == honest.session_tag != params[3].session_tag
    clients = {c: Client(params[c], c, nodes[c].identity(), nodes[c].registry.identity_keys(),
                         DeterministicRandom(bytes([c]) * 32, b"t")) for c in (1, 2, 3)}
    ads = {c: clients[c].advertise() for c in (1, 2, 3)}
    # The malicious server relays every advertisement to hospital 1 under hospital 1's session tag.
    from fedvault.protocols.secagg.messages import Cohort, CommitEntry, RevealEntry

    from fedvault.secagg import keys as _K

    server_pk = _K.public_bytes(_K.generate_x25519(DeterministicRandom(b"k" * 32)))
    clients[1].receive(Cohort(params[1].session_tag, 1, SERVER_ID, server_pk,
                              tuple(CommitEntry(c, ads[c].graph_commit) for c in (1, 2, 3))).encode())
    bc = KeyBroadcast(params[1].session_tag, 1, SERVER_ID, tuple(
        KeyEntry(c, ads[c].channel_pk, ads[c].mask_pk, ads[c].graph_commit, ads[c].signature) for c in (1, 2, 3)),
        tuple(RevealEntry(c, clients[c]._rho) for c in (1, 2, 3)))
    with pytest.raises(ProtocolError, match="signed|commitment"):  # (graph commitments are session-bound too)
        clients[1].receive(bc.encode())


def test_a_fresh_process_per_message_restores_the_saved_state(tmp_path, monkeypatch):
    """As on a SuperNode that starts a ClientApp process per message: the live state machine is gone before
    every message; the node restores the one it saved (never replays: one state machine per hospital is ever
    built), the sum is exact, and no saved state or secret outlives the round."""
    from fedvault.fl.integrations.flower import mod

    built = []
    real = mod.FedVaultMod._client
    monkeypatch.setattr(mod.FedVaultMod, "_client", lambda self, *a: built.append(1) or real(self, *a))
    grid, reg, sites = vector_federation(tmp_path, 4, DIM, fresh_process=True)
    out = secure_round(grid, reg, SecAggConfig(clip=20.0, min_clients=3), round=1, weights=_weights())
    assert len(built) == 4
    expect = sum(s.vector for s in sites.values())
    np.testing.assert_allclose(out.total, expect, atol=1e-4)
    left = [p for k in range(4) for g in ("*.seed", "*.state*") for p in (tmp_path / f"hospital_{k}" / "rounds").glob(g)]
    assert not left
