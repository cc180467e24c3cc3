"""README "[aggregation] threshold": "A value that is unsafe for the declared threat model, or above
the number of hospitals, is refused before the run" — i.e. by the config check that reports every
problem at once, before data is loaded, noise calibrated or anything is trained.
"""

from __future__ import annotations

import pytest

from fedvault.fl.config import from_dict
from fedvault.fl.errors import ConfigError


@pytest.mark.parametrize("n, threshold, threat", [(5, 2, {}), (7, 4, {"colluders": 2}), (6, 3, {"colluders": 1})])
def test_an_unsafe_secagg_threshold_is_refused_by_the_config_check(n, threshold, threat):
    with pytest.raises(ConfigError, match="unsafe"):
        from_dict({"data": {"hospitals": n}, "aggregation": {"mode": "secagg", "threshold": threshold},
                   "threat_model": threat})


def test_an_unmeetable_threat_model_is_refused_by_the_config_check():
    with pytest.raises(ConfigError, match="dropouts"):
        from_dict({"data": {"hospitals": 5}, "aggregation": {"mode": "secagg"},
                   "threat_model": {"colluders": 2, "dropouts": 2}})


def test_safe_and_derived_thresholds_and_the_shipped_configs_are_accepted():
    from pathlib import Path

    from fedvault.fl.config import load

    from_dict({"data": {"hospitals": 5}, "aggregation": {"mode": "secagg", "threshold": 3}})
    from_dict({"data": {"hospitals": 5}, "aggregation": {"mode": "secagg"}})
    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "examples").glob("*.toml")) + sorted((root / "fl" / "configs").glob("*.toml")):
        load(path)


def test_add_remove_is_refused_while_exact_counts_are_released():
    """README: every ε is stated for replace-one; ``"add_remove"`` is refused while exact record counts
    are released (n_k as FedAvg weights, q and steps)."""
    with pytest.raises(ConfigError, match="replace"):
        from_dict({"privacy": {"relation": "add_remove"}})
    assert from_dict({"privacy": {"relation": "replace_one"}}).privacy.relation == "replace_one"
