"""Run configuration: TOML in, a validated, frozen :class:`Config` out.

Every key is documented in the README ("Configuration"). Unknown keys, wrong types
and out-of-range values raise :class:`~fl.errors.ConfigError` with a message that names
the key and says what to write instead; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from fedvault.fl.errors import ConfigError

DATASETS = ("breast_cancer", "digits", "csv")
MODELS = ("logreg", "mlp", "cnn")
AGGREGATIONS = ("plaintext", "masked", "secagg", "paillier")
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedmedian", "trimmed_mean")
ROBUST_STRATEGIES = ("fedmedian", "trimmed_mean")
ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "breast_cancer"
    hospitals: int = 5
    dirichlet_alpha: float = 1.0
    test_fraction: float = 0.2
    min_records: int = 40
    csv: tuple[str, ...] = ()
    label: str = ""
    test_csv: str = ""

    def check(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        if self.dataset == "csv":
            if len(self.csv) < 2:
                raise ConfigError("data.csv: give one CSV file per hospital (at least 2), e.g. csv = [\"a.csv\", \"b.csv\"]")
            if not self.label:
                raise ConfigError("data.label: name the label column of your CSV files, e.g. label = \"diagnosis\"")
        else:
            if self.csv or self.test_csv:
                raise ConfigError("data.csv/test_csv are only used with dataset = \"csv\"; remove them or set dataset = \"csv\"")
            _range("data.hospitals", self.hospitals, 2, 1000)
        _range("data.dirichlet_alpha", self.dirichlet_alpha, 1e-3, 1e6)
        _range("data.test_fraction", self.test_fraction, 0.01, 0.9)
        _range("data.min_records", self.min_records, 1, 10**9)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "logreg"
    hidden: tuple[int, ...] = (32,)

    def check(self) -> None:
        _choice("model.kind", self.kind, MODELS)
        for h in self.hidden:
            _range("model.hidden[]", h, 1, 100_000)


@dataclass(frozen=True)
class TrainingConfig:
    rounds: int = 30
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 0.5
    server_lr: float = 1.0
    strategy: str = "fedavg"
    min_clients: int = 2
    client_fraction: float = 1.0
    prox_mu: float = 0.1
    server_momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    trim_fraction: float = 0.1
    target_accuracy: float | None = None
    patience: int | None = None
    min_delta: float = 1e-3

    def check(self) -> None:
        _range("training.client_fraction", self.client_fraction, 1e-6, 1.0)
        _range("training.prox_mu", self.prox_mu, 0.0, 1e6)
        _range("training.server_momentum", self.server_momentum, 0.0, 0.999999)
        _range("training.beta1", self.beta1, 0.0, 0.999999)
        _range("training.beta2", self.beta2, 0.0, 0.999999)
        _range("training.tau", self.tau, 1e-12, 1.0)
        _range("training.trim_fraction", self.trim_fraction, 0.0, 0.49)
        if self.target_accuracy is not None:
            _range("training.target_accuracy", self.target_accuracy, 0.0, 1.0)
        if self.patience is not None:
            _range("training.patience", self.patience, 1, 10**6)
        _range("training.min_delta", self.min_delta, 0.0, 1.0)
        _range("training.rounds", self.rounds, 1, 100_000)
        _range("training.local_epochs", self.local_epochs, 1, 10_000)
        _range("training.batch_size", self.batch_size, 1, 10**7)
        _range("training.lr", self.lr, 1e-9, 1e3)
        _range("training.server_lr", self.server_lr, 1e-9, 1e3)
        _range("training.min_clients", self.min_clients, 1, 10**6)
        _choice("training.strategy", self.strategy, STRATEGIES)


@dataclass(frozen=True)
class PrivacyConfig:
    enabled: bool = True
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    budget_epsilon: float | None = None
    client_noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"

    @property
    def budget(self) -> float | None:
        """The ε cap each hospital enforces: ``budget_epsilon``, else ``target_epsilon``, else none."""
        return self.budget_epsilon if self.budget_epsilon is not None else self.target_epsilon

    def check(self) -> None:
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ConfigError(
                "privacy: set either noise_multiplier or target_epsilon, not both "
                "(target_epsilon calibrates the noise multiplier for you)"
            )
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            raise ConfigError("privacy: set noise_multiplier (e.g. 1.0) or target_epsilon (e.g. 3.0), or enabled = false")
        if self.budget_epsilon is not None and not (self.budget_epsilon > 0 and math.isfinite(self.budget_epsilon)):
            raise ConfigError(f"privacy.budget_epsilon must be a positive number, got {self.budget_epsilon!r}")
        if self.target_epsilon is not None and self.budget_epsilon is not None and self.budget_epsilon < self.target_epsilon:
            raise ConfigError("privacy.budget_epsilon is below target_epsilon; the planned rounds would be refused. "
                              "Leave budget_epsilon out (it defaults to target_epsilon) or raise it")
        if self.target_epsilon is not None and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise ConfigError(f"privacy.target_epsilon must be a positive number, got {self.target_epsilon!r}")
        if self.noise_multiplier is not None:
            _range("privacy.noise_multiplier", self.noise_multiplier, 0.0, 1e6)
        _range("privacy.max_grad_norm", self.max_grad_norm, 1e-9, 1e9)
        if not (0 < self.delta < 1):
            raise ConfigError(f"privacy.delta must be in (0, 1), e.g. 1e-5; got {self.delta!r}")
        _choice("privacy.accountant", self.accountant, ACCOUNTANTS)
        if self.client_noise_multiplier is not None:
            _range("privacy.client_noise_multiplier", self.client_noise_multiplier, 1e-3, 1e6)


@dataclass(frozen=True)
class AggregationConfig:
    mode: str = "masked"
    bits: int = 32
    update_clip: float = 10.0
    graph: str = "complete"
    threshold: int | None = None
    dropout: float = 0.0
    keys: str = "holder"
    key_bits: int = 2048
    slot_bits: int = 32
    short_exponent: bool = False

    def check(self) -> None:
        _choice("aggregation.mode", self.mode, AGGREGATIONS)
        _choice("aggregation.keys", self.keys, ("holder", "threshold"))
        _range("aggregation.key_bits", self.key_bits, 512, 4096)
        _range("aggregation.slot_bits", self.slot_bits, 8, 56)
        _range("aggregation.dropout", self.dropout, 0.0, 0.9)
        if self.dropout and self.mode not in ("masked", "secagg"):
            raise ConfigError("aggregation.dropout simulates lost hospitals in the secagg protocol; use mode = \"secagg\" or dropout = 0")
        _range("aggregation.bits", self.bits, 16, 64)
        _range("aggregation.update_clip", self.update_clip, 1e-9, 1e9)
        _choice("aggregation.graph", self.graph, ("complete", "sparse"))
        if self.threshold is not None:
            _range("aggregation.threshold", self.threshold, 2, 10**6)


@dataclass(frozen=True)
class PersonalizationConfig:
    enabled: bool = False
    epochs: int = 2
    lr: float | None = None
    head_only: bool = True

    def check(self) -> None:
        _range("personalization.epochs", self.epochs, 1, 10_000)
        if self.lr is not None:
            _range("personalization.lr", self.lr, 1e-9, 1e3)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = field(default_factory=lambda: PrivacyConfig(target_epsilon=3.0))
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
    base_dir: str = "."

    def check(self) -> "Config":
        _range("seed", self.seed, 0, 2**63 - 1)
        for sec in (self.data, self.model, self.training, self.privacy, self.aggregation, self.personalization):
            sec.check()
        if self.training.strategy in ROBUST_STRATEGIES and self.aggregation.mode != "plaintext":
            raise ConfigError(
                f"training.strategy = {self.training.strategy!r} needs every hospital's individual update, which "
                f"aggregation.mode = {self.aggregation.mode!r} hides from the server; use mode = \"plaintext\", or keep "
                "secure aggregation with a sum-based strategy (fedavg, fedprox, fedavgm, fedadam, fedyogi) and bound "
                "each update's norm with aggregation.update_clip"
            )
        if self.data.dataset == "csv":
            n = len(self.data.csv)
        else:
            n = self.data.hospitals
        if self.training.min_clients > n:
            raise ConfigError(
                f"training.min_clients = {self.training.min_clients} but only {n} hospitals exist; lower min_clients"
            )
        if self.privacy.client_noise_multiplier is not None and self.aggregation.mode not in ("masked", "secagg"):
            raise ConfigError(
                "privacy.client_noise_multiplier adds distributed integer noise inside secure aggregation; "
                "use aggregation.mode = \"secagg\" (or \"masked\"), or remove client_noise_multiplier"
            )
        if self.privacy.client_noise_multiplier is not None and self.training.strategy in ROBUST_STRATEGIES:
            raise ConfigError("client-level DP needs a sum-based strategy; use fedavg/fedprox/fedavgm/fedadam/fedyogi")
        if self.model.kind == "cnn" and self.data.dataset != "digits":
            raise ConfigError("model.kind = \"cnn\" needs image data: use dataset = \"digits\" or kind = \"logreg\"/\"mlp\"")
        return self

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """A copy with some keys changed, e.g. ``cfg.replace(training={"rounds": 3})``."""
        d = to_dict(self)
        for k, v in sections.items():
            if isinstance(v, Mapping):
                d.setdefault(k, {}).update(v)
            else:
                d[k] = v
        return from_dict(d, base_dir=self.base_dir)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "privacy": PrivacyConfig,
    "aggregation": AggregationConfig,
    "personalization": PersonalizationConfig,
}


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not supported; use one of: {', '.join(allowed)}")


def _range(key: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{key} = {value!r} is out of range; use a number between {lo:g} and {hi:g}")


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    key = f"{section}.{f.name}" if section else f.name
    t = str(f.type)
    if value is None:
        raise ConfigError(f"{key}: TOML has no null; leave the key out to use the default")
    if t.startswith("tuple"):
        if not isinstance(value, list):
            example = "32" if "int" in t else '"a.csv"'
            raise ConfigError(f"{key} must be a list, e.g. {f.name} = [{example}]")
        inner = int if "int" in t else str
        for v in value:
            if not isinstance(v, inner) or isinstance(v, bool):
                raise ConfigError(f"{key} must be a list of {inner.__name__}s; got {value!r}")
        return tuple(value)
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if t == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string in quotes; got {value!r}")
        return value
    if "float" in t:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        return float(value)
    if "int" in t:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number; got {value!r}")
        return value
    return value


def _build(cls: type, section: str, raw: Mapping[str, Any]) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table of keys")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    if cls is PrivacyConfig and "noise_multiplier" not in raw and "target_epsilon" not in raw:
        kwargs["target_epsilon"] = 3.0  # the default privacy: calibrate to ε = 3
    for k, v in raw.items():
        if k not in known:
            raise ConfigError(
                f"unknown key {k!r} in [{section}]; known keys: {', '.join(sorted(known))}"
            )
        kwargs[k] = _coerce(section, known[k], v)
    return cls(**kwargs)


def from_dict(raw: Mapping[str, Any], base_dir: str | Path = ".") -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    kwargs: dict[str, Any] = {"base_dir": str(base_dir)}
    for k, v in raw.items():
        if k in _SECTIONS:
            kwargs[k] = _build(_SECTIONS[k], k, v)
        elif k == "seed":
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"seed must be a whole number; got {v!r}")
            kwargs["seed"] = v
        else:
            raise ConfigError(
                f"unknown key or section {k!r}; known: seed, " + ", ".join(f"[{s}]" for s in _SECTIONS)
            )
    return Config(**kwargs).check()


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file; relative CSV paths resolve from its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; pass the path of a .toml file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e}); fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file; save the config as UTF-8 TOML") from None
    return from_dict(raw, base_dir=p.resolve().parent)


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON/TOML-safe dict of a config (``None`` values left out, as TOML has no null)."""
    out: dict[str, Any] = {"seed": cfg.seed}
    for name in _SECTIONS:
        sec = dataclasses.asdict(getattr(cfg, name))
        out[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sec.items() if v is not None}
    return out


def demo_config() -> Config:
    """The configuration of ``fedvault demo`` (also shipped as ``fl/configs/demo.toml``)."""
    return load(Path(__file__).parent / "configs" / "demo.toml")
