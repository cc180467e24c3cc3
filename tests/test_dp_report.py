"""Privacy report: table contents and ε-over-rounds curves recomputed from events."""

from __future__ import annotations

import pytest

from fedvault.dp.ledger import PrivacyEvent, PrivacyLedger
from fedvault.dp.report import epsilon_curves, ledger_table, plot_epsilon


def _history():
    a = PrivacyLedger("hospital_0", 1e-5, budget_epsilon=4.0)
    b = PrivacyLedger("hospital_1", 1e-5)
    for r in (0, 1, 3):
        a.record(PrivacyEvent(round=r, noise_multiplier=1.1, sample_rate=0.05, steps=20))
    b.record(PrivacyEvent(round=2, noise_multiplier=1.1, sample_rate=0.05, steps=20))
    rounds = [{"round": r, "refused": {"hospital_1": "budget"} if r == 3 else {}} for r in range(4)]
    return a, b, {"rounds": rounds, "privacy": {a.client: a.to_dict(), b.client: b.to_dict()}}


def test_table_lists_each_hospital_with_epsilon_and_remaining_budget():
    a, b, hist = _history()
    table = ledger_table(hist)
    row_a = next(line for line in table.splitlines() if line.startswith("hospital_0"))
    row_b = next(line for line in table.splitlines() if line.startswith("hospital_1"))
    assert f"{a.epsilon():.3f}" in row_a and f"{4.0 - a.epsilon():.3f}" in row_a
    assert row_a.split()[3] == "3" and row_b.split()[3] == "1" and row_b.split()[4] == "1"
    # from the ledgers themselves (no history rounds): same row for hospital_0
    assert ledger_table([a, b]).splitlines()[2] == row_a


def test_curves_are_flat_when_sitting_out_and_end_at_ledger_epsilon(tmp_path):
    a, b, hist = _history()
    curves = epsilon_curves(hist, rounds=range(4))
    ca = [e for _, e in curves["hospital_0"]]
    assert ca[0] < ca[1] == ca[2] < ca[3]
    assert ca[-1] == pytest.approx(a.epsilon())
    assert [e for _, e in curves["hospital_1"]][:2] == [0.0, 0.0]
    out = plot_epsilon(hist, tmp_path / "eps.png")
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_figure_leaves_the_backend_and_pyplot_alone(tmp_path):
    """A live kernel's backend is never switched: the report builds matplotlib.figure.Figure objects."""
    import json
    import subprocess
    import sys

    _, _, hist = _history()
    hist["rounds"][2]["aborted"] = "too few survivors"
    p = tmp_path / "h.json"
    p.write_text(json.dumps(hist))
    code = (
        "import json, sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "from fedvault.dp.report import epsilon_figure\n"
        f"fig = epsilon_figure(json.load(open({str(p)!r})))\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "print(type(fig).__name__, len(fig.axes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Figure", "1"]


def test_many_hospitals_get_one_panel_each_and_client_level_is_plotted():
    from fedvault.dp.report import epsilon_figure

    ledgers = {}
    for k in range(10):
        led = PrivacyLedger(f"hospital_{k}", 1e-5)
        for r in (1, 2):
            led.record(PrivacyEvent(round=r, noise_multiplier=1.1, sample_rate=0.05, steps=20))
        ledgers[led.client] = led.to_dict()
    rounds = [{"round": r, "client_epsilon": 50.0 * r, "client_epsilon_vs_server": 80.0 * r} for r in (1, 2)]
    fig = epsilon_figure({"rounds": rounds, "privacy": ledgers, "personalization": {"hospital_0": {}}})
    assert len(fig.axes) == 11  # 10 small panels + the client-level panel
    assert "too large to mean anything" in fig.axes[-1].get_title()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][-1] == "P"
