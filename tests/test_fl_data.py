"""Data loading, Dirichlet split and federated standardisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedvault.fl import data as data_mod
from fedvault.fl.aggregation import PlaintextAggregator
from fedvault.fl.config import from_dict
from fedvault.fl.errors import DataError
from fedvault.fl.stats import federated_standardise


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(60, 400),
    k=st.integers(2, 8),
    alpha=st.floats(0.1, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_partition_is_a_partition(n, k, alpha, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    try:
        parts = data_mod.dirichlet_partition(y, k, alpha, 5, rng)
    except DataError:
        return  # could not meet min_records: refused, not silently wrong
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n))
    assert all(len(p) >= 5 for p in parts)


def test_small_alpha_is_skewed_large_alpha_is_not():
    y = np.repeat([0, 1], 500)

    def spread(alpha):
        parts = data_mod.dirichlet_partition(y, 5, alpha, 10, np.random.default_rng(0))
        fr = [y[p].mean() for p in parts]
        return max(fr) - min(fr)

    assert spread(0.3) > 0.4
    assert spread(1000.0) < 0.1


def test_builtin_split_is_seeded_and_disjoint():
    cfg = from_dict({"seed": 3, "data": {"hospitals": 4}})
    a, b = data_mod.load(cfg), data_mod.load(cfg)
    for ha, hb in zip(a.hospitals, b.hospitals):
        assert np.array_equal(ha.X, hb.X) and np.array_equal(ha.y, hb.y)
    total = sum(h.n + len(h.y_val) for h in a.hospitals) + len(a.y_test)
    assert total == 569
    assert a.n_classes == 2 and a.n_features == 30


def test_federated_standardisation_equals_pooled_statistics():
    cfg = from_dict({"seed": 5, "data": {"hospitals": 4}})
    fd = data_mod.load(cfg)
    pooled = np.concatenate([h.X for h in fd.hospitals])
    mean, std = federated_standardise(fd, PlaintextAggregator())
    np.testing.assert_allclose(mean, pooled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, pooled.std(0), rtol=1e-6)
    z = np.concatenate([h.X for h in fd.hospitals])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_too_many_hospitals_is_refused():
    cfg = from_dict({"data": {"hospitals": 50, "min_records": 40}})
    with pytest.raises(DataError, match="fewer hospitals"):
        data_mod.load(cfg)


# --------------------------------------------------------------------------- CSV correctness

from fedvault.fl.errors import ConfigError  # noqa: E402
from fedvault.fl.preflight import prepare  # noqa: E402


def _csv(path, header, rows, *, sep=",", bom=False):
    text = "\n".join([sep.join(header)] + [sep.join(map(str, r)) for r in rows]) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path.name


def _rows(n, seed, labels=("0", "1")):
    rng = np.random.default_rng(seed)
    return [[f"{rng.normal(50, 10):.2f}", f"{rng.normal():.3f}", labels[i % len(labels)]] for i in range(n)]


def _cfg(tmp_path, files, **data):
    return from_dict({"data": {"dataset": "csv", "csv": files, "label": "y", **data},
                      "privacy": {"enabled": False}, "aggregation": {"mode": "plaintext"}}, base_dir=tmp_path)


def test_numeric_labels_are_compared_as_numbers_and_the_mapping_is_recorded(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(30, 1, ("1", "0")))
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(30, 2, ("1.0", "0.0", " 1 ")))
    fd = data_mod.load(_cfg(tmp_path, [a, b]))
    assert fd.n_classes == 2 and fd.classes == ["0", "1"]
    assert fd.label_mapping == {"0": "0", "0.0": "0", "1": "1", "1.0": "1"}  # " 1 " is read as "1"
    assert fd.describe()["classes"] == ["0", "1"]


def test_numbers_mixed_with_text_labels_are_refused(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(30, 1, ("1", "0")))
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(30, 2, ("yes", "no")))
    with pytest.raises(DataError, match="mixes numbers .* and text"):
        data_mod.load(_cfg(tmp_path, [a, b]))


def test_labels_differing_only_in_case_are_refused(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(30, 1, ("Benign", "malignant")))
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(30, 2, ("benign", "malignant")))
    with pytest.raises(DataError, match="differ only in case"):
        data_mod.load(_cfg(tmp_path, [a, b]))


def test_declared_classes_fix_the_order_and_refuse_other_labels(tmp_path):
    """data.classes: the study's classes in the declared order; a file holding only some of them is fine,
    a label outside them is refused with the fix; numbers are still compared as numbers."""
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(30, 1, ("malignant", "benign")))
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(30, 2, ("benign",)))
    fd = data_mod.load(_cfg(tmp_path, [a, b], classes=["malignant", "benign"]))
    assert fd.classes == ["malignant", "benign"] and fd.n_classes == 2
    assert set(fd.hospitals[1].y.tolist()) | set(fd.hospitals[1].y_val.tolist()) == {1}
    with pytest.raises(DataError, match="not in data.classes"):
        data_mod.load(_cfg(tmp_path, [a, b], classes=["malignant", "normal"]))
    classes, cmap = data_mod.label_mapping(["1.0", "0", " 2 "], "y", ["0", "1", "2"])
    assert classes == ["0", "1", "2"] and cmap == {"1.0": 1, "0": 0, " 2 ": 2}
    with pytest.raises(ConfigError, match="data.classes"):
        _cfg(tmp_path, [a, b], classes=["benign"])


def test_excel_bom_and_semicolons_are_read(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(30, 1), bom=True)
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(30, 2), sep=";")
    fd = data_mod.load(_cfg(tmp_path, [a, b]))
    assert fd.feature_names == ["age", "m"] and [h.name for h in fd.hospitals] == ["a", "b"]


def test_every_data_problem_of_every_file_is_reported(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(10, 1) + [["fifty", "0.1", "1"]])
    b = _csv(tmp_path / "b.csv", ["age", "m", "label"], _rows(10, 2))
    with pytest.raises(DataError) as e:
        data_mod.load(_cfg(tmp_path, [a, b]))
    assert len(e.value.problems) == 2
    assert "not a number" in str(e.value) and "no label column 'y'" in str(e.value)


def test_with_a_test_csv_nothing_is_withheld_by_default(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(30, 1))
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(20, 2))
    t = _csv(tmp_path / "t.csv", ["age", "m", "y"], _rows(15, 3))
    fd = data_mod.load(_cfg(tmp_path, [a, b], test_csv=t))
    assert [h.n for h in fd.hospitals] == [30, 20] and all(len(h.y_val) == 0 for h in fd.hospitals)
    assert len(fd.y_test) == 15
    fd = data_mod.load(_cfg(tmp_path, [a, b], test_csv=t, test_fraction=0.2))
    assert [len(h.y_val) for h in fd.hospitals] == [6, 4]


def test_a_tiny_hospital_is_warned_about_with_its_dp_consequence(tmp_path):
    a = _csv(tmp_path / "a.csv", ["age", "m", "y"], _rows(60, 1))
    b = _csv(tmp_path / "b.csv", ["age", "m", "y"], _rows(1, 2))
    t = _csv(tmp_path / "t.csv", ["age", "m", "y"], _rows(15, 3))
    cfg = from_dict({"data": {"dataset": "csv", "csv": [a, b], "label": "y", "test_csv": t},
                     "privacy": {"noise_multiplier": 1.0, "standardise": "none"}, "aggregation": {"mode": "plaintext"}},
                    base_dir=tmp_path)
    ready = prepare(cfg)
    w = [m for m in ready.warnings if "'b'" in m]
    assert w and "only 1 training record" in w[0] and "ε grows fastest" in w[0]
