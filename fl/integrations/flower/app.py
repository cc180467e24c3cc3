"""A Flower app on fedvault's one round engine, driven by the same TOML config as ``fedvault run``.

    # the example's server_app.py / client_app.py
    from fedvault.fl.integrations.flower.app import client_app, server_app
    app = server_app(config="fedvault.toml")     # ServerApp: the coordinator
    app = client_app(config="fedvault.toml")     # ClientApp: one hospital per SuperNode

The ServerApp builds the study's :class:`~fl.engine.RoundEngine` (:func:`fl.simulation.coordinator`)
over :class:`~.transport.FlowerTransport`; every SuperNode answers with an
:class:`~.transport.EngineNode` whose party is the hospital half of the same study
(:func:`fl.simulation.make_hospital`).  Client sampling, budget refusals, every
aggregation mode, per-site evaluation through secure aggregation, federated
standardisation, early stopping and personalisation are the engine's, exactly as in
``fedvault run``; Flower only moves messages.

What the coordinator uses (all public): the config; the roster built from the hospitals'
public enrolments (``fedvault roster build``: names, client ids, identity public keys);
what each hospital releases at the first message (record and held-out counts, noise
multiplier, the data's schema: features, classes), from which the encoders' bounds are set
(:func:`fl.simulation.public_bounds`); the ε each hospital's ledger reports; and a test set it
holds itself (the config's ``data.test_csv``, or the built-in data set's test split in a
demo).  It never sees a record.

What a hospital uses: ITS copy of the config (``node_config["fedvault-config"]``, default the
app's; only a simulated node without a node directory of its own takes the run config's), its node directory (``node_config["fedvault-dir"]``: identity key from ``fedvault
enrol``, roster from ``fedvault roster install``, its persistent ledger, a vault for protocol
state), and its own records: ``node_config["fedvault-csv"]`` (its own CSV), or — simulations
and demos — the partition of the config's data set named like the hospital.

Run config (``flwr run . --run-config '...'``; all optional):

``fedvault-config``      the study config (default: the app's ``fedvault.toml``)
``fedvault-roster``      the coordinator's roster file (``fedvault roster build``)
``fedvault-root``        simulations: a folder with ``registry.json`` and ``node-<partition>/`` dirs
``fedvault-history``     write history.json here (same schema as ``fedvault run``)
``progress-file``        append ``"<round> <stage>"`` lines here (monitoring, tests)
``stage-timeout``        seconds a protocol stage waits (default 60)
``train-timeout``        seconds the training stage waits (default 120)
``wait-nodes``           seconds to wait for every roster member's SuperNode (default 120)
``fedvault-paillier``    Paillier: the coordinator's copy of the public key setup (``-fingerprint``: announced)

Node config (each SuperNode's own): ``fedvault-dir`` (its node directory), ``fedvault-config``
(its copy of the study), ``fedvault-csv`` (its records).

Personalisation's held-out metrics are exact (not DP): a node answers them once per study it
trained in (a marker in its node directory), whichever process is asked.

With neither roster nor root, the app enrols a throwaway demo consortium (one hospital per
simulated SuperNode, every key on this machine) — ``flwr run .`` out of the box; never a
deployment.

Ledgers.  A hospital's ledger (``ledger.json`` in its node directory) spans every study it
ever takes part in; rounds of a new study are recorded after the last one it holds (the
offset is kept in Flower's ``Context.state``, public).  Its ε, record count and noise
multiplier are reported to the coordinator, as ``fedvault run`` writes them to history.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.clientapp import ClientApp
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedvault.fl.errors import ConfigError, FederationError

from .node import NodeDir, NodeSetupError, Registry, provision
from .transport import STANDARDISATION, EngineNode, FlowerTransport, Party

__all__ = ["client_app", "server_app", "server_main", "load_party", "DeployedHospital", "load_config",
           "CONFIG_KEY", "PaillierNotSetUp"]

CONFIG_KEY = "fedvault-config"
NODE_STATE = "fedvault.node"  # Context.state: this run's ledger round offset (public)


class PaillierNotSetUp(NodeSetupError):
    """Paillier over a deployment needs the key ceremony's material on this machine."""


