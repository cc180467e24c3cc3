"""Run configuration: TOML in, a validated, frozen :class:`Config` out.

Every key is documented in the README ("Configuration keys"). Loading never stops at the
first mistake: every unknown key (with "did you mean"), wrong type, out-of-range value
and contradiction between keys is collected and reported together in one
:class:`~fl.errors.ConfigError` whose ``problems`` list names each key and the fix.

Why hand-written validation and not pydantic
--------------------------------------------
* pydantic would become a direct dependency of the core library; today it arrives only
  with the optional ``[flower]`` extra (through flwr). The schema is six flat tables of
  scalars and lists, which ~100 lines of coercion below handle completely.
* What matters for a study is the cross-key and data-dependent feasibility (noise vs
  rounds, Shamir threshold vs hospitals, ring size vs clip and record counts, δ vs n_k).
  pydantic validators for those would be the same hand-written functions inside a
  framework, plus its import cost on every ``fedvault`` invocation.
* Messages: pydantic's are generic ("Input should be a valid integer"); ours name the
  key and value, say what to write instead, and suggest the closest known key, table or
  choice (``difflib``), including "this key belongs in [training]".

How to add a check (every helper)
---------------------------------
* A key's own range or choice: in its section's ``check(self, p)``, with
  ``p.range(key, value, lo, hi)``, ``p.choice(key, value, allowed)`` or
  ``p.error("key: what is wrong; what to write")``. A ``raise ConfigError`` there still
  works (it ends that section's checks only).
* A rule across keys/sections: a function ``(cfg) -> Iterable[str]`` yielding one message
  per problem, decorated with :func:`config_check` (see the ones at the end of this file).
* A rule that needs the data (record counts, classes) or a calibration: a function in
  :mod:`fl.preflight` decorated with ``@preflight_check``; it runs before any training
  and before any ε is spent. Yield :func:`warning` ("...") for advice that should not
  stop the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from fedvault.fl.errors import ConfigError

DATASETS = ("breast_cancer", "digits", "csv")
MODELS = ("logreg", "mlp", "cnn")
AGGREGATIONS = ("plaintext", "masked", "secagg", "paillier")
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedmedian", "trimmed_mean")
ROBUST_STRATEGIES = ("fedmedian", "trimmed_mean")
ACCOUNTANTS = ("rdp", "prv")
LOSSES = ("cross_entropy", "mse")  # = dp.objective.LOSSES (a callable: federate(loss=...))
OPTIMIZERS = ("sgd", "adam")  # = dp.objective.OPTIMIZERS (a factory: federate(optimizer=...))


# --------------------------------------------------------------------------- collecting problems


class Warning_(str):
    """A finding that does not stop the run (printed before it starts)."""


def warning(message: str) -> Warning_:
    """Mark a check's message as a warning rather than an error."""
    return Warning_(message)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Problems:
    """Every problem found so far; :meth:`raise_if_any` reports them all at once."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.errors)

    def error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def add(self, message: str) -> None:
        """A check's message: a :func:`warning` goes to warnings, anything else is an error."""
        (self.warn if isinstance(message, Warning_) else self.error)(str(message))

    def run(self, check: Callable[..., Iterable[str] | None], *args: Any) -> None:
        """Run one check, collecting what it yields or raises (a ConfigError/DataError)."""
        from fedvault.fl.errors import FLError

        try:
            for m in check(*args) or ():
                self.add(m)
        except FLError as e:
            for m in getattr(e, "problems", None) or [str(e)]:
                self.error(m)

    def range(self, key: str, value: Any, lo: float, hi: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
            self.error(f"{key} = {value!r} is out of range; use a number between {lo:g} and {hi:g}")
            return False
        return True

    def choice(self, key: str, value: Any, allowed: tuple[str, ...]) -> bool:
        if value not in allowed:
            self.error(f"{key} = {value!r} is not supported{did_you_mean(value, allowed)} (one of: {', '.join(allowed)})")
            return False
        return True

    def raise_if_any(self, what: str = "the configuration") -> None:
        if self.errors:
            raise ConfigError.collect(self.errors, what=what, warnings=self.warnings)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "breast_cancer"
    hospitals: int = 5
    dirichlet_alpha: float = 1.0
    test_fraction: float = 0.2  # 0.0 when test_csv is given and test_fraction is not (see _build)
    min_records: int = 40
    csv: tuple[str, ...] = ()
    label: str = ""
    test_csv: str = ""
    classes: tuple[str, ...] = ()

    def check(self, p: Problems) -> None:
        p.choice("data.dataset", self.dataset, DATASETS)
        if self.classes:
            if self.dataset != "csv":
                p.error("data.classes declares the label classes of CSV data; remove it or set dataset = \"csv\"")
            elif len(set(self.classes)) < 2 or len(set(self.classes)) != len(self.classes):
                p.error(f"data.classes must list at least 2 distinct classes, got {list(self.classes)}")
        if self.dataset == "csv":
            if len(self.csv) < 2:
                p.error("data.csv: give one CSV file per hospital (at least 2), e.g. csv = [\"a.csv\", \"b.csv\"]")
            if not self.label:
                p.error("data.label: name the label column of your CSV files, e.g. label = \"diagnosis\"")
        else:
            if self.csv or self.test_csv:
                p.error("data.csv/test_csv are only used with dataset = \"csv\"; remove them or set dataset = \"csv\"")
            p.range("data.hospitals", self.hospitals, 2, 1000)
        p.range("data.dirichlet_alpha", self.dirichlet_alpha, 1e-3, 1e6)
        # With a test CSV nothing needs withholding (0 allowed); without one the held-out
        # records are the test set, so some must be held out.
        p.range("data.test_fraction", self.test_fraction, 0.0 if self.test_csv else 0.01, 0.9)
        p.range("data.min_records", self.min_records, 1, 10**9)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "logreg"
    hidden: tuple[int, ...] = (32,)

    def check(self, p: Problems) -> None:
        p.choice("model.kind", self.kind, MODELS)
        for h in self.hidden:
            p.range("model.hidden[]", h, 1, 100_000)


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
    loss: str = "cross_entropy"  # "mse": regression (metrics MSE/MAE, no accuracy)
    optimizer: str = "sgd"

    def check(self, p: Problems) -> None:
        p.range("training.client_fraction", self.client_fraction, 1e-6, 1.0)
        p.range("training.prox_mu", self.prox_mu, 0.0, 1e6)
        p.range("training.server_momentum", self.server_momentum, 0.0, 0.999999)
        p.range("training.beta1", self.beta1, 0.0, 0.999999)
        p.range("training.beta2", self.beta2, 0.0, 0.999999)
        p.range("training.tau", self.tau, 1e-12, 1.0)
        p.range("training.trim_fraction", self.trim_fraction, 0.0, 0.49)
        if self.target_accuracy is not None:
            p.range("training.target_accuracy", self.target_accuracy, 0.0, 1.0)
        if self.patience is not None:
            p.range("training.patience", self.patience, 1, 10**6)
        p.range("training.min_delta", self.min_delta, 0.0, 1.0)
        p.range("training.rounds", self.rounds, 1, 100_000)
        p.range("training.local_epochs", self.local_epochs, 1, 10_000)
        p.range("training.batch_size", self.batch_size, 1, 10**7)
        p.range("training.lr", self.lr, 1e-9, 1e3)
        p.range("training.server_lr", self.server_lr, 1e-9, 1e3)
        p.range("training.min_clients", self.min_clients, 1, 10**6)
        p.choice("training.strategy", self.strategy, STRATEGIES)
        p.choice("training.loss", self.loss, LOSSES)
        p.choice("training.optimizer", self.optimizer, OPTIMIZERS)
        if self.loss != "cross_entropy" and self.target_accuracy is not None:
            p.error("training.target_accuracy needs loss = \"cross_entropy\" (a regression has no accuracy); "
                    "use training.patience to stop on a plateau")


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
    # opt-in, tests/papers only: DP noise and sampling replayable from `seed` (NOT private)
    reproducible: bool = False
    # helper D (issue 13): the stated neighbouring relation and what else is released
    relation: str = "replace_one"
    standardise: str = "dp"
    stats_noise_multiplier: float = 10.0
    feature_low: tuple[float, ...] = ()
    feature_high: tuple[float, ...] = ()
    site_metrics: str = "off"

    @property
    def budget(self) -> float | None:
        """The ε cap each hospital enforces: ``budget_epsilon``, else ``target_epsilon``, else none."""
        return self.budget_epsilon if self.budget_epsilon is not None else self.target_epsilon

    def check(self, p: Problems) -> None:
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            p.error(
                "privacy: set either noise_multiplier or target_epsilon, not both "
                "(target_epsilon calibrates the noise multiplier for you)"
            )
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            p.error("privacy: set noise_multiplier (e.g. 1.0) or target_epsilon (e.g. 3.0), or enabled = false")
        if self.budget_epsilon is not None and not (self.budget_epsilon > 0 and math.isfinite(self.budget_epsilon)):
            p.error(f"privacy.budget_epsilon must be a positive number, got {self.budget_epsilon!r}")
        if self.target_epsilon is not None and self.budget_epsilon is not None and self.budget_epsilon < self.target_epsilon:
            p.error("privacy.budget_epsilon is below target_epsilon; the planned rounds would be refused. "
                              "Leave budget_epsilon out (it defaults to target_epsilon) or raise it")
        if self.target_epsilon is not None and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            p.error(f"privacy.target_epsilon must be a positive number, got {self.target_epsilon!r}")
        if self.noise_multiplier is not None:
            p.range("privacy.noise_multiplier", self.noise_multiplier, 0.0, 1e6)
        p.range("privacy.max_grad_norm", self.max_grad_norm, 1e-9, 1e9)
        if not (0 < self.delta < 1):
            p.error(f"privacy.delta must be in (0, 1), e.g. 1e-5; got {self.delta!r}")
        p.choice("privacy.accountant", self.accountant, ACCOUNTANTS)
        if self.client_noise_multiplier is not None:
            p.range("privacy.client_noise_multiplier", self.client_noise_multiplier, 1e-3, 1e6)
        p.choice("privacy.relation", self.relation, ("replace_one", "add_remove"))
        if self.enabled and self.relation == "add_remove":
            p.error("privacy.relation = \"add_remove\" does not hold for what fedvault releases: exact record "
                    "counts (update weights n_k, q and steps per hospital) are released, so ε must be stated "
                    "for replace-one; use relation = \"replace_one\" (the default)")
        p.choice("privacy.standardise", self.standardise, ("dp", "public", "none"))
        p.range("privacy.stats_noise_multiplier", self.stats_noise_multiplier, 1e-3, 1e6)
        if len(self.feature_low) != len(self.feature_high):
            p.error(f"privacy.feature_low has {len(self.feature_low)} values, feature_high {len(self.feature_high)}; "
                    "give one public lower and upper bound per feature")
        p.choice("privacy.site_metrics", self.site_metrics, ("off", "simulation"))


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
    exclude_blamed: bool = True

    def check(self, p: Problems) -> None:
        p.choice("aggregation.mode", self.mode, AGGREGATIONS)
        p.choice("aggregation.keys", self.keys, ("holder", "threshold"))
        p.range("aggregation.key_bits", self.key_bits, 512, 4096)
        p.range("aggregation.slot_bits", self.slot_bits, 8, 56)
        p.range("aggregation.dropout", self.dropout, 0.0, 0.9)
        if self.dropout and self.mode not in ("masked", "secagg"):
            p.error("aggregation.dropout simulates lost hospitals in the secagg protocol; use mode = \"secagg\" or dropout = 0")
        p.range("aggregation.bits", self.bits, 16, 64)
        p.range("aggregation.update_clip", self.update_clip, 1e-9, 1e9)
        p.choice("aggregation.graph", self.graph, ("complete", "sparse"))
        if self.threshold is not None:
            p.range("aggregation.threshold", self.threshold, 2, 10**6)


@dataclass(frozen=True)
class ThreatModelConfig:
    """[threat_model]: the adversary secure aggregation must withstand (helper B's keys).

    SecAgg derives its graph degree and threshold from it (protocols.secagg.threat) and
    every round records the resulting guarantee.  Unset keys take the protocol defaults.
    """

    colluders: int | None = None
    colluder_fraction: float | None = None
    dropouts: int | None = None
    dropout_fraction: float | None = None
    security_bits: int = 40

    def check(self, p: Problems) -> None:
        if self.colluders is not None and self.colluder_fraction is not None:
            p.error("threat_model: set colluders or colluder_fraction, not both")
        if self.dropouts is not None and self.dropout_fraction is not None:
            p.error("threat_model: set dropouts or dropout_fraction, not both")
        if self.colluders is not None:
            p.range("threat_model.colluders", self.colluders, 0, 10**6)
        if self.dropouts is not None:
            p.range("threat_model.dropouts", self.dropouts, 0, 10**6)
        if self.colluder_fraction is not None:
            p.range("threat_model.colluder_fraction", self.colluder_fraction, 0.0, 0.99)
        if self.dropout_fraction is not None:
            p.range("threat_model.dropout_fraction", self.dropout_fraction, 0.0, 0.99)
        p.range("threat_model.security_bits", self.security_bits, 20, 128)

    def protocol(self):
        """The :class:`protocols.secagg.ThreatModel` these keys declare."""
        from fedvault.protocols.secagg.threat import ThreatModel

        return ThreatModel(colluders=self.colluders, colluder_fraction=self.colluder_fraction,
                           dropouts=self.dropouts, dropout_fraction=self.dropout_fraction,
                           security_bits=self.security_bits)


@dataclass(frozen=True)
class PersonalizationConfig:
    enabled: bool = False
    epochs: int = 2
    lr: float | None = None
    head_only: bool = True

    def check(self, p: Problems) -> None:
        p.range("personalization.epochs", self.epochs, 1, 10_000)
        if self.lr is not None:
            p.range("personalization.lr", self.lr, 1e-9, 1e3)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = field(default_factory=lambda: PrivacyConfig(target_epsilon=3.0))
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
    threat_model: ThreatModelConfig = field(default_factory=ThreatModelConfig)
    base_dir: str = "."

    @property
    def n_hospitals(self) -> int:
        """How many hospitals the study has (CSV files, or simulated hospitals)."""
        return len(self.data.csv) if self.data.dataset == "csv" else self.data.hospitals

    def problems(self, p: Problems | None = None) -> Problems:
        """Every problem of this config (nothing raised): each section, then every :func:`config_check`."""
        p = p if p is not None else Problems()
        p.range("seed", self.seed, 0, 2**63 - 1)
        for name in _SECTIONS:
            p.run(lambda sec=getattr(self, name): sec.check(p))
        for check in CONFIG_CHECKS:
            p.run(check, self)
        return p

    def check(self) -> "Config":
        """Raise one :class:`ConfigError` listing every problem, or return ``self``."""
        self.problems().raise_if_any()
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
    "threat_model": ThreatModelConfig,
}

