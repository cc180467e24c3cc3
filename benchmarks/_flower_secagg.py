"""Time Flower's own SecAgg+ (flwr 1.41.x) in-process: run by ``benchmarks/secagg.py --flower``
inside the separate ``.venv-flower`` virtualenv (never imported by fedvault).

    .venv-flower/bin/python benchmarks/_flower_secagg.py N D DROPPED REPEAT

Drives Flower's real ``SecAggPlusWorkflow`` (server) against ``ClientApp``s wrapped in
Flower's ``secaggplus_mod`` through a minimal in-memory ``Grid``.  ``DROPPED`` clients
stop answering after the share-keys stage (before their masked vector), like fedvault's
benchmark.  Server seconds = workflow wall time minus the time spent inside client
calls.  Prints one JSON line: ``{"server_s": median, "flwr": version, ...}``.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import time
import uuid

import numpy as np


def main(n: int, d: int, dropped: int, repeat: int) -> dict:
    import flwr
    from flwr.app import Context, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    flwr_logger = logging.getLogger("flwr")
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
    from flwr.app import ConfigRecord
    from flwr.serverapp.grid import Grid

    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    TaskIdentity.task_id = 1
    flwr_logger.setLevel(logging.ERROR)
    rng = np.random.default_rng(0)  # benchmark data only
    vectors = {nid: rng.uniform(-1, 1, d).astype(np.float32) for nid in range(1, n + 1)}

    class Bench(NumPyClient):
        def __init__(self, nid: int) -> None:
            self.nid = nid

        def fit(self, parameters, config):
            return [vectors[self.nid]], 10, {}

    app = ClientApp(client_fn=lambda ctx: Bench(int(ctx.node_id)).to_client(), mods=[secaggplus_mod])

    class LoopbackGrid(Grid):
        def __init__(self) -> None:
            self.client_seconds = 0.0
            self.stage = 0
            self.contexts = {
                nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(), run_config={})
                for nid in vectors
            }
            self.dead: set[int] = set()

        def set_run(self, run) -> None:  # pragma: no cover - unused
            pass

        @property
        def run(self):  # pragma: no cover - unused
            return None

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
            raise NotImplementedError

        def get_node_ids(self):
            return list(vectors)

        def push_messages(self, messages):  # pragma: no cover - unused
            raise NotImplementedError

        def pull_messages(self, message_ids):  # pragma: no cover - unused
            raise NotImplementedError

        def send_and_receive(self, messages, *, timeout=None):
            self.stage += 1
            if self.stage == 3:  # collect-masked-vectors stage: the dropped clients vanish
                self.dead = set(sorted(vectors)[:dropped])
            replies = []
            for msg in messages:
                nid = msg.metadata.dst_node_id
                if nid in self.dead:
                    continue
                msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                msg.metadata.__dict__["_src_node_id"] = 1
                msg.metadata.__dict__["_run_id"] = 1
                t = time.perf_counter()  # the copy stands in for the wire; counted as client time
                msg = copy.deepcopy(msg)
                replies.append(app(msg, self.contexts[nid]))
                self.client_seconds += time.perf_counter() - t
            return replies

    times, walls = [], []
    for _ in range(repeat):
        grid = LoopbackGrid()
        cm = SimpleClientManager()
        for nid in vectors:
            cm.register(GridClientProxy(nid, grid, 1))
        strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n,
                          fraction_evaluate=0.0, min_evaluate_clients=0)
        ctx = LegacyContext(
            Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=cm,
        )
        ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
        ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters([np.zeros(d, np.float32)]), True
        )
        workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.5)
        t = time.perf_counter()
        workflow(grid, ctx)
        wall = time.perf_counter() - t
        walls.append(wall)
        times.append(wall - grid.client_seconds)
        got = compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        from flwr.common import parameters_to_ndarrays

        agg = parameters_to_ndarrays(got)[0]
        survivors = [v for nid, v in vectors.items() if nid not in grid.dead]
        err = float(np.max(np.abs(agg - np.mean(survivors, axis=0))))
    return {"server_s": statistics.median(times), "wall_s": statistics.median(walls), "n": n, "d": d,
            "dropped": dropped, "flwr": flwr.__version__, "max_abs_error_vs_mean": err}


if __name__ == "__main__":
    n, d, dropped, repeat = (int(a) for a in sys.argv[1:5])
    print(json.dumps(main(n, d, dropped, repeat)))