# -- the config -------------------------------------------------------------------------------
def load_config(path: str | os.PathLike[str]) -> Any:
    """The study config (:func:`fl.config.load`)."""
    from fedvault.fl.config import load

    return load(path)


def _config_path(given: Any, default: str | os.PathLike[str] | None) -> Path:
    if given:
        p = Path(str(given))
        if not p.is_absolute() and default is not None and not p.exists():
            p = Path(default).parent / p
        return p
    if default is None:
        raise ConfigError(f"no fedvault config: pass --run-config '{CONFIG_KEY}=\"study.toml\"' (coordinator) or "
                          f"--node-config '{CONFIG_KEY}=\"study.toml\"' (hospital), or give the app a default")
    return Path(default)


# -- Paillier: the key ceremony's material (`fedvault paillier ...`, fl.integrations.flower.ceremony) --------
PAILLIER_KEY = "fedvault-paillier"  # run config: the coordinator's copy of the public setup file
PAILLIER_FINGERPRINT_KEY = "fedvault-paillier-fingerprint"  # run config: the fingerprint announced out of band


def _paillier_public(context: Context, cfg: Any, registry: Registry) -> Any:
    """The coordinator's copy of the study's public Paillier key setup (run config ``fedvault-paillier``,
    default ``<fedvault-root>/paillier-public.json``), checked against ITS roster, the announced
    fingerprint (``fedvault-paillier-fingerprint``, if given) and the config's ``aggregation`` keys."""
    from .ceremony import PUBLIC_FILE, CeremonyError, coordinator_setup

    rc = context.run_config
    path = Path(str(rc[PAILLIER_KEY])) if rc.get(PAILLIER_KEY) else (
        Path(str(rc["fedvault-root"])) / PUBLIC_FILE if rc.get("fedvault-root") else None)
    if path is None or not path.is_file():
        raise PaillierNotSetUp("aggregation.mode = \"paillier\" over a Flower deployment needs the study's public key "
                               f"setup: not set up (no file at run config {PAILLIER_KEY}); run the `fedvault paillier` "
                               "key ceremony (keygen or deal), check the file with `fedvault paillier show`, and pass "
                               f"--run-config '{PAILLIER_KEY}=\"paillier-public.json\" {PAILLIER_FINGERPRINT_KEY}=\"HEX\"'")
    try:
        return coordinator_setup(path, registry, cfg, str(rc.get(PAILLIER_FINGERPRINT_KEY) or "") or None)
    except CeremonyError as e:
        raise PaillierNotSetUp(str(e)) from e


def _paillier_secret(node: NodeDir, cfg: Any) -> tuple[Any, Any]:
    """``(public setup, secret)`` installed in this node by the key ceremony (``fedvault paillier install``):
    the key holder's private key, this hospital's threshold share, or ``None``; checked against the node's
    roster, its pinned fingerprint and its own config."""
    from .ceremony import CeremonyError, node_setup

    try:
        return node_setup(node, cfg)
    except CeremonyError as e:
        raise PaillierNotSetUp(f"{node.name}: {e}") from e


def _key_holder(node: NodeDir, cfg: Any, public: Any, key: Any) -> Party:
    """The key holder's node (holder mode): it decrypts verified aggregates once per round and has no data."""
    from fedvault.fl.hospital import KeyHolder

    roster = node.registry.identity_keys()
    holder = KeyHolder(node.client, key, node.identity(), state_dir=node.path / "state",
                       min_clients=max(2, int(cfg.training.min_clients)), roster_keys=roster)
    return Party(holder, roster, public, vault=node.path / "vault")