# Tables read by another command from the same file (``fedvault audit`` reads [audit]).
# ``fedvault run`` accepts them; the value, if not None, is "module:function" validating
# the table (called with the table; raises ConfigError) when that module imports.
FOREIGN_TABLES: dict[str, str | None] = {"audit": "fedvault.fl.audit.settings:settings_from_dict"}


# --------------------------------------------------------------------------- cross-key checks

ConfigCheck = Callable[[Config], Iterable[str]]
CONFIG_CHECKS: list[ConfigCheck] = []


def config_check(fn: ConfigCheck) -> ConfigCheck:
    """Register a rule across keys: ``fn(cfg)`` yields one message per problem."""
    CONFIG_CHECKS.append(fn)
    return fn


@config_check
def _robust_strategy_needs_plaintext(cfg: Config) -> Iterator[str]:
    if cfg.training.strategy in ROBUST_STRATEGIES and cfg.aggregation.mode != "plaintext":
        yield (
            f"training.strategy = {cfg.training.strategy!r} needs every hospital's individual update, which "
            f"aggregation.mode = {cfg.aggregation.mode!r} hides from the server; use mode = \"plaintext\", or keep "
            "secure aggregation with a sum-based strategy (fedavg, fedprox, fedavgm, fedadam, fedyogi) and bound "
            "each update's norm with aggregation.update_clip"
        )


