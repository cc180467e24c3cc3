"""Red team (residual, owner F): in the Flower example app a hospital's DP randomness and
privacy targets come from ``context.run_config``, which the *server operator* sets
(``flwr run --run-config 'dp-seed=0 target-epsilon=1000'``).  A malicious server can so make
every deployed hospital's DP-SGD noise and Poisson sampling replayable (seed
``0 * 1_000_003 + index``) — the attack of issue 13 item 1 — or raise its ε target.
``scripts/flower_deploy.py`` even deploys with ``dp_seed = 0`` by default.

The fix is not small: hospital-side privacy settings must come from the node's own
configuration (``node_config`` / the node directory), and the deployment test relies on
replaying the noise.  Fixed: the example reads them from the node's own config
(``fedvault-dp-seed`` ...); these tests now guard it.
"""

from __future__ import annotations

import pytest

from _flower_helpers import app_task


def test_a_deployed_hospital_ignores_dp_settings_from_the_servers_run_config():
    task = app_task()
    server_rc = {"dp-seed": 0, "target-epsilon": 1000.0, "num-hospitals": 4}  # chosen by the server operator
    node_config = {"fedvault-dir": "/srv/hospital_0"}  # a real deployment, not the demo
    assert not task.is_demo(server_rc, node_config)
    assert task.dp_seed(server_rc, 0) is None, "the server chose the hospital's DP-SGD seed"
    assert task.config(server_rc).privacy.target_epsilon <= 10, "the server chose the hospital's ε target"


def test_a_deployed_node_does_not_answer_federated_evaluation_with_exact_held_out_metrics(tmp_path):
    """The engine-path oracle fixed in tests/test_redteam_uncharged_purposes.py, on the Mod path:
    Flower's evaluate message carries any model the server picks; the node answers its exact
    held-out loss/accuracy and example count (not DP, uncharged), as often as it is asked."""
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, RecordDict
    from flwr.app import Array

    from fedvault.fl import models
    from fedvault.fl.integrations.flower.node import provision

    task = app_task()
    from fedvault_flower_app import client_app

    provision(tmp_path, ["hospital_0", "hospital_1", "hospital_2"])
    rc = {"num-hospitals": 3}
    cfg = task.config(rc)
    w = models.get_vector(task.make_model(cfg)) + 0.5  # a model of the server's choosing
    ctx = Context(run_id=1, node_id=1, node_config={"fedvault-dir": str(tmp_path / "hospital_0")},
                  state=RecordDict(), run_config=rc)
    arrays = ArrayRecord({"w": Array(np.asarray(w, dtype=np.float32))})
    import time

    from flwr.app import Metadata

    msg = Message(content=RecordDict({"arrays": arrays}),
                  metadata=Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                                    group_id="", created_at=time.time(), ttl=600.0, message_type="evaluate"))
    try:
        reply = client_app.evaluate(msg, ctx)
    except Exception:  # noqa: BLE001 - Flower turns it into an error reply: refused, as a deployed node should
        return
    assert reply.has_error(), f"exact held-out metrics released: {dict(reply.content['metrics'])}"