# -- the hospital half ------------------------------------------------------------------------------
def _node_dir(context: Context) -> Path:
    """``node_config["fedvault-dir"]`` (deployments), else ``<fedvault-root | demo root>/node-<partition-id>``."""
    nc, rc = context.node_config, context.run_config
    if nc.get("fedvault-dir"):
        return Path(str(nc["fedvault-dir"]))
    if "partition-id" not in nc:
        raise NodeSetupError("this SuperNode has no node directory: start it with --node-config "
                             "'fedvault-dir=\"/path/to/node\"' (created by `fedvault enrol`, roster installed by "
                             "`fedvault roster install`)")
    root = Path(str(rc["fedvault-root"])) if rc.get("fedvault-root") else demo_root(context.run_id)
    return root / f"node-{int(nc['partition-id'])}"


def demo_root(run_id: int) -> Path:
    """The throwaway demo consortium of one run, in the machine's temp folder (every node is local)."""
    return Path(tempfile.gettempdir()) / f"fedvault-flower-demo-{os.getuid()}-{run_id}"


def _schema(fd: Any) -> dict[str, Any]:
    return {"n_features": int(fd.n_features), "n_classes": int(fd.n_classes), "image_shape": list(fd.image_shape) if fd.image_shape else None,
            "classes": [str(c) for c in fd.classes], "standardise": bool(getattr(fd, "standardise", True))}


def _csv_of(cfg: Any, name: str, node_config: Mapping[str, Any]) -> Path | None:
    """This hospital's own CSV: ``node_config["fedvault-csv"]``, else (``dataset = "csv"``) the config's
    ``data.csv`` entry named like the hospital (the file's stem is the hospital's name, as in ``fedvault run``)."""
    if node_config.get("fedvault-csv"):
        return Path(str(node_config["fedvault-csv"]))
    if cfg.data.dataset != "csv":
        return None
    for entry in cfg.data.csv:
        p = Path(entry)
        if p.stem == name:
            return p if p.is_absolute() else Path(cfg.base_dir) / p
    raise NodeSetupError(f"{name}: none of the config's data.csv files is named {name}.csv; give this hospital's "
                         "records with --node-config 'fedvault-csv=\"/path/to/its.csv\"'")


def _own_data(cfg: Any, name: str, node_config: Mapping[str, Any]) -> tuple[Any, int]:
    """This hospital's records as a one-hospital FederatedData (no test set) and its partition index.

    Its own CSV (read on its machine only; labels mapped to the study's declared ``data.classes``, so
    a hospital need not hold every class and reveals nothing about which it holds), or — simulations and demos —
    the partition of the config's built-in data set named like the hospital."""
    from fedvault.fl import data as data_mod

    csv = _csv_of(cfg, name, node_config)
    if csv is not None:
        from fedvault.fl.errors import DataError

        if not cfg.data.classes:
            raise DataError(f"{name}: a deployed hospital maps its labels with the study's declared classes, so that "
                            "it reveals nothing about which classes it holds: add data.classes = [...] (every class "
                            "of the study, in order) to the consortium's config")
        f = data_mod.read_csv(csv, cfg.data.label)
        if f.problems:
            raise DataError.collect(f.problems, what=str(csv))
        classes, cmap = data_mod.label_mapping(list(f.labels), cfg.data.label, cfg.data.classes)
        y = np.array([cmap[v] for v in f.labels], dtype=np.int64)
        h = data_mod.with_holdout(name, f.X, y, cfg.data.test_fraction, np.random.default_rng(cfg.seed))
        listed = [Path(p).stem for p in cfg.data.csv]  # its position in the consortium's list, as in `fedvault run`
        index = listed.index(name) if name in listed else 0
        return data_mod.FederatedData([h], f.X[:0], y[:0], len(classes), f.features, None, classes), index
    fd = data_mod.load(cfg)  # a simulation or demo: the config's data set, this hospital's partition
    names = [h.name for h in fd.hospitals]
    if name not in names:
        raise NodeSetupError(f"{name} is not one of the config's data partitions ({', '.join(names)}); give this "
                             "hospital its own records with --node-config 'fedvault-csv=\"/path/to/its.csv\"'")
    k = names.index(name)
    return dataclasses.replace(fd, hospitals=[fd.hospitals[k]], X_test=fd.X_test[:0], y_test=fd.y_test[:0]), k


