"""Node-local material of the Flower plug-in: vault refusals, policy refusals, wire mapping."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedvault.fl.integrations.flower import NodeDir, NodeSetupError, PolicyError, provision  # noqa: E402
from fedvault.fl.integrations.flower import wire  # noqa: E402
from fedvault.fl.integrations.flower.mod import check_policy  # noqa: E402
from fedvault.protocols.secagg import SecAggParams  # noqa: E402


@pytest.fixture
def node(tmp_path):
    provision(tmp_path, [f"hospital_{k}" for k in range(5)])
    return NodeDir(tmp_path / "hospital_0")


def test_round_secret_is_private_single_use_and_burnt(node):
    seed = node.vault.create(b"t" * 16, 1)
    path = next(node.vault.dir.glob("*.seed"))
    assert os.stat(path).st_mode & 0o077 == 0
    assert node.vault.get(b"t" * 16, 1) == seed
    with pytest.raises(NodeSetupError, match="already started"):
        node.vault.create(b"t" * 16, 1)  # a restarted round would reuse the keys
    node.vault.burn(b"t" * 16, 1)
    with pytest.raises(NodeSetupError, match="no secret"):
        node.vault.get(b"t" * 16, 1)


def test_identity_matches_registry_and_world_readable_dir_is_refused(node):
    assert node.identity() is not None and node.client == 1
    os.chmod(node.path, 0o755)
    with pytest.raises(NodeSetupError, match="chmod 700"):
        NodeDir(node.path)


def test_policy_refuses_small_cohorts_weak_thresholds_and_strangers(node):
    check_policy(SecAggParams(b"s", 1, (1, 2, 3, 4), dim=3), node, 3)
    with pytest.raises(PolicyError, match="minimum"):
        check_policy(SecAggParams(b"s", 1, (1, 2), dim=3), node, 3)
    with pytest.raises(PolicyError, match="majority"):  # (such params are refused unless named insecure)
        check_policy(SecAggParams(b"s", 1, (1, 2, 3, 4, 5), threshold=2, dim=3, insecure_test_only=True), node, 3)
    with pytest.raises(PolicyError, match="registry"):
        check_policy(SecAggParams(b"s", 1, (1, 2, 3, 99), dim=3), node, 3)
    with pytest.raises(PolicyError, match="not in the proposed cohort"):
        check_policy(SecAggParams(b"s", 1, (2, 3, 4), dim=3), node, 3)


def test_params_and_arrays_survive_the_flower_records():
    from flwr.app import Array, ArrayRecord

    model, roster = bytes(32), "ab" * 32
    p = SecAggParams(wire.bound_session(b"session", model, roster), 7, (1, 2, 3, 4), graph="sparse", bits=32,
                     clip=2560.0, dim=63)
    rec = wire.request("advertise", 7, fields=wire.params_record(p, b"session", model, roster))[wire.RECORD]
    q = wire.params_from(rec)
    assert q.session_tag == p.session_tag and (q.t, q.clients, q.dim, q.round) == (p.t, p.clients, p.dim, p.round)
    # Another model (or roster) gives another session tag: signatures over one do not verify over the other.
    rec["model"] = b"\x01" * 32
    assert wire.params_from(rec).session_tag != p.session_tag
    arrays = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3)), "b": Array(np.ones(2, np.float32))})
    v = wire.flatten(arrays)
    assert v.tolist() == [0, 1, 2, 3, 4, 5, 1, 1]
    back = wire.unflatten(v + 1, arrays)
    assert back["w"].numpy().shape == (2, 3) and back["b"].numpy().tolist() == [2, 2]


def test_flower_release_under_test():
    """Run by tests/test_flower_versions.py with the other supported flwr release in front."""
    import flwr

    expect = os.environ.get("FEDVAULT_EXPECT_FLWR")
    assert expect is None or flwr.__version__ == expect


def test_saved_state_round_trips_keys_and_refuses_foreign_classes(tmp_path):
    import pickle

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from fedvault.fl.integrations.flower import snapshot

    k = X25519PrivateKey.generate()
    r = snapshot.StreamRandom(b"\1" * 32, b"t")
    first = r(10)
    back = snapshot.loads(snapshot.dumps({"k": k, "r": r}))
    assert back["k"].public_key().public_bytes_raw() == k.public_key().public_bytes_raw()
    assert back["r"](5) == r(5) and first  # the restored source continues the same stream
    path = tmp_path / "x.state"
    snapshot.save(path, {"a": 1})
    assert os.stat(path).st_mode & 0o077 == 0 and snapshot.load(path) == {"a": 1}
    path.write_bytes(pickle.dumps(os.system))  # a tampered file naming an arbitrary callable
    with pytest.raises(snapshot.SnapshotError, match="may not name"):
        snapshot.load(path)
