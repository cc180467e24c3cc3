"""ClientApp: the hospital's side.  The fedvault line is ``mods=[FedVaultMod(load_site)]``."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedvault.fl.integrations.flower import FedVaultMod, NodeDir, node_dir_from_context

# torch/Opacus load only in the stages that train (enrol, masked_input): a SuperNode starts
# a fresh process for every message, so the other stages stay light.


class CrashingSite:
    """Demo of dropout recovery: a hospital whose training crashes after it shared its keys."""

    def __init__(self, site):  # noqa: ANN001
        self.site, self.name, self.records = site, site.name, site.records

    def refusal(self, round: int) -> str | None:
        return self.site.refusal(round)

    def fit(self, weights, round):  # noqa: ANN001, ANN201
        raise RuntimeError(f"{self.name}: simulated crash during training (run_config simulate-crash)")


def load_site(context: Context):  # noqa: ANN201 - HospitalSite | CrashingSite
    import torch

    from fedvault.fl.integrations.flower.site import HospitalSite

    from . import task

    torch.set_num_threads(1)
    rc = context.run_config
    cfg = task.config(rc)
    node = NodeDir(node_dir_from_context(context))
    index = node.client - 1  # hospital k is fedvault client k + 1
    site = HospitalSite(task.hospital(cfg, index), node.ledger_path, dp_seed=task.dp_seed(rc, index))
    crash = {int(c) for c in str(rc.get("simulate-crash", "")).split()}
    return CrashingSite(site) if node.client in crash else site


app = ClientApp(mods=[FedVaultMod(load_site)])


@app.train()
def train(msg: Message, context: Context) -> Message:
    raise RuntimeError("this federation trains only through fedvault's secure aggregation")