def _calibrated(cfg: Any, node: NodeDir, n: int, n_features: int | None) -> float | None:
    """:func:`fl.simulation.calibrated_noise`, cached in the node directory (a SuperNode may start a fresh
    process per message; the calibration is a deterministic function of the config and the counts)."""
    import hashlib

    from fedvault.fl.config import to_dict
    from fedvault.fl.simulation import calibrated_noise

    if not cfg.privacy.enabled or cfg.privacy.noise_multiplier is not None:
        return calibrated_noise(cfg, n, n_features)
    key = hashlib.sha256(json.dumps([to_dict(cfg)["privacy"], to_dict(cfg)["training"],
                                     to_dict(cfg)["personalization"], n, n_features],
                                    sort_keys=True, default=str).encode()).hexdigest()
    path = node.path / "calibration.json"
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = calibrated_noise(cfg, n, n_features)
        from fedvault.fl.files import write_json_atomic

        write_json_atomic(path, cache)
    return float(cache[key])


class DeployedHospital:
    """One hospital's party on its SuperNode: the engine's :class:`~fl.hospital.Hospital` (the hospital
    half of :func:`fl.simulation.federate`) with its persistent ledger and the study's round offset.

    ``offset``: ledger round = study round + offset (a ledger spans every study, its rounds increase).
    The Hospital (torch, the records) is built on first use: a SuperNode may start a fresh process per
    message, and a protocol step needs only the saved role (the node's vault), not the records.
    """

    def __init__(self, cfg: Any, node: NodeDir, node_config: Mapping[str, Any], *, offset: int = 0,
                 key_share: Any = None, standardisation: Mapping[str, Any] | None = None, run: str = ""):
        self.cfg, self.node, self.offset, self.run = cfg, node, int(offset), str(run)
        self._node_config, self._key_share, self._saved = dict(node_config), key_share, standardisation
        self._hospital: Any = None
        self.fd: Any = None
        self.schema: dict[str, Any] = {}

    @property
    def hospital(self) -> Any:
        if self._hospital is None:
            self._build()
        return self._hospital

    def _build(self) -> None:
        import torch

        from fedvault.fl import models
        from fedvault.fl.simulation import make_hospital

        torch.set_num_threads(int(os.environ.get("FEDVAULT_TORCH_THREADS", "1")))
        cfg, node = self.cfg, self.node
        self.fd, index = _own_data(cfg, node.name, self._node_config)
        schema = self.schema = _schema(self.fd)

        def make_model() -> Any:
            return models.build(cfg.model, schema["n_features"], schema["n_classes"],
                                tuple(schema["image_shape"]) if schema["image_shape"] else None)

        n_features = schema["n_features"] if schema["standardise"] else None
        h = make_hospital(cfg, self.fd.hospitals[0], index, make_model, n_features=n_features, party=node.client,
                          identity=node.identity(), key_share=self._key_share, state_dir=node.path / "state",
                          noise_multiplier=_calibrated(cfg, node, self.fd.hospitals[0].n, n_features),
                          roster_keys=node.registry.identity_keys())
        if h.ledger is not None:  # the hospital's lifetime ledger, from its node directory
            ledger = self._stored_ledger()
            if ledger is not None:
                if (ledger.delta, ledger.relation) != (h.ledger.delta, h.ledger.relation):
                    raise NodeSetupError(f"{node.ledger_path} states ε at δ = {ledger.delta:g} ({ledger.relation}) "
                                         f"but the config says δ = {h.ledger.delta:g} ({h.ledger.relation}); one "
                                         "ledger must keep one δ and relation: use the consortium's config")
                ledger.budget_epsilon = h.ledger.budget_epsilon  # this hospital's own config decides its budget
                h.ledger = ledger
                h.trainer.ledger = ledger
            else:
                h.ledger.save(node.ledger_path)
        self._hospital = h
        if self._saved is not None:  # applied by an earlier process of this run
            self.standardise(self._saved)

    def _stored_ledger(self) -> Any:
        if not self.node.ledger_path.exists():
            return None
        from fedvault.dp.ledger import PrivacyLedger

        return PrivacyLedger.load(self.node.ledger_path)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def party(self) -> int:
        return self.node.client

    @property
    def ledger(self) -> Any:
        if self._hospital is None:  # e.g. a "ledger" message: the ledger file is enough
            return self._stored_ledger() if self.cfg.privacy.enabled else None
        return self._hospital.ledger

    def save(self) -> None:
        if self._hospital is not None and self._hospital.ledger is not None:
            self._hospital.ledger.save(self.node.ledger_path)

    def public_info(self) -> dict[str, Any]:
        """What the hospital releases before the study (as ``fedvault run``'s history does)."""
        from fedvault.fl.simulation import hospital_info

        from fedvault.fl.config import consortium_digests

        return {**hospital_info(self.hospital), "schema": self.schema, "config": consortium_digests(self.cfg)}

    def refusal(self, round: int) -> str | None:
        return self.hospital.refusal(round + self.offset)

    def join(self, setup: Any) -> Any:
        return self.hospital.join(dataclasses.replace(setup, round=setup.round + self.offset))

    def personalize(self, weights: np.ndarray, round: int) -> dict[str, Any]:
        """Fine-tune and report held-out metrics (exact, not DP) once per study, and only in a study this
        hospital trained in: a marker in its node directory outlives the ClientApp process (a server asking
        again, in this run or a fresh one, gets nothing)."""
        ledger = self.hospital.ledger
        if ledger is not None and not any(e.round >= self.offset for e in ledger.events):
            raise FederationError(f"{self.name}: personalisation is answered only in a study this hospital trained "
                                  "in; refusing")
        marks = self.node.path / "personalised"
        marks.mkdir(mode=0o700, exist_ok=True)
        try:
            fd = os.open(marks / f"{self.run}-{self.offset}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise FederationError(f"{self.name}: personalisation was already answered in this study; its held-out "
                                  "metrics are exact (not DP) and released once") from None
        os.close(fd)
        return self.hospital.personalize(weights, round + self.offset)

    def standardise(self, plan: Mapping[str, Any]) -> None:
        """Apply the coordinator's feature standardisation to this hospital's records, after checking
        it against this hospital's own config (its public ranges; ``public``: the fixed min-max)."""
        from fedvault.fl import stats
        from fedvault.fl.simulation import Standardisation

        self.hospital  # noqa: B018 - the records, loaded
        st = Standardisation.from_dict(plan)
        p = self.cfg.privacy
        if not self.schema["standardise"] or (p.enabled and p.standardise == "none"):
            raise FederationError(f"{self.name}: this hospital's config standardises no features; refusing")
        if p.enabled:
            lo, hi = stats.public_ranges(self.cfg, self.schema["n_features"]) or (None, None)
            if lo is None or st.lo is None or not (np.array_equal(lo, st.lo) and np.array_equal(hi, st.hi)):
                raise FederationError(f"{self.name}: the coordinator's standardisation does not use this hospital's "
                                      "public feature ranges; use the consortium's config file")
            if p.standardise == "public" and not (np.all(st.mean == 0.5) and np.all(st.std == 0.5)):
                raise FederationError(f"{self.name}: privacy.standardise = \"public\" is a fixed min-max; the "
                                      "coordinator sent another transform")
        st.apply(self.fd)


