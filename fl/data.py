"""Hospital data: built-in clinical data sets split non-IID, or one CSV per hospital.

Nothing is downloaded: the built-in sets ship with scikit-learn (Wisconsin breast
cancer: 569 patients, 30 features, benign/malignant; 8x8 digits as a stand-in for
small medical images). Users bring one CSV per hospital with a named label column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fedvault.fl.config import Config
from fedvault.fl.errors import DataError


@dataclass
class HospitalData:
    """One hospital's records. ``X_val``/``y_val`` is its own held-out split (site evaluation)."""

    name: str
    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


@dataclass
class FederatedData:
    hospitals: list[HospitalData]
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    feature_names: list[str]
    image_shape: tuple[int, ...] | None = None
    classes: list[str] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return int(self.X_test.shape[1])


def load(cfg: Config, warn: Callable[[str], None] | None = None) -> FederatedData:
    """Build the federation's data from the config (seeded, reproducible).

    ``warn`` receives advice that should not stop the study (default: ignored; the
    preflight collects it and ``fedvault run`` prints it before the first round).
    """
    if cfg.data.dataset == "csv":
        return _load_csvs(cfg)
    return _load_builtin(cfg)


# --------------------------------------------------------------------------- built-in


def _builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray, list[str], tuple[int, ...] | None, list[str]]:
    from sklearn import datasets

    if name == "breast_cancer":
        b = datasets.load_breast_cancer()
        return b.data.astype(np.float64), b.target.astype(np.int64), list(b.feature_names), None, list(b.target_names)
    if name == "digits":
        b = datasets.load_digits()
        return b.data.astype(np.float64), b.target.astype(np.int64), [f"px{i}" for i in range(64)], (1, 8, 8), [
            str(c) for c in b.target_names
        ]
    raise DataError(f"unknown dataset {name!r}")


def _load_builtin(cfg: Config) -> FederatedData:
    X, y, names, shape, classes = _builtin_arrays(cfg.data.dataset)
    rng = np.random.default_rng(cfg.seed)
    test_idx, train_idx = _stratified_split(y, cfg.data.test_fraction, rng)
    parts = dirichlet_partition(
        y[train_idx], cfg.data.hospitals, cfg.data.dirichlet_alpha, cfg.data.min_records, rng
    )
    hospitals = []
    for k, part in enumerate(parts):
        idx = train_idx[part]
        hospitals.append(_with_holdout(f"hospital_{k}", X[idx], y[idx], cfg.data.test_fraction, rng))
    return FederatedData(hospitals, X[test_idx], y[test_idx], int(y.max()) + 1, names, shape, classes)


def _stratified_split(y: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    test, train = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(frac * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(test)), np.sort(np.concatenate(train))


def _with_holdout(name: str, X: np.ndarray, y: np.ndarray, frac: float, rng: np.random.Generator) -> HospitalData:
    """Hold a seeded fraction of a hospital's records out for its own (site) evaluation."""
    idx = rng.permutation(len(y))
    k = min(int(round(frac * len(y))), max(len(y) - 2, 0))
    return HospitalData(name, X[idx[k:]], y[idx[k:]], X[idx[:k]], y[idx[:k]])


def dirichlet_partition(
    y: np.ndarray, hospitals: int, alpha: float, min_records: int, rng: np.random.Generator, tries: int = 1000
) -> list[np.ndarray]:
    """Split record indices across hospitals with label proportions ~ Dirichlet(alpha).

    For each class c, proportions p_c ~ Dir(alpha * 1_K) decide how its records are
    dealt to the K hospitals; small alpha gives skewed (non-IID) label mixes. Draws are
    repeated until every hospital holds at least ``min_records`` records.
    """
    n = len(y)
    if hospitals * min_records > n:
        raise DataError(
            f"{hospitals} hospitals x min_records={min_records} needs {hospitals * min_records} records "
            f"but only {n} are available for training; use fewer hospitals or a smaller data.min_records"
        )
    classes = np.unique(y)
    for _ in range(tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(hospitals)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(hospitals, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(o) for o in out) >= min_records:
            return out
    raise DataError(
        f"could not split the data so that each of {hospitals} hospitals has {min_records} records "
        f"with dirichlet_alpha={alpha}; raise data.dirichlet_alpha or lower data.min_records"
    )


# --------------------------------------------------------------------------- CSV


def _read_csv(path: Path, label: str) -> tuple[list[str], np.ndarray, list[str]]:
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} not found; check data.csv in the config")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one record")
    header = [h.strip() for h in rows[0]]
    if label not in header:
        raise DataError(
            f"{path}: no label column {label!r} (columns: {', '.join(header[:8])}{', ...' if len(header) > 8 else ''}); "
            "set data.label to the name of the label column"
        )
    if len(set(header)) != len(header):
        raise DataError(f"{path}: duplicate column names in the header; make every column name unique")
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: has a header but no rows; every hospital needs at least one record")
    li = header.index(label)
    features = [h for i, h in enumerate(header) if i != li]
    X = np.empty((len(body), len(features)), dtype=np.float64)
    labels = []
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {r}: {len(row)} fields but the header has {len(header)}; fix that row")
        labels.append(row[li].strip())
        vals = [c for i, c in enumerate(row) if i != li]
        for j, v in enumerate(vals):
            try:
                x = float(v)
            except ValueError:
                raise DataError(
                    f"{path}, line {r}, column {features[j]!r}: {v!r} is not a number; features must be numeric "
                    "(encode categories as numbers)"
                ) from None
            if not math.isfinite(x):
                raise DataError(
                    f"{path}, line {r}, column {features[j]!r}: {v!r} is missing or not finite; "
                    "impute or drop rows with missing values before federating"
                )
            X[r - 2, j] = x
    return features, X, labels


