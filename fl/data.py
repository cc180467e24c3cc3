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
from typing import Any, Callable, Mapping, Sequence

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
    classes: list[str] = field(default_factory=list)  # class index -> name
    label_mapping: dict[str, str] = field(default_factory=dict)  # raw label as written -> class name
    # federated standardisation of the features before training; False for the user's own
    # tensors (from_arrays), which are used exactly as given (e.g. integer token ids)
    standardise: bool = True

    @classmethod
    def from_arrays(
        cls,
        hospitals: Mapping[str, tuple[Any, Any]],
        *,
        test: tuple[Any, Any] | None = None,
        holdout_fraction: float = 0.0,
        seed: int = 0,
    ) -> "FederatedData":
        """The federation's data from the user's own per-hospital arrays or tensors.

        Args:
            hospitals: ``{name: (X, y)}`` — numpy arrays or torch tensors with one row per
                record; every hospital's ``X`` has the same trailing shape and kind (real
                or integer: integer inputs such as token ids stay integers). ``y``: integer
                class ids (classification) or real values (regression).
            test: optional ``(X, y)`` held by the coordinator for global evaluation.
            holdout_fraction: share of each hospital's records kept for its own (site)
                evaluation (seeded by ``seed``; default none).

        The data are used exactly as given (no standardisation: prepare features before).
        ``n_classes`` is ``max(label) + 1`` for integer labels and 0 for real targets.

        Raises:
            DataError: empty or mismatched arrays, duplicate names, NaN/inf features.
        """
        return _from_arrays(hospitals, test, holdout_fraction, seed)

    def describe(self) -> dict[str, object]:
        """The history's ``data`` section: classes (index order) and how raw labels were read."""
        return {"classes": list(self.classes), "label_mapping": dict(self.label_mapping),
                "test_records": int(len(self.y_test))}

    @property
    def n_features(self) -> int:
        return int(self.X_test.shape[1])


def load(cfg: Config, warn: Callable[[str], None] | None = None) -> FederatedData:
    """Build the federation's data from the config (seeded, reproducible).

    ``warn`` receives advice that should not stop the study (default: ignored; the
    preflight collects it and ``fedvault run`` prints it before the first round).
    """
    if cfg.data.dataset == "csv":
        return _load_csvs(cfg, warn or (lambda _m: None))
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
        hospitals.append(with_holdout(f"hospital_{k}", X[idx], y[idx], cfg.data.test_fraction, rng))
    return FederatedData(hospitals, X[test_idx], y[test_idx], int(y.max()) + 1, names, shape, classes,
                         label_mapping={str(i): c for i, c in enumerate(classes)})