@config_check
def _enough_hospitals(cfg: Config) -> Iterator[str]:
    n = cfg.n_hospitals
    if isinstance(cfg.training.min_clients, int) and cfg.training.min_clients > n:
        yield f"training.min_clients = {cfg.training.min_clients} but only {n} hospitals exist; lower min_clients"
    t = cfg.aggregation.threshold
    if isinstance(t, int) and t > n and (cfg.aggregation.mode in ("masked", "secagg") or
                                         (cfg.aggregation.mode == "paillier" and cfg.aggregation.keys == "threshold")):
        yield (f"aggregation.threshold = {t} but only {n} hospitals exist: no round could ever be unmasked or "
               f"decrypted; use a threshold between 2 and {n}")


@config_check
def _secagg_threshold_meets_threat_model(cfg: Config) -> Iterator[str]:
    """README: a threshold unsafe for the declared threat model is refused before the run (with
    every other problem), not at the first round after data loading and calibration."""
    n, t = cfg.n_hospitals, cfg.aggregation.threshold
    if cfg.aggregation.mode not in ("masked", "secagg") or not isinstance(n, int) or n < 2:
        return
    if t is not None and (not isinstance(t, int) or t > n):
        return  # reported by _enough_hospitals / the range check
    from fedvault.protocols.secagg.threat import derive
    from fedvault.secagg.errors import ParameterError

    try:
        derive(cfg.aggregation.graph, n, cfg.threat_model.protocol(), threshold=None if t is None else min(t, n))
    except ParameterError as e:
        yield (f"aggregation/threat_model: with {n} hospitals, {e}; leave aggregation.threshold unset to derive it, "
               "or declare the adversary you can afford in [threat_model]")
    except Exception:  # an invalid [threat_model] value is reported by its own range check
        return


