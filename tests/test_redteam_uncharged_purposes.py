"""Red team: the server chooses a session's purpose, so a hospital must gate what it releases
by its OWN config, not by the server's good behaviour (issue 13 items 2 and 5).

Before the fix, a hospital whose config says ``site_metrics = "off"`` and
``standardise = "public"`` (nothing released, nothing charged) answered

* a ``"stats"`` session with its exact ``[n_k, Σx, Σx²]`` (uncharged; one patient's features
  come back from two such sums), and
* an ``"eval"`` session with its exact held-out loss/accuracy sums of any model the server
  chose (uncharged; an oracle on held-out patients),

and answered ``personalise`` — exact held-out metrics of a server-chosen model — every time
it was asked, even with personalisation off.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedvault.fl import data as data_mod, models
from fedvault.fl.config import from_dict
from fedvault.fl.engine import make_mode, open_session
from fedvault.fl.hospital import Hospital, SetupRejected


def _setup(purpose: str, dim: int, **privacy):
    cfg = from_dict({"seed": 11, "data": {"hospitals": 3, "min_records": 20}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0, "standardise": "public", "site_metrics": "off", **privacy},
                     "aggregation": {"mode": "plaintext"}})
    fd = data_mod.load(cfg)
    make = lambda: models.build(cfg.model, fd.n_features, fd.n_classes)  # noqa: E731
    names = [h.name for h in fd.hospitals]
    ids = {n: i + 1 for i, n in enumerate(names)}
    h = Hospital(fd.hospitals[0], cfg, make, 0, 1.0, party=1)
    setup, _ = open_session(cfg, make_mode(cfg, ids), 0, purpose, names, weights=models.get_vector(make()),
                            clip=1e12, bits=64, dim=dim)
    return h, setup, fd


def test_exact_feature_statistics_are_not_released_when_the_config_says_public():
    h0, _, fd = _setup("update", 2)
    h, setup, fd = _setup("stats", 1 + 2 * fd.n_features)
    with pytest.raises(SetupRejected, match="standardise"):
        h.join(setup)
    assert h.ledger.events == ()


def test_exact_site_metrics_are_not_released_when_the_config_says_off():
    h, setup, _ = _setup("eval", 4)
    with pytest.raises(SetupRejected, match="site_metrics"):
        h.join(setup)


def test_personalisation_metrics_only_when_configured_and_once():
    h, setup, _ = _setup("update", 2)
    with pytest.raises(SetupRejected, match="personalisation"):
        h.personalize(setup.weights, 5)
    h2, setup2, _ = _setup("update", 2, )
    h2.cfg = dataclasses.replace(h2.cfg, personalization=dataclasses.replace(h2.cfg.personalization, enabled=True))
    out = h2.personalize(setup2.weights, 5)
    assert "global" in out
    with pytest.raises(SetupRejected, match="already done"):
        h2.personalize(setup2.weights + 1.0, 6)  # a second, server-chosen model: no second oracle answer


def test_honest_simulation_purposes_still_answered():
    h, setup, _ = _setup("eval", 4, site_metrics="simulation")
    role = h.join(setup)
    assert role.start()