def load_party(context: Context, config: str | os.PathLike[str] | None = None) -> Party:
    """The node side: this SuperNode's hospital (see the module docstring)."""
    nc = context.node_config
    given = nc.get(CONFIG_KEY)
    if not given and not nc.get("fedvault-dir"):  # a simulated node (demo or fedvault-root): the run's study
        given = context.run_config.get(CONFIG_KEY)
    cfg = load_config(_config_path(given, config))  # a deployed node: its own copy, never the server's choice
    node = NodeDir(_node_dir(context))
    public = key_share = None  # Paillier: the key ceremony's material in this node directory
    if cfg.aggregation.mode == "paillier":
        public, secret = _paillier_secret(node, cfg)
        if public.mode == "holder" and int(public.holder) == node.client:
            return _key_holder(node, cfg, public, secret)
        key_share = secret if public.mode == "threshold" else None
    state = context.state.config_records.get(NODE_STATE)
    if state is None:  # first message of this run on this node: the study's rounds follow the ledger's
        last = -1
        if node.ledger_path.exists():
            from fedvault.dp.ledger import PrivacyLedger

            led = PrivacyLedger.load(node.ledger_path)
            last = max([e.round for e in led.events] + [int(r.get("round", 0)) for r in led.refused], default=-1)
        state = ConfigRecord({"offset": last + 1})
        context.state[NODE_STATE] = state
    saved = context.state.config_records.get(STANDARDISATION)
    party = DeployedHospital(cfg, node, nc, offset=int(state["offset"]), key_share=key_share, run=str(context.run_id),
                             standardisation=json.loads(str(saved["plan"])) if saved is not None else None)
    return Party(party, node.registry.identity_keys(), public, save=party.save, vault=node.path / "vault")


