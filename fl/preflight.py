"""Everything checked before a study starts: config, output paths, data, feasibility.

A study that cannot succeed must fail before any hospital trains and before any ε is
spent, and it must say everything that is wrong at once. :func:`prepare` (used by
``fedvault run`` / ``demo``) and :func:`prepare_file` run, in this order, collecting
every problem into one :class:`~fl.errors.ConfigError`:

1. the config (:mod:`fl.config`: types, ranges, unknown keys with "did you mean",
   contradictions between keys);
2. output paths (``--output`` under an existing file, a directory, no permission);
3. the data (:mod:`fl.data`: every CSV problem of every file, label sets);
4. feasibility with the data in hand: every function registered with
   :func:`preflight_check` — noise calibration, ring size of secure aggregation,
   tiny hospitals, and the checks other parts add (privacy, threat model).

Adding a check: write ``def _my_check(cfg, data) -> Iterable[str]`` yielding one message
per problem (``warning("...")`` for advice that should not stop the run), decorate it
with ``@preflight_check`` in this module, and it runs for every study. Checks that need
only the config belong in :mod:`fl.config` (``@config_check``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from fedvault.fl.config import Config, DataConfig, Problems, parse, read_toml, warning
from fedvault.fl.errors import FLError
from fedvault.fl.progress import progress

PreflightCheck = Callable[[Config, Any], Iterable[str]]  # (cfg, fl.data.FederatedData)
PREFLIGHT_CHECKS: list[PreflightCheck] = []


def preflight_check(fn: PreflightCheck) -> PreflightCheck:
    """Register a feasibility check ``fn(cfg, data)`` that yields one message per problem."""
    PREFLIGHT_CHECKS.append(fn)
    return fn


@dataclass
class Ready:
    """A study that passed every check: its config, its data and the warnings to show."""

    cfg: Config
    data: Any  # fl.data.FederatedData
    warnings: list[str] = field(default_factory=list)


def output_problems(path: str | os.PathLike[str] | None, *, kind: str = "file", option: str = "--output") -> list[str]:
    """Why ``path`` cannot be written (as a ``kind`` = "file" or "dir"), or ``[]``."""
    if path is None:
        return []
    path = Path(path)
    example = "history.json" if kind == "file" else "report-dir"
    if path.exists():
        if kind == "file" and path.is_dir():
            return [f"{option} {path} is a directory; give a file name such as {path / example}"]
        if kind == "dir" and not path.is_dir():
            return [f"{option} {path} is a file; give a folder name such as {path.with_suffix('')}-{example}"]
        if not os.access(path, os.W_OK):
            return [f"{option} {path}: no permission to write it; choose another path"]
        return []
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return [f"{option} {path}: {anc} is a file, so the folder {path.parent} cannot be created; choose another path"]
    if not os.access(anc, os.W_OK | os.X_OK):
        return [f"{option} {path}: no permission to create files in {anc}; choose another path"]
    return []


def prepare(
    cfg: Config,
    *,
    outputs: Iterable[tuple[str | os.PathLike[str] | None, str, str]] = (),
    data: Any = None,
    problems: Problems | None = None,
    quiet: bool = False,
    what: str = "the study",
) -> Ready:
    """Check a parsed study end to end; raise one ConfigError listing every problem.

    ``outputs``: ``(path, kind, option)`` triples to check, e.g. ``[(p, "file", "--output")]``.
    ``problems``: problems already found (e.g. while parsing the config) to report together.
    """
    p = problems if problems is not None else Problems()
    for path, kind, option in outputs:
        for m in output_problems(path, kind=kind, option=option):
            p.error(m)
    config_ok = not p.errors
    data_ok = not _section_problems(cfg.data)
    fd = data
    if fd is None and data_ok:
        from fedvault.fl import data as data_mod

        try:
            fd = data_mod.load(cfg, warn=p.warn)
        except FLError as e:
            for m in e.problems or [str(e)]:
                p.error(m)
            fd = None
    ready = Ready(cfg, fd)
    if fd is not None and config_ok:
        for check in PREFLIGHT_CHECKS:
            p.run(check, cfg, fd)
    p.raise_if_any(what=what)
    ready.warnings = list(p.warnings)
    return ready


def prepare_file(
    path: str | os.PathLike[str], *, outputs: Iterable[tuple[Any, str, str]] = (), seed: int | None = None,
    quiet: bool = False,
) -> Ready:
    """:func:`prepare` for a TOML file: config problems, output paths and data problems reported together."""
    raw = read_toml(path)
    if seed is not None:
        raw = {**raw, "seed": seed}
    cfg, p = parse(raw, base_dir=Path(path).resolve().parent)
    return prepare(cfg, outputs=outputs, problems=p, quiet=quiet, what=str(path))


def _section_problems(section: Any) -> list[str]:
    p = Problems()
    p.run(lambda: section.check(p))
    return p.errors


# --------------------------------------------------------------------------- feasibility checks


def _sample_rate(cfg: Config, n: int) -> float:
    """DP-SGD's Poisson sample rate for a hospital with ``n`` records: 1/ceil(n/B)."""
    return 1.0 / max(1, math.ceil(n / cfg.training.batch_size))


