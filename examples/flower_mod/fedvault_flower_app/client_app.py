"""ClientApp: the hospital's side.  The fedvault line is ``FedVaultMod(load_site).register(app)``."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedvault.fl.integrations.flower import FedVaultMod, NodeDir

from . import task

# torch/Opacus load only in the stages that train (enrol, masked_input): a SuperNode may start
# a fresh process for every message, so the other stages stay light.


class CrashingSite:
    """Demo of dropout recovery: a hospital whose training crashes after it shared its keys."""

    def __init__(self, site):  # noqa: ANN001
        self.site, self.name, self.records = site, site.name, site.records
        self.model_size, self.max_abs = site.model_size, site.max_abs

    def refusal(self, round: int) -> str | None:
        return self.site.refusal(round)

    def fit(self, weights, round, config=None):  # noqa: ANN001, ANN201
        raise RuntimeError(f"{self.name}: simulated crash during training (run_config simulate-crash)")


def load_site(context: Context):  # noqa: ANN201 - HospitalSite | CrashingSite
    import torch

    from fedvault.fl.integrations.flower.site import HospitalSite

    torch.set_num_threads(1)
    rc = context.run_config
    cfg = task.config(rc, context.node_config)  # privacy settings: the node's own config
    node = NodeDir(task.node_dir(context))
    index = node.client - 1  # hospital k is fedvault client k + 1
    site = HospitalSite(task.hospital(cfg, index), node.ledger_path, dp_seed=task.dp_seed(context.node_config, index))
    crash = {int(c) for c in str(rc.get("simulate-crash", "")).split()}
    return CrashingSite(site) if node.client in crash else site


app = ClientApp()
FedVaultMod(load_site, task.node_dir, min_cohort=task.min_cohort).register(app)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Federated evaluation on the hospital's validation split (Flower's plain path): demo only.

    Not DP: exact held-out metrics and the example count of any model the server sends, as
    often as it asks.  A deployed hospital refuses; only simulated nodes answer (the throwaway
    demo consortium, or a node whose own node config says ``fedvault-simulation``), and only
    when the server asks (``fraction-evaluate`` > 0).  A
    deployment evaluates per site through the engine's secure aggregation instead."""
    simulated = task.is_demo(context.run_config, context.node_config) or context.node_config.get("fedvault-simulation")
    if not simulated:
        from flwr.app import Error

        from fedvault.fl.integrations.flower.mod import REFUSED

        return Message(Error(REFUSED, "fedvault/refused: exact per-site evaluation is for the simulation demo "
                                      "only; a deployed hospital releases no un-noised metrics"), reply_to=msg)
    import torch

    from fedvault.fl import models
    from fedvault.fl.integrations.flower import wire
    from fedvault.fl.metrics import evaluate as eval_model

    torch.set_num_threads(1)
    cfg = task.config(context.run_config)
    node = NodeDir(task.node_dir(context))
    h = task.hospital(cfg, node.client - 1)
    model = task.make_model(cfg)
    models.set_vector(model, wire.flatten(msg.content["arrays"]))
    m = eval_model(model, h.data.X_val, h.data.y_val)
    metrics = {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
    metrics["num-examples"] = float(len(h.data.y_val))
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


__all__ = ["app", "load_site", "ArrayRecord"]