def client_app(config: str | os.PathLike[str] | None = None) -> ClientApp:
    """A ClientApp whose node is one hospital of the study ``config`` (its own copy: see the module docstring)."""
    app = ClientApp()
    EngineNode(lambda context: load_party(context, config)).register(app)
    return app


# -- the server half -----------------------------------------------------------------------------------
def _wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    while True:
        ids = list(grid.get_node_ids())
        if len(ids) >= n or time.monotonic() >= end:
            return ids
        time.sleep(0.5)


def _roster(grid: Grid, context: Context, cfg: Any) -> Registry:
    rc = context.run_config
    if rc.get("fedvault-roster"):
        return Registry.load(Path(str(rc["fedvault-roster"])))
    if rc.get("fedvault-root"):
        return Registry.load(Path(str(rc["fedvault-root"])) / "registry.json")
    n = len(_wait_for_nodes(grid, 2, float(rc.get("wait-nodes", 60.0))))
    if cfg.data.dataset == "csv":
        names = [Path(p).stem for p in cfg.data.csv][:n]
    else:
        names = [f"hospital_{k}" for k in range(cfg.data.hospitals)][:n]
    root = demo_root(context.run_id)
    log(WARNING, "fedvault demo: no roster given; enrolling %d simulated hospitals (%s) in %s — every key on this "
        "machine: a demo, not a deployment", len(names), ", ".join(names), root)
    return provision(root, names, dirs=[f"node-{k}" for k in range(len(names))])