@config_check
def _paillier_threshold_majority(cfg: Config) -> Iterator[str]:
    t, n = cfg.aggregation.threshold, cfg.n_hospitals
    if (cfg.aggregation.mode == "paillier" and cfg.aggregation.keys == "threshold" and isinstance(t, int)
            and 2 <= t <= n and 2 * t <= n):
        yield (f"aggregation.threshold = {t} of {n} hospitals lets two disjoint quorums decrypt two different "
               f"aggregates of one round (their difference is one hospital's update); use a threshold of at least "
               f"{n // 2 + 1} (protocols.paillier requires 2t > n)")


@config_check
def _client_level_dp(cfg: Config) -> Iterator[str]:
    if cfg.privacy.client_noise_multiplier is None:
        return
    if cfg.aggregation.mode not in ("masked", "secagg"):
        yield ("privacy.client_noise_multiplier adds distributed integer noise inside secure aggregation; "
               "use aggregation.mode = \"secagg\" (or \"masked\"), or remove client_noise_multiplier")
    if cfg.training.strategy in ROBUST_STRATEGIES:
        yield "client-level DP needs a sum-based strategy; use fedavg/fedprox/fedavgm/fedadam/fedyogi"


@config_check
def _cnn_needs_images(cfg: Config) -> Iterator[str]:
    if cfg.model.kind == "cnn" and cfg.data.dataset != "digits":
        yield "model.kind = \"cnn\" needs image data: use dataset = \"digits\" or kind = \"logreg\"/\"mlp\""