def _load_csvs(cfg: Config) -> FederatedData:
    base = Path(cfg.base_dir)
    rng = np.random.default_rng(cfg.seed)
    loaded = []
    for p in cfg.data.csv:
        path = (base / p) if not Path(p).is_absolute() else Path(p)
        loaded.append((path, *_read_csv(path, cfg.data.label)))
    features0 = loaded[0][1]
    for path, feats, _, _ in loaded[1:]:
        if feats != features0:
            missing = sorted(set(features0) - set(feats))
            extra = sorted(set(feats) - set(features0))
            detail = f"missing {missing}" if missing else ""
            detail += (", " if detail and extra else "") + (f"extra {extra}" if extra else "")
            if not detail:
                detail = "same names in a different order"
            raise DataError(
                f"{path}: columns differ from {loaded[0][0]} ({detail}); every hospital's CSV needs the same columns"
            )
    test = None
    if cfg.data.test_csv:
        tp = Path(cfg.data.test_csv)
        tp = tp if tp.is_absolute() else base / tp
        tf, tX, tl = _read_csv(tp, cfg.data.label)
        if tf != features0:
            raise DataError(f"{tp}: columns differ from the hospitals' CSVs; the test CSV needs the same columns")
        test = (tX, tl)
    all_labels = sorted({l for _, _, _, ls in loaded for l in ls} | (set(test[1]) if test else set()), key=_label_key)
    if len(all_labels) < 2:
        raise DataError(f"label column {cfg.data.label!r} has a single value {all_labels}; a classifier needs >= 2 classes")
    cmap = {l: i for i, l in enumerate(all_labels)}
    hospitals, test_X, test_y = [], [], []
    for k, (path, _, X, labels) in enumerate(loaded):
        y = np.array([cmap[l] for l in labels], dtype=np.int64)
        name = path.stem
        if test is None:
            h = _with_holdout(name, X, y, cfg.data.test_fraction, rng)
            # Without a test CSV the held-out records also form the global test set.
            test_X.append(h.X_val)
            test_y.append(h.y_val)
        else:
            h = _with_holdout(name, X, y, cfg.data.test_fraction, rng)
        hospitals.append(h)
    names = [h.name for h in hospitals]
    if len(set(names)) != len(names):
        raise DataError("two hospital CSV files share a file name; give each hospital's file a distinct name")
    if test is not None:
        X_test, y_test = test[0], np.array([cmap[l] for l in test[1]], dtype=np.int64)
    else:
        X_test, y_test = np.concatenate(test_X), np.concatenate(test_y)
    return FederatedData(hospitals, X_test, y_test, len(all_labels), features0, None, all_labels)


def _label_key(l: str) -> tuple[int, float | str]:
    try:
        return (0, float(l))
    except ValueError:
        return (1, l)