def _stratified_split(y: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    test, train = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(frac * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(test)), np.sort(np.concatenate(train))


def with_holdout(name: str, X: np.ndarray, y: np.ndarray, frac: float, rng: np.random.Generator) -> HospitalData:
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

MAX_PROBLEMS_PER_FILE = 5
DELIMITERS = ",;\t|"


@dataclass
class _CsvFile:
    """One parsed CSV: its features, the rows' values and raw label strings (or problems)."""

    path: Path
    features: list[str] = field(default_factory=list)
    X: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    labels: list[str] = field(default_factory=list)
    delimiter: str = ","
    problems: list[str] = field(default_factory=list)


def _sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: the one of , ; TAB | that splits it most (ties: ',')."""
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def read_csv(path: Path, label: str) -> _CsvFile:
    """Parse one hospital's CSV, collecting (up to a few) problems instead of stopping at the first.

    Excel's UTF-8 byte-order mark is ignored; the delimiter (, ; TAB |) is taken from the
    header line. Labels stay raw strings here; :func:`label_mapping` decides the classes.
    """
    out = _CsvFile(path)
    if not path.is_file():
        out.problems.append(f"CSV file {str(path)!r} not found; check data.csv in the config")
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drop Excel's byte-order mark
    except UnicodeDecodeError:
        out.problems.append(f"{path}: not UTF-8 text; save the CSV as UTF-8 (in Excel: 'CSV UTF-8')")
        return out
    out.delimiter = _sniff_delimiter(text)
    rows = [r for r in csv.reader(text.splitlines(), delimiter=out.delimiter) if any(c.strip() for c in r)]
    if not rows:
        out.problems.append(f"{path}: the file is empty; it needs a header row and at least one record")
        return out
    header = [h.strip() for h in rows[0]]
    if label not in header:
        near = [h for h in header if h.lower() == label.lower()]
        hint = f"; did you mean {near[0]!r}?" if near else ""
        out.problems.append(
            f"{path}: no label column {label!r}{hint} (columns: {', '.join(header[:8])}{', ...' if len(header) > 8 else ''}); "
            "set data.label to the name of the label column"
        )
        return out
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        out.problems.append(f"{path}: duplicate column names {dupes} in the header; make every column name unique")
        return out
    body = rows[1:]
    if not body:
        out.problems.append(f"{path}: has a header but no rows; every hospital needs at least one record")
        return out
    li = header.index(label)
    out.features = [h for i, h in enumerate(header) if i != li]
    X = np.empty((len(body), len(out.features)), dtype=np.float64)
    bad = 0

    def problem(msg: str) -> None:
        nonlocal bad
        bad += 1
        if bad <= MAX_PROBLEMS_PER_FILE:
            out.problems.append(msg)

    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            problem(f"{path}, line {r}: {len(row)} fields but the header has {len(header)}; fix that row")
            continue
        lab = row[li].strip()
        if not lab:
            problem(f"{path}, line {r}: the label {label!r} is empty; label every record or drop the row")
        out.labels.append(lab)
        vals = [c for i, c in enumerate(row) if i != li]
        for j, v in enumerate(vals):
            try:
                x = float(v)
            except ValueError:
                problem(
                    f"{path}, line {r}, column {out.features[j]!r}: {v!r} is not a number; features must be numeric "
                    "(encode categories as numbers)"
                )
                continue
            if not math.isfinite(x):
                problem(
                    f"{path}, line {r}, column {out.features[j]!r}: {v!r} is missing or not finite; "
                    "impute or drop rows with missing values before federating"
                )
                continue
            X[r - 2, j] = x
    if bad > MAX_PROBLEMS_PER_FILE:
        out.problems.append(f"{path}: ... and {bad - MAX_PROBLEMS_PER_FILE} more problems like these")
    out.X = X
    return out


def _as_number(s: str) -> float | None:
    try:
        x = float(s)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _declared_mapping(distinct: list[str], column: str, classes: list[str]) -> tuple[list[str], dict[str, int]]:
    """``label_mapping`` against the declared ``data.classes``."""
    values = [_as_number(c) for c in classes]
    numeric = all(v is not None for v in values)
    mapping: dict[str, int] = {}
    unknown = []
    for l in distinct:
        if numeric and _as_number(l) is not None:
            hit = [i for i, v in enumerate(values) if v == _as_number(l)]
        else:
            hit = [i for i, c in enumerate(classes) if c.strip() == l.strip()]
        if hit:
            mapping[l] = hit[0]
        else:
            unknown.append(l)
    if unknown:
        raise DataError(f"label column {column!r} has value(s) {', '.join(map(repr, unknown[:5]))} that are not in "
                        f"data.classes {classes}; add them to data.classes or correct the file")
    return list(classes), mapping


def label_mapping(raw_labels: list[str], column: str, classes: Sequence[str] = ()) -> tuple[list[str], dict[str, int]]:
    """Classes (names) and ``{raw label: class index}`` for the label values of every file.

    ``classes`` (``data.classes``): the study's declared classes, in index order. Every raw
    label must then be one of them (numbers compared as numbers when every declared class is
    a number), and a file need not hold every class: a deployed hospital maps its own file
    alone and reveals nothing about which classes it holds.

    * Numeric labels are compared as numbers: ``1``, ``1.0`` and `` 1 `` are one class, named
      ``"1"``; classes are ordered by value.
    * Text labels are classes as written, ordered alphabetically.
    * Ambiguous sets are refused with the fix: numbers mixed with text (``0``/``1`` and
      ``"yes"``), or text labels that differ only in case or spacing (``Benign``/``benign``).
    """
    distinct = sorted(set(raw_labels))
    if classes:
        return _declared_mapping(distinct, column, list(classes))
    numbers = {l: _as_number(l) for l in distinct}
    num = [l for l in distinct if numbers[l] is not None]
    txt = [l for l in distinct if numbers[l] is None]
    if num and txt:
        raise DataError(
            f"label column {column!r} mixes numbers ({', '.join(num[:4])}) and text ({', '.join(map(repr, txt[:4]))}); "
            "write every label the same way in every file (e.g. all 0/1, or all text)"
        )
    if num:
        values = sorted({numbers[l] for l in num})
        name = {v: (str(int(v)) if float(v).is_integer() else repr(v)) for v in values}
        classes = [name[v] for v in values]
        index = {v: i for i, v in enumerate(values)}
        mapping = {l: index[numbers[l]] for l in num}
        if len(values) > 20 and not all(float(v).is_integer() for v in values):
            raise DataError(
                f"label column {column!r} has {len(values)} distinct non-integer values; it looks like a measurement, "
                "not a class. fedvault trains classifiers: bin it into classes, or choose another data.label"
            )
        return classes, mapping
    folded: dict[str, list[str]] = {}
    for l in txt:
        folded.setdefault(" ".join(l.lower().split()), []).append(l)
    clash = [v for v in folded.values() if len(v) > 1]
    if clash:
        raise DataError(
            f"label column {column!r}: {' / '.join(map(repr, clash[0]))} differ only in case or spacing and would "
            "become separate classes; write each class the same way in every file"
        )
    return txt, {l: i for i, l in enumerate(txt)}


def _load_csvs(cfg: Config, warn: Callable[[str], None]) -> FederatedData:
    base = Path(cfg.base_dir)
    rng = np.random.default_rng(cfg.seed)

    def resolve(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base / p

    files = [read_csv(resolve(p), cfg.data.label) for p in cfg.data.csv]
    test = read_csv(resolve(cfg.data.test_csv), cfg.data.label) if cfg.data.test_csv else None
    problems = [m for f in files + ([test] if test else []) for m in f.problems]
    good = [f for f in files + ([test] if test else []) if not f.problems]
    if good:
        ref = good[0]
        for f in good[1:]:
            if f.features != ref.features:
                missing = sorted(set(ref.features) - set(f.features))
                extra = sorted(set(f.features) - set(ref.features))
                detail = f"missing {missing}" if missing else ""
                detail += (", " if detail and extra else "") + (f"extra {extra}" if extra else "")
                problems.append(
                    f"{f.path}: columns differ from {ref.path} ({detail or 'same names in a different order'}); "
                    "every hospital's CSV (and the test CSV) needs the same columns"
                )
    names = [f.path.stem for f in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        problems.append(f"hospital CSV files share a file name {dup}; give each hospital's file a distinct name "
                        "(the name identifies the hospital)")
    if problems:
        raise DataError.collect(problems, what="the data")
    all_raw = [l for f in files for l in f.labels] + (test.labels if test else [])
    classes, cmap = label_mapping(all_raw, cfg.data.label, cfg.data.classes)
    if len(classes) < 2:
        raise DataError(f"label column {cfg.data.label!r} has a single value {classes}; a classifier needs >= 2 classes")
    train_classes = {cmap[l] for f in files for l in f.labels}
    if test is not None:
        unseen = sorted({classes[cmap[l]] for l in test.labels} - {classes[c] for c in train_classes})
        if unseen:
            warn(f"the test CSV has classes no hospital has ({', '.join(unseen)}); the model can never predict them")
    hospitals, test_X, test_y = [], [], []
    for f in files:
        y = np.array([cmap[l] for l in f.labels], dtype=np.int64)
        h = with_holdout(f.path.stem, f.X, y, cfg.data.test_fraction, rng)
        if test is None:
            # Without a test CSV the held-out records also form the global test set.
            test_X.append(h.X_val)
            test_y.append(h.y_val)
        hospitals.append(h)
    if test is not None:
        X_test, y_test = test.X, np.array([cmap[l] for l in test.labels], dtype=np.int64)
    else:
        X_test, y_test = np.concatenate(test_X), np.concatenate(test_y)
    return FederatedData(hospitals, X_test, y_test, len(classes), files[0].features, None, classes,
                         label_mapping={l: classes[i] for l, i in sorted(cmap.items())})


# --------------------------------------------------------------------------- user arrays


def _array(a: Any, what: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor (no torch import needed here)
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numeric arrays or tensors, got dtype {arr.dtype}")
    if arr.ndim < 1 or len(arr) == 0:
        raise DataError(f"{what} is empty; give at least one record")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{what} contains NaN or infinity")
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    return arr.astype(np.int64)


def _from_arrays(hospitals: Mapping[str, tuple[Any, Any]], test: tuple[Any, Any] | None, frac: float,
                 seed: int) -> FederatedData:
    if not isinstance(hospitals, Mapping) or not hospitals:
        raise DataError("hospitals must be a non-empty mapping {name: (X, y)}")
    if not 0.0 <= frac < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {frac!r}")
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, xy in hospitals.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"hospital names must be non-empty strings, got {name!r}")
        X, y = _array(xy[0], f"{name}: X"), _array(xy[1], f"{name}: y")
        if len(X) != len(y):
            raise DataError(f"{name}: X has {len(X)} records but y has {len(y)}")
        pairs[name] = (X, y)
    first = next(iter(pairs.values()))
    for name, (X, y) in pairs.items():
        if X.shape[1:] != first[0].shape[1:] or X.dtype != first[0].dtype:
            raise DataError(f"{name}: X has shape (n, {X.shape[1:]}) and dtype {X.dtype}, "
                            f"the first hospital (n, {first[0].shape[1:]}) and {first[0].dtype}; make them agree")
        if y.shape[1:] != first[1].shape[1:] or y.dtype.kind != first[1].dtype.kind:
            raise DataError(f"{name}: targets differ in shape or kind from the first hospital's")
    if test is not None:
        X_test, y_test = _array(test[0], "test X"), _array(test[1], "test y")
        if len(X_test) != len(y_test) or X_test.shape[1:] != first[0].shape[1:]:
            raise DataError("test (X, y) must have as many targets as records and the hospitals' record shape")
    else:
        X_test, y_test = first[0][:0], first[1][:0]
    rng = np.random.default_rng(seed)
    hs = [with_holdout(name, X, y, frac, rng) for name, (X, y) in pairs.items()]
    ys = [y for _, y in pairs.values()] + [y_test]
    n_classes = int(max(int(y.max()) for y in ys if len(y)) + 1) if first[1].dtype.kind in "biu" else 0
    width = int(np.prod(first[0].shape[1:])) if first[0].ndim > 1 else 1
    return FederatedData(hs, X_test, y_test, n_classes, [f"x{i}" for i in range(width)], standardise=False)
