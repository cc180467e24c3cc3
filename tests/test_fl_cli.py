"""Bad input to the CLI: one clear line, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedvault.fl.cli import main

GOOD_HEADER = "age,marker,label"


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def good_rows(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{rng.normal(50, 10):.2f},{rng.normal():.3f},{int(rng.random() < 0.5)}" for _ in range(n)]


def config(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(body)
    return p


CSV_CFG = """
seed = 1
[data]
dataset = "csv"
csv = ["a.csv", "b.csv"]
label = "label"
[training]
rounds = 2
[privacy]
enabled = false
target_epsilon = 3.0
[aggregation]
mode = "plaintext"
"""


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1, err
    assert lines[0].startswith("fedvault: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize(
    "body, needles",
    [
        ("[data\ndataset = 'x'", ["not valid TOML"]),
        ("[data]\ndatset = 'breast_cancer'", ["unknown key 'datset'", "did you mean 'dataset'"]),
        ("[data]\nrounds = 3", ["unknown key 'rounds' in [data]", "belongs in [training]"]),
        ("[training]\nstrategy = 'fedadm'", ["did you mean 'fedadam'"]),
        ("colour = 3", ["unknown key 'colour'"]),
        ("[data]\ndataset = 'mnist'", ["data.dataset", "breast_cancer"]),
        ("[privacy]\ntarget_epsilon = -1.0", ["target_epsilon", "positive"]),
        ("[privacy]\ntarget_epsilon = 2.0\nnoise_multiplier = 1.0", ["either noise_multiplier or target_epsilon"]),
        ("[training]\nrounds = 'ten'", ["training.rounds", "whole number"]),
        ("[aggregation]\nmode = 'magic'", ["aggregation.mode", "plaintext"]),
    ],
)
def test_bad_config(tmp_path, capsys, body, needles):
    out = tmp_path / "history.json"
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(out), "--quiet"], capsys)
    assert_clean_error(code, err, *needles)
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "nope.toml"), "--quiet"], capsys)
    assert_clean_error(code, err, "not found")


@pytest.mark.parametrize(
    "a_header, a_rows, needles",
    [
        ("age,marker,diagnosis", None, ["no label column 'label'", "data.label"]),
        (GOOD_HEADER, ["51.0,nan,1"], ["not finite", "marker"]),
        (GOOD_HEADER, ["51.0,,1"], ["marker"]),
        (GOOD_HEADER, ["fifty,0.1,1"], ["not a number", "age"]),
        (GOOD_HEADER, [], ["no rows"]),
        ("age,weight,label", None, ["columns differ", "weight"]),
        ("age,marker,label,extra", None, ["columns differ", "extra"]),
    ],
)
def test_bad_csv(tmp_path, capsys, a_header, a_rows, needles):
    rows_b = good_rows(60, 2)
    rows_a = good_rows(60, 1) if a_rows is None else good_rows(30, 1) + a_rows if a_rows else []
    if a_header.count(",") == 3:
        rows_a = [r + ",0" for r in good_rows(60, 1)]
    write_csv(tmp_path / "b.csv", GOOD_HEADER, rows_b)
    write_csv(tmp_path / "a.csv", a_header, rows_a)
    # "columns differ" is reported against the first file, so list the odd one second.
    body = CSV_CFG if "columns differ" not in needles else CSV_CFG.replace('["a.csv", "b.csv"]', '["b.csv", "a.csv"]')
    out = tmp_path / "history.json"
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(out), "--quiet"], capsys)
    assert_clean_error(code, err, *needles)
    assert not out.exists()


def test_good_csv_runs(tmp_path, capsys):
    write_csv(tmp_path / "a.csv", GOOD_HEADER, good_rows(80, 1))
    write_csv(tmp_path / "b.csv", GOOD_HEADER, good_rows(70, 2))
    out = tmp_path / "history.json"
    code, _, err = run_cli(["run", str(config(tmp_path, CSV_CFG)), "--output", str(out), "--quiet"], capsys)
    assert code == 0, err
    import json

    h = json.loads(out.read_text())
    assert [r["round"] for r in h["rounds"]] == [1, 2]
    assert set(h["rounds"][0]["participants"]) == {"a", "b"}
    f = h["final"]
    lo, hi = f["metrics_ci"]["accuracy"]
    assert lo <= f["metrics"]["accuracy"] <= hi
    assert "convergence" in f["baseline_pooled"]["method"] and "percentage points" in f["baseline_pooled"]["gap"]["meaning"]
    assert {v["release"] for v in f["per_hospital"].values()} == {"simulation_only"}
    assert h["data"]["classes"] == ["0", "1"]


def test_no_traceback_from_a_real_process(tmp_path):
    cfg = config(tmp_path, "[data]\ndataset = 'nope'")
    p = subprocess.run(
        [sys.executable, "-m", "fedvault.fl.cli", "run", str(cfg), "--quiet"], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("fedvault: error: data.dataset")


@pytest.fixture(scope="module")
def small_history(tmp_path_factory):
    d = tmp_path_factory.mktemp("hist")
    cfg = d / "cfg.toml"
    cfg.write_text(
        "seed = 2\n[data]\nhospitals = 3\n[training]\nrounds = 3\n"
        "[privacy]\nnoise_multiplier = 1.0\nbudget_epsilon = 50.0\n[aggregation]\nmode = \"plaintext\"\n"
    )
    out = d / "history.json"
    assert main(["run", str(cfg), "--output", str(out), "--quiet"]) == 0
    return out


def test_verify_recomputes_every_epsilon_and_checks_the_relation(small_history, capsys):
    import json

    from fedvault.dp.verify import verify

    h = json.loads(small_history.read_text())
    assert verify(h["privacy"]).ok  # the ε arithmetic of every ledger agrees with dp_accounting
    code, out, _ = run_cli(["verify", str(small_history)], capsys)
    if "releases" in h:  # the engine records its release inventory: the stated relation must fit it
        assert code == 0 and "all claims agree" in out, out
    else:  # schema-1 history: exact counts released, so only a replace-one ε can be certified
        assert code == 1 and "only replace-one ε is valid" in out, out


def test_verify_flags_an_understated_epsilon(small_history, tmp_path, capsys):
    import json

    h = json.loads(small_history.read_text())
    client = next(iter(h["privacy"]))
    h["privacy"][client]["epsilon"] *= 0.5  # claims half the privacy loss it really spent
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(h))
    code, out, err = run_cli(["verify", str(bad)], capsys)
    assert code != 0
    assert "MISMATCH" in out + err or "integrity" in (out + err).lower()


def test_privacy_report_writes_table_and_plot(small_history, tmp_path, capsys):
    png = tmp_path / "eps.png"
    code, out, _ = run_cli(["privacy", str(small_history), "--plot", str(png)], capsys)
    assert code == 0
    assert "hospital_0" in out and "remaining" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_bad_file(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    code, _, err = run_cli(["verify", str(p)], capsys)
    assert_clean_error(code, err, "not a JSON history")


def test_every_config_problem_is_reported_at_once(tmp_path, capsys):
    body = "[data]\ndatset = 'x'\n[training]\nrounds = 'ten'\nlr = -1.0\n[aggregation]\nmode = 'magic'\n"
    out = tmp_path / "history.json"
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(out), "--quiet"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("fedvault: error: 4 problems in ")
    for needle in ["did you mean 'dataset'", "training.rounds", "training.lr", "aggregation.mode"]:
        assert needle in err
    assert not out.exists()


def test_config_data_and_output_problems_are_reported_together(tmp_path, capsys):
    write_csv(tmp_path / "a.csv", GOOD_HEADER, good_rows(30, 1) + ["fifty,0.1,1"])
    write_csv(tmp_path / "b.csv", GOOD_HEADER, good_rows(30, 2))
    (tmp_path / "afile").write_text("x")
    body = CSV_CFG.replace("rounds = 2", "rounds = 2\nlr = 0.0")
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(tmp_path / "afile" / "h.json"),
                            "--quiet"], capsys)
    assert code == 2
    assert "3 problems" in err and "training.lr" in err and "not a number" in err and "afile is a file" in err


def test_output_under_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    from fedvault.fl import simulation

    monkeypatch.setattr(simulation, "federate", lambda *a, **k: pytest.fail("trained before checking --output"))
    (tmp_path / "afile").write_text("x")
    body = "[data]\nhospitals = 3\n[training]\nrounds = 1\n[privacy]\nenabled = false\n"
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(tmp_path / "afile" / "sub" / "h.json"),
                            "--quiet"], capsys)
    assert_clean_error(code, err, "afile is a file", "choose another path")


def test_audit_table_does_not_break_run(tmp_path, capsys):
    body = ("[data]\nhospitals = 3\n[training]\nrounds = 1\n[privacy]\nenabled = false\n"
            "[aggregation]\nmode = 'plaintext'\n[audit]\ncanaries = 50\n")
    out = tmp_path / "h.json"
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert out.exists()


def test_seed_flag_overrides_the_config(tmp_path, capsys):
    import json

    body = "seed = 1\n[data]\nhospitals = 3\n[training]\nrounds = 1\n[privacy]\nenabled = false\n[aggregation]\nmode = 'plaintext'\n"
    out = tmp_path / "h.json"
    code, _, err = run_cli(["run", str(config(tmp_path, body)), "--output", str(out), "--quiet", "--seed", "9"], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["config"]["seed"] == 9


def test_init_writes_runnable_examples(tmp_path, capsys):
    from fedvault.fl.config import load

    dest = tmp_path / "ex"
    code, out, err = run_cli(["init", str(dest)], capsys)
    assert code == 0, err
    assert (dest / "csv_hospitals.toml").is_file() and (dest / "csv" / "st_marys.csv").is_file()
    assert load(dest / "csv_hospitals.toml").data.csv  # relative CSV paths resolve from the new folder
    code, _, err = run_cli(["init", str(dest)], capsys)
    assert_clean_error(code, err, "already has", "--force")


def test_the_wheel_ships_the_examples_and_the_demo_config(tmp_path):
    """`pip wheel .` carries fedvault/examples/* and fl/configs/demo.toml (no install: fast)."""
    import zipfile

    import shutil

    root = Path(__file__).resolve().parent.parent
    had_build = (root / "build").exists()
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "-w", str(tmp_path), "--no-deps",
                        "--no-build-isolation", "-q"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if not had_build:  # setuptools builds in the source tree
        shutil.rmtree(root / "build", ignore_errors=True)
    if p.returncode != 0 and "No module named" in p.stderr:
        pytest.skip("setuptools/wheel not installed in this environment")
    assert p.returncode == 0, p.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("fedvault-*.whl"))).namelist()
    for f in ["fedvault/fl/configs/demo.toml", "fedvault/examples/csv_hospitals.toml", "fedvault/examples/csv/test.csv",
              "fedvault/fl/cli.py", "fedvault/secagg/encoding.py"]:
        assert f in names, f