# --------------------------------------------------------------------------- parsing


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise at once (kept for callers outside a section check; sections use ``p.choice``)."""
    p = Problems()
    p.choice(key, value, allowed)
    p.raise_if_any()


def _range(key: str, value: Any, lo: float, hi: float) -> None:
    """Raise at once (kept for callers outside a section check; sections use ``p.range``)."""
    p = Problems()
    p.range(key, value, lo, hi)
    p.raise_if_any()


class _Invalid(Exception):
    pass


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """The value for field ``f`` or :class:`_Invalid` with the message."""
    t = str(f.type)
    if value is None:
        raise _Invalid(f"{key}: TOML has no null; leave the key out to use the default")
    if t.startswith("tuple"):
        if not isinstance(value, list):
            example = "32" if "int" in t else '"a.csv"'
            raise _Invalid(f"{key} must be a list, e.g. {f.name} = [{example}]")
        if "float" in t:  # numbers (privacy.feature_low/high)
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
                raise _Invalid(f"{key} must be a list of numbers; got {value!r}")
            return tuple(float(v) for v in value)
        inner = int if "int" in t else str
        for v in value:
            if not isinstance(v, inner) or isinstance(v, bool):
                raise _Invalid(f"{key} must be a list of {inner.__name__}s; got {value!r}")
        return tuple(value)
    if t == "bool":
        if not isinstance(value, bool):
            raise _Invalid(f"{key} must be true or false; got {value!r}")
        return value
    if t == "str":
        if not isinstance(value, str):
            raise _Invalid(f"{key} must be a string in quotes; got {value!r}")
        return value
    if "float" in t:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"{key} must be a number; got {value!r}")
        return float(value)
    if "int" in t:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"{key} must be a whole number; got {value!r}")
        return value
    return value


def _unknown_key(section: str, key: str, known: Iterable[str]) -> str:
    where = f"[{section}]" if section else "the top level"
    homes = [s for s, cls in _SECTIONS.items() if s != section and key in {f.name for f in fields(cls)}]
    if homes:
        return f"unknown key {key!r} in {where}; it belongs in [{homes[0]}]"
    if not section and key in _SECTIONS:
        return f"{key!r} must be a table: write [{key}] on its own line, then its keys"
    hint = did_you_mean(key, known)
    return f"unknown key {key!r} in {where}{hint} (known keys: {', '.join(sorted(known))})"


def _build(cls: type, section: str, raw: Mapping[str, Any], p: Problems) -> Any:
    if not isinstance(raw, Mapping):
        p.error(f"[{section}] must be a table of keys, e.g. [{section}] on its own line followed by key = value lines")
        return cls() if cls is not PrivacyConfig else cls(target_epsilon=3.0)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    if cls is PrivacyConfig and "noise_multiplier" not in raw and "target_epsilon" not in raw:
        kwargs["target_epsilon"] = 3.0  # the default privacy: calibrate to ε = 3
    if cls is DataConfig and "test_fraction" not in raw and raw.get("test_csv"):
        kwargs["test_fraction"] = 0.0  # a test CSV is the test set: withhold nothing by default
    for k, v in raw.items():
        if k not in known:
            p.error(_unknown_key(section, k, known))
            continue
        try:
            kwargs[k] = _coerce(f"{section}.{k}", known[k], v)
        except _Invalid as e:
            p.error(str(e))
    return cls(**kwargs)


def parse(raw: Mapping[str, Any], base_dir: str | Path = ".", p: Problems | None = None) -> tuple[Config, Problems]:
    """A :class:`Config` from a parsed TOML document and every problem found in it (nothing raised).

    Keys with a wrong type are left at their default so the remaining checks still run.
    """
    p = p if p is not None else Problems()
    kwargs: dict[str, Any] = {"base_dir": str(base_dir)}
    for k, v in raw.items():
        if k in _SECTIONS:
            kwargs[k] = _build(_SECTIONS[k], k, v, p)
        elif k == "seed":
            if isinstance(v, bool) or not isinstance(v, int):
                p.error(f"seed must be a whole number; got {v!r}")
            else:
                kwargs["seed"] = v
        elif k in FOREIGN_TABLES:
            _check_foreign(k, v, p)
        else:
            p.error(_unknown_key("", k, ["seed", *_SECTIONS, *FOREIGN_TABLES]))
    cfg = Config(**kwargs)
    cfg.problems(p)
    return cfg, p


def _check_foreign(name: str, table: Any, p: Problems) -> None:
    if not isinstance(table, Mapping):
        p.error(f"[{name}] must be a table of keys")
        return
    target = FOREIGN_TABLES.get(name)
    if not target:
        return
    mod, _, fn = target.partition(":")
    try:
        import importlib

        validate = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError):
        return
    p.run(lambda: validate(table) and None)


def from_dict(raw: Mapping[str, Any], base_dir: str | Path = ".") -> Config:
    """Validate a parsed TOML document into a :class:`Config` (one error listing every problem)."""
    cfg, p = parse(raw, base_dir)
    p.raise_if_any()
    return cfg


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML document at ``path`` (ConfigError naming the fix if it cannot be read)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; pass the path of a .toml file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e}); fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file; save the config as UTF-8 TOML") from None


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file; relative CSV paths resolve from its folder."""
    raw = read_toml(path)
    cfg, p = parse(raw, base_dir=Path(path).resolve().parent)
    p.raise_if_any(what=str(path))
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON/TOML-safe dict of a config (``None`` values left out, as TOML has no null)."""
    out: dict[str, Any] = {"seed": cfg.seed}
    for name in _SECTIONS:
        sec = dataclasses.asdict(getattr(cfg, name))
        out[name] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sec.items() if v is not None}
    return out


# What every party of a consortium must agree on (fl.integrations.flower.app compares it at enrolment).
# A hospital's own privacy choices (noise_multiplier, target_epsilon, budget_epsilon, delta,
# max_grad_norm, accountant) and its data's location (data.csv, test_csv) may differ per party.
_OWN_PRIVACY = {"noise_multiplier", "target_epsilon", "budget_epsilon", "delta", "max_grad_norm", "accountant"}
_SHARED_DATA = {"dataset", "label", "classes"}


def consortium_sections(cfg: Config) -> dict[str, Any]:
    """The parts of ``cfg`` every party of a consortium must share, by section (see above)."""
    d = to_dict(cfg)
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        sec = dict(d.get(name, {}))
        if name == "privacy":
            sec = {k: v for k, v in sec.items() if k not in _OWN_PRIVACY}
        elif name == "data":
            sec = {k: v for k, v in sec.items() if k in _SHARED_DATA}
        elif name == "audit":
            continue
        out[name] = sec
    return out


def consortium_digests(cfg: Config) -> dict[str, str]:
    """``{section: SHA-256}`` of :func:`consortium_sections`: what a party shows the coordinator so that a
    differing copy of the consortium's config is caught before anyone trains (no values travel)."""
    import hashlib
    import json

    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()
            for k, v in consortium_sections(cfg).items()}


def demo_config() -> Config:
    """The configuration of ``fedvault demo`` (also shipped as ``fl/configs/demo.toml``)."""
    return load(Path(__file__).parent / "configs" / "demo.toml")