@preflight_check
def _privacy_plan(cfg: Config, fd: Any) -> Iterator[str]:
    """The privacy part's checks (:mod:`dp.checks`): δ below 1/n_k, a σ that reaches target ε
    for every hospital's planned steps, planned rounds within a fixed-σ budget."""
    p = cfg.privacy
    if not p.enabled:
        return
    from fedvault.dp.checks import check_delta, check_plan
    from fedvault.fl.stats import planned_releases, range_problems

    bad_ranges = range_problems(cfg, fd.n_features)  # standardisation needs public ranges (helper D)
    if bad_ranges:
        yield from bad_ranges
        return
    extra = planned_releases(cfg, fd.n_features)  # DP feature statistics, charged before training
    records = {h.name: h.n for h in fd.hospitals if h.n >= 1}
    bad_delta = check_delta(p.delta, records)
    if bad_delta:
        yield from bad_delta
        return
    t = cfg.training
    # Personalisation is paid from the same budget: count its epochs as extra steps.
    if cfg.personalization.enabled:
        rounds, epochs = t.rounds * t.local_epochs + cfg.personalization.epochs, 1
    else:
        rounds, epochs = t.rounds, t.local_epochs
    # With client sampling a hospital expects fewer rounds than planned; a fixed-σ budget
    # then is a limit it may never reach, not an infeasible plan.
    budget = p.budget if t.client_fraction >= 1.0 else None
    desc = "calibrating noise" if p.target_epsilon is not None else "checking the privacy plan"
    with progress(total=len(records), desc=desc, unit="hospital") as bar:
        for name, n in records.items():
            yield from check_plan({name: n}, delta=p.delta, batch_size=t.batch_size, epochs=epochs, rounds=rounds,
                                  relation=getattr(p, "relation", "add_remove"), accountant=p.accountant,
                                  target_epsilon=p.target_epsilon, noise_multiplier=p.noise_multiplier,
                                  budget_epsilon=budget, extra_events=extra)
            bar.update(1)


@preflight_check
def _small_hospitals(cfg: Config, fd: Any) -> Iterator[str]:
    """Warn about hospitals too small to train usefully, and say what DP does to them."""
    for h in fd.hospitals:
        n = h.n
        if n == 0:
            yield (f"hospital {h.name!r} has no training records (all {len(h.y_val)} held out); "
                   "lower data.test_fraction or give it more records")
            continue
        batch = min(n, cfg.training.batch_size)
        if n >= 20 and batch >= 8:
            continue
        q = _sample_rate(cfg, n)
        msg = (f"hospital {h.name!r} has only {n} training record{'s' if n != 1 else ''}: it takes part, but "
               f"its update weighs {n} against the others' and is mostly noise")
        if cfg.privacy.enabled:
            msg += (f" (DP-SGD samples its records at rate q = {q:.2f}, so every step touches most of them; "
                    f"its per-step noise std σ·C/{batch} is large next to the clipped signal C")
            if cfg.privacy.target_epsilon is not None:
                msg += " and σ is calibrated higher to keep ε on target)"
            else:
                msg += f"; with a fixed noise_multiplier its ε grows fastest of all hospitals)"
        msg += "; merge it with another site or leave it out for a useful model"
        yield warning(msg)


@preflight_check
def _ring_fits(cfg: Config, fd: Any) -> Iterator[str]:
    """Secure aggregation: the sum of every hospital's largest update must fit the ring, with precision."""
    if cfg.aggregation.mode not in ("masked", "secagg") or not fd.hospitals:
        return
    from fedvault.secagg.encoding import FixedPointEncoder
    from fedvault.secagg.errors import ParameterError

    n = len(fd.hospitals)
    bits = cfg.aggregation.bits
    if cfg.privacy.client_noise_multiplier is not None:
        return  # the distributed-DP plan sizes the ring itself (and explains when it cannot)
    weight_cap = float(2 ** math.ceil(math.log2(max(h.n for h in fd.hospitals) + 1)))
    clip = weight_cap * cfg.aggregation.update_clip
    try:
        enc = FixedPointEncoder(clip=clip, bits=bits, max_summands=n)
    except ParameterError:
        yield (f"aggregation.bits = {bits} is too small: {n} hospitals each sending updates up to "
               f"{clip:g} (record count bound {weight_cap:g} × update_clip {cfg.aggregation.update_clip:g}) "
               f"overflow the ring; raise aggregation.bits (e.g. {min(64, bits + 16)}) or lower update_clip")
        return
    total = sum(h.n for h in fd.hospitals)
    err = enc.error_bound(n) / max(total, 1)
    if err > 1e-4:
        yield warning(f"aggregation.bits = {bits} leaves {enc.fractional_bits} fractional bits: the averaged update "
                      f"may be off by up to {err:.1e} per weight from rounding; raise aggregation.bits")
