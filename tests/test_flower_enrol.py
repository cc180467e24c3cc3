"""Per-hospital enrolment: the private key is made and kept on the hospital's machine, only public keys
travel, the roster is built from them, and every hospital pins the roster's fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedvault.fl.integrations.flower.node import (
    NodeDir, NodeSetupError, Registry, build_roster, enrol, install_roster,
)

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "fedvault.fl.integrations.flower", *args], capture_output=True,
                          text=True, env=env)


def test_enrol_roster_install_by_command(tmp_path):
    for name in ("st_mary", "guys", "kings"):
        r = _cli("enrol", "--hospital", name, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        d = tmp_path / name
        assert os.stat(d).st_mode & 0o077 == 0 and os.stat(d / "identity.pem").st_mode & 0o077 == 0
        pub = (d / "enrolment.json").read_text()
        assert "PRIVATE" not in pub and "PRIVATE" not in r.stdout  # only the public part is printed/written
    # The coordinator sees only the enrolment files.
    coord = tmp_path / "coordinator"
    coord.mkdir()
    for name in ("st_mary", "guys", "kings"):
        (coord / f"{name}.json").write_text((tmp_path / name / "enrolment.json").read_text())
    r = _cli("roster", "build", *[str(coord / f"{n}.json") for n in ("st_mary", "guys", "kings")],
             "--out", str(coord / "roster.json"))
    assert r.returncode == 0, r.stderr
    fpr = Registry.load(coord / "roster.json").fingerprint()
    assert fpr in r.stdout
    # A wrong announced fingerprint is refused; the right one installs and pins.
    bad = _cli("roster", "install", str(coord / "roster.json"), "--node", str(tmp_path / "guys"),
               "--fingerprint", "00" * 32)
    assert bad.returncode == 2 and "do not install it" in bad.stderr
    ok = _cli("roster", "install", str(coord / "roster.json"), "--node", str(tmp_path / "guys"), "--fingerprint", fpr)
    assert ok.returncode == 0, ok.stderr
    node = NodeDir(tmp_path / "guys")
    assert (node.client, node.name) == (2, "guys") and node.identity() is not None


def test_tampered_roster_and_forged_enrolment_are_refused(tmp_path):
    docs = [enrol(n, tmp_path / n) for n in ("a", "b", "c")]
    reg = build_roster([tmp_path / n / "enrolment.json" for n in ("a", "b", "c")])
    (tmp_path / "roster.json").write_text(reg.to_json())
    node = install_roster(tmp_path / "a", tmp_path / "roster.json", reg.fingerprint())
    assert node.client == 1
    # The coordinator (or anyone) later swaps b's key for its own: the pinned fingerprint no longer matches.
    evil = enrol("b", tmp_path / "evil")
    doc = json.loads((tmp_path / "a" / "registry.json").read_text())
    doc["clients"]["2"]["identity"] = evil["identity"]
    doc.pop("fingerprint")
    (tmp_path / "a" / "registry.json").write_text(json.dumps(doc))
    with pytest.raises(NodeSetupError, match="not the roster this hospital accepted"):
        NodeDir(tmp_path / "a")
    # An enrolment whose key did not sign its name (someone else's key under b's name) is refused.
    forged = dict(docs[1], identity=evil["identity"])
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    with pytest.raises(NodeSetupError, match="not signed by its own key"):
        build_roster([tmp_path / "forged.json"])
    with pytest.raises(NodeSetupError, match="already holds an identity"):
        enrol("a", tmp_path / "a")