def _test_set(cfg: Any, schema: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The coordinator's own test set: ``data.test_csv``, or a built-in data set's public test split."""
    from fedvault.fl import data as data_mod

    if cfg.data.dataset != "csv":
        fd = data_mod.load(cfg)
        return fd.X_test, fd.y_test
    if not cfg.data.test_csv:
        return np.zeros((0, schema["n_features"]), dtype=np.float32), np.zeros(0, dtype=np.int64)
    p = Path(cfg.data.test_csv)
    f = data_mod.read_csv(p if p.is_absolute() else Path(cfg.base_dir) / p, cfg.data.label)
    raw_classes, cmap = data_mod.label_mapping(list(f.labels), cfg.data.label, cfg.data.classes)
    index = {c: i for i, c in enumerate(schema["classes"])}
    unknown = sorted(set(raw_classes) - set(index))
    if unknown:
        raise ConfigError(f"the test CSV has classes no hospital reported ({', '.join(unknown)})")
    return f.X, np.array([index[raw_classes[cmap[v]]] for v in f.labels], dtype=np.int64)


def _check_consortium(cfg: Any, info: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to start unless every hospital's copy of the consortium config agrees with the coordinator's
    in every shared section (:func:`fl.config.consortium_digests`): caught at enrolment, before anyone
    trains or is charged, instead of as refusals in round 1. A hospital's own privacy choices (ε target,
    budget, δ, noise multiplier) and its data's location may differ."""
    from fedvault.fl.config import consortium_digests

    own = consortium_digests(cfg)
    differ = {}
    for name, i in info.items():
        theirs = i.get("config")
        if not isinstance(theirs, Mapping):
            differ[name] = ["(no config digest: an older fedvault?)"]
            continue
        bad = sorted(k for k in own if theirs.get(k) != own[k])
        if bad:
            differ[name] = bad
    if differ:
        text = "; ".join(f"{n}: {', '.join(f'[{k}]' for k in ks)}" for n, ks in sorted(differ.items()))
        raise FederationError(f"hospitals' copies of the consortium config differ from the coordinator's ({text}); "
                              "every party must use the consortium's config file (only a hospital's own privacy "
                              "budget, ε target, δ and noise multiplier, and its data's location, may differ). "
                              "Nothing was trained.")


def _study_schema(info: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    schemas = {n: v.get("schema") for n, v in info.items()}
    first = next(iter(schemas.values()), None)
    if first is None:
        raise FederationError("no hospital answered: is any SuperNode of the roster connected?")
    differ = [n for n, s in schemas.items() if s != first]
    if differ:
        raise FederationError(f"hospitals disagree on the data's schema (features, classes): {', '.join(differ)} "
                              f"differ from {next(iter(schemas))}; every hospital must use the same columns and "
                              "label classes")
    return first


def _round_logger() -> Callable[[Mapping[str, Any]], None]:
    """A study's ``on_round``: each round's result, and its protocol's guarantee line when it first
    appears in this study."""
    seen: set[str] = set()

    def on_round(row: Mapping[str, Any]) -> None:
        g = row.get("guarantee")
        line = g.get("line") if isinstance(g, Mapping) else None
        if line and line not in seen:
            seen.add(line)
            log(INFO, "fedvault guarantee: %s", line)
        _log_round(row)

    return on_round


def _log_round(row: Mapping[str, Any]) -> None:
    r = row["round"]
    if "aborted" in row:
        log(WARNING, "fedvault round %d: aborted (%s); dropped %s", r, row["aborted"], row.get("dropped"))
        return
    m = row.get("metrics", {})
    eps = [v for v in (row.get("epsilon") or {}).values() if v is not None]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and v == v)
    log(INFO, "fedvault round %d: %d hospitals in the sum (%s); %s; max ε %s; dropped %s; refused %s", r,
        len(row.get("participants", [])), ", ".join(row.get("participants", [])), shown or "no test set",
        f"{max(eps):.3f}" if eps else "-", row.get("dropped") or "none", sorted(row.get("refused") or {}) or "none")


def server_main(grid: Grid, context: Context, config: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run the study ``config`` over the Grid's SuperNodes; returns its history (see the module docstring).

    Raises:
        FederationError: no round completed (Flower then records the run as failed).
    """
    from fedvault.fl import models
    from fedvault.fl.engine import write_history
    from fedvault.fl.simulation import StudyRoster, coordinator, initial_model, standardisation

    import torch

    torch.set_num_threads(int(os.environ.get("FEDVAULT_TORCH_THREADS", "1")))
    rc = context.run_config
    cfg = load_config(_config_path(rc.get(CONFIG_KEY), config))
    reg = _roster(grid, context, cfg)
    paillier_public = _paillier_public(context, cfg, reg) if cfg.aggregation.mode == "paillier" else None
    holder = {int(paillier_public.holder)} if paillier_public is not None and paillier_public.mode == "holder" else set()
    names = [m.name for i, m in sorted(reg.members.items()) if i not in holder]  # the key holder is no hospital
    nodes = _wait_for_nodes(grid, len(reg.members), float(rc.get("wait-nodes", 120.0)))
    progress = str(rc.get("progress-file", ""))

    def on_stage(rnd: int, purpose: str, stage: str) -> None:
        log(INFO, "fedvault round %d (%s): %s", rnd, purpose, stage)
        if progress:
            with open(progress, "a", encoding="utf-8") as f:
                f.write(f"{rnd} {stage}\n")

    transport = FlowerTransport(grid, names, timeout=float(rc.get("stage-timeout", 60.0)),
                                train_timeout=float(rc.get("train-timeout", 120.0)), on_stage=on_stage)
    missing = [n for n in names if n not in transport.nodes]
    log(INFO, "fedvault: %d SuperNodes connected; %d of %d hospitals answered%s", len(nodes),
        len([n for n in names if n in transport.nodes]),
        len(names), f" (missing: {', '.join(missing)})" if missing else "")
    info = {n: transport.info[n] for n in names if n in transport.info}
    _check_consortium(cfg, info)
    schema = _study_schema(info)

    def make_model() -> Any:
        return models.build(cfg.model, schema["n_features"], schema["n_classes"],
                            tuple(schema["image_shape"]) if schema["image_shape"] else None)

    model = initial_model(cfg, make_model)
    ids = {m.name: i for i, m in reg.members.items() if i not in holder}
    X_test, y_test = _test_set(cfg, schema)
    from fedvault.fl.data import FederatedData

    test = FederatedData([], X_test, y_test, schema["n_classes"], [])

    def epsilons() -> dict[str, float | None]:
        return {n: transport.ledgers[n].get("epsilon") for n in names if n in transport.ledgers}

    def client_epsilons() -> dict[str, float | None]:
        return {n: transport.ledgers[n].get("client_epsilon") for n in names if n in transport.ledgers}

    engine = coordinator(cfg, transport, model,
                         roster=StudyRoster(hospitals=names, ids=ids, identity_keys=reg.identity_keys()),
                         hospital_info={n: {k: v for k, v in i.items() if k not in ("schema", "config")}
                                        for n, i in info.items()},
                         test=(test.X_test, test.y_test), paillier_public=paillier_public, on_round=_round_logger(),
                         test_set="server", epsilon=epsilons,
                         client_epsilon=client_epsilons if cfg.privacy.enabled else None)
    engine.history["deployment"] = {"transport": "flower", "roster": reg.fingerprint(), "missing": missing}
    log(INFO, "fedvault: study of %d rounds, %s aggregation, %d hospitals", cfg.training.rounds,
        cfg.aggregation.mode, len(names))

    def prepare() -> None:
        if not schema["standardise"]:
            return
        plan = standardisation(cfg, engine, [n for n in names if n in transport.nodes], schema["n_features"])
        if plan is None:
            return
        failed = transport.standardise(plan.to_dict(), [n for n in names if n in transport.nodes])
        if failed:
            log(WARNING, "fedvault: standardisation not applied by %s", failed)
        plan.apply(test)
        engine.test = (test.X_test, test.y_test)

    out = str(rc.get("fedvault-history", ""))
    write = (lambda h: write_history(Path(out), h)) if out else None
    history = engine.run_study(ledgers=lambda: {n: d for n, d in transport.refresh_ledgers().items()},
                               prepare=prepare, write=write)
    done = [r for r in history["rounds"] if r.get("participants")]
    final = history["final"]
    log(INFO, "fedvault: %d of %d rounds completed through %s aggregation; %s; final %s; max ε %s", len(done),
        len(history["rounds"]), cfg.aggregation.mode, final.get("stop_reason"),
        {k: round(v, 4) for k, v in final.get("metrics", {}).items() if isinstance(v, float)}, final.get("max_epsilon"))
    if not done:
        aborted = [r["aborted"] for r in history["rounds"] if r.get("aborted")]
        raise FederationError(f"fedvault: no round completed ({final.get('stop_reason')})"
                              + (f"; aborted: {aborted}" if aborted else ""))
    return history


def server_app(config: str | os.PathLike[str] | None = None) -> ServerApp:
    """A ServerApp running the study ``config`` (overridable with the run config ``fedvault-config``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        server_main(grid, context, config)

    return app
