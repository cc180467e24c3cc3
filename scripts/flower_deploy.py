"""A real Flower deployment on one machine: SuperLink + SuperNodes over TLS, one node killed mid-round.

    python scripts/flower_deploy.py [--mode secagg|secagg+|plaintext|paillier-holder|paillier-threshold]
                                    [--hospitals 4] [--kill 3] [--kill-at masked_input] [--rounds 1] [--keep DIR]

It runs ``examples/flower`` (fedvault's round engine on Flower; the study of its
``fedvault.toml``, with the aggregation ``--mode`` asks for) exactly as a consortium would:

1. a throwaway CA and a server certificate for 127.0.0.1 (``cryptography``);
2. every hospital enrols on its own node directory: ``fedvault enrol`` (its private key is
   created there and never read by anyone else);
3. the coordinator builds the roster from the public enrolments only (``fedvault roster
   build``) and every hospital installs it after checking the announced fingerprint
   (``fedvault roster install``); each keeps its own copy of the study config;
4. ``flower-superlink`` (HTTPS) and one ``flower-supernode`` per hospital as separate
   processes on free ports of 127.0.0.1, each SuperNode with its node directory and config;
5. ``flwr run examples/flower`` (TLS to the Control API) with the coordinator's roster and config;
6. follows the ServerApp's progress file and SIGKILLs hospital ``--kill``'s SuperNode (and its
   ClientApp processes) as soon as the server opens stage ``--kill-at`` of round 1;
7. reads the study's history.json (the schema of ``fedvault run``) and checks that round 1
   completed without the killed hospital: it is listed dropped and the others are the contributors.

Modes are a table (``MODES``): each names its config changes, the stage a node is killed at by
default, parties other than the hospitals that enrol and run a SuperNode of their own (Paillier's
key holder), and an optional setup step run after the roster is installed. The Paillier modes run
the key ceremony there, as the ``fedvault paillier`` commands each party runs on its own machine:
``paillier-holder`` — the key holder (enrolled like a hospital, its own SuperNode) creates its key
pair in its node directory (``paillier keygen``), every hospital installs the signed public file
after checking the announced fingerprint (``paillier install``), the coordinator checks its copy
(``paillier show``); ``paillier-threshold`` — every hospital makes its one-time share key
(``paillier share-key``), the dealer deals sealed ``t``-of-``l`` shares (``paillier deal``; the
dealer's output is deleted after delivery), every hospital installs the public file and its share.
Their keys are 1024 bits: a TEST-ONLY size (< 112-bit security) that keeps the run short;
a real consortium uses ``--bits 2048`` or more.
Every process is started in its own session and killed by its process id in a ``finally``
block.  Exit status 0 when the checks pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "flower"
BIN = Path(sys.executable).parent


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate valid for 127.0.0.1/localhost (ECDSA P-256, 1 day)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedvault test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = d / "ca.crt", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Procs:
    """Processes started here, each in its own session (killed by process-group id)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                             cwd=str(self.logs))
        out.close()
        self.procs[name] = p
        return p

    def kill(self, name: str) -> None:
        """SIGKILL the process and every process it started (Flower detaches its SuperExec and
        app processes into new sessions, so they are found by parent id, not by group)."""
        import psutil

        p = self.procs.get(name)
        if p is None:
            return
        try:
            tree = psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for proc in [p, *tree]:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=10)
        psutil.wait_procs(tree, timeout=10)

    def kill_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def wait_port(port: int, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass(frozen=True)
class Mode:
    """One aggregation mode of the deployment: its changes to the example's study config (section -> keys),
    the stage whose start kills the node by default, and an optional setup step
    ``setup(workdir, names, node_dirs, coordinator_dir, run) -> {"run_config": {...}, "node_config": {name: {...}}}``
    run after every hospital installed the roster (``run(argv)`` runs a ``fedvault`` command)."""

    config: dict[str, dict[str, Any]]
    kill_at: str = "masked_input"
    setup: Callable[..., dict[str, Any]] | None = None
    stages: tuple[str, ...] = ("join", "advertise", "share", "masked_input", "consistency", "unmask")
    parties: tuple[str, ...] = ()  # non-hospital parties: enrolled, in the roster, a SuperNode each (no data)


TEST_KEY_BITS = 1024  # Paillier modes: a TEST-ONLY key size (< 112-bit security), printed as such


def _announced(out: str) -> str:
    """The fingerprint a command printed (what its party announces out of band)."""
    return re.search(r"fingerprint ([0-9a-f]{64})", out).group(1)


def _deliver_public(public: Path, fingerprint: str, hospitals: list[str], nodes: dict[str, Path], coord: Path,
                    run: Callable[[list[str]], str], shares: dict[str, Path] | None = None) -> dict[str, Any]:
    """Every hospital installs the public setup file (and its share) after checking the announced fingerprint;
    the coordinator checks its copy against its roster. Returns the run config naming the coordinator's copy."""
    for n in hospitals:  # on each hospital's machine: what it received
        copy = nodes[n].parent / "paillier-public.json"
        copy.write_bytes(public.read_bytes())
        extra = []
        if shares is not None:
            mine = nodes[n].parent / shares[n].name
            mine.write_bytes(shares[n].read_bytes())
            extra = ["--share", str(mine)]
        print(run(["paillier", "install", str(nodes[n]), "--public", str(copy), "--fingerprint", fingerprint, *extra]),
              end="")
    theirs = coord / "paillier-public.json"
    theirs.write_bytes(public.read_bytes())
    print(run(["paillier", "show", str(theirs), "--roster", str(coord / "roster.json"), "--fingerprint", fingerprint]),
          end="")
    return {"run_config": {"fedvault-paillier": str(theirs), "fedvault-paillier-fingerprint": fingerprint},
            "node_config": {}}


def paillier_holder_ceremony(wd: Path, names: list[str], nodes: dict[str, Path], coord: Path,
                             run: Callable[[list[str]], str]) -> dict[str, Any]:
    """Holder mode: the key holder makes its key pair on its own node (the private key never leaves it)."""
    kh = nodes["key_holder"]
    public = kh.parent / "paillier-public.json"
    out = run(["paillier", "keygen", str(kh), "--bits", str(TEST_KEY_BITS), "--insecure-test-key", "--out", str(public)])
    print(out, end="")
    return _deliver_public(public, _announced(out), names, nodes, coord, run)


def paillier_threshold_ceremony(wd: Path, names: list[str], nodes: dict[str, Path], coord: Path,
                                run: Callable[[list[str]], str]) -> dict[str, Any]:
    """Threshold mode: sealed shares from a trusted dealer (t = a strict majority of the hospitals)."""
    import shutil

    dealer = wd / "dealer"
    (dealer / "in").mkdir(parents=True, exist_ok=True)
    (dealer / "roster.json").write_bytes((coord / "roster.json").read_bytes())
    keys = []
    for n in names:  # each hospital: its one-time share key; the signed public half goes to the dealer
        run(["paillier", "share-key", str(nodes[n])])
        keys.append(dealer / "in" / f"{n}.json")
        keys[-1].write_bytes((nodes[n] / "paillier-share-key.json").read_bytes())
    t = len(names) // 2 + 1
    out = run(["paillier", "deal", "--roster", str(dealer / "roster.json"), "--threshold", str(t), "--bits",
               str(TEST_KEY_BITS), "--insecure-test-key", "--share-keys", *map(str, keys), "--out", str(dealer / "out")])
    print(out, end="")
    shares = {n: next((dealer / "out").glob(f"share-*-{n}.json")) for n in names}
    delivered = wd / "delivered"  # what the dealer sent (in transit); the dealer then deletes its output
    delivered.mkdir(exist_ok=True)
    for n, p in shares.items():
        shares[n] = delivered / p.name
        shares[n].write_bytes(p.read_bytes())
    public = delivered / "paillier-public.json"
    public.write_bytes((dealer / "out" / "paillier-public.json").read_bytes())
    shutil.rmtree(dealer)
    return _deliver_public(public, _announced(out), names, nodes, coord, run, shares)


_PAILLIER = {"mode": "paillier", "key_bits": TEST_KEY_BITS}
MODES: dict[str, Mode] = {
    "plaintext": Mode({"aggregation": {"mode": "plaintext"}}, kill_at="join", stages=("join",)),
    "secagg": Mode({"aggregation": {"mode": "secagg", "graph": "complete"}}),
    "secagg+": Mode({"aggregation": {"mode": "secagg", "graph": "sparse"}}),
    # Paillier: a hospital killed while it trains (join); the key holder / the share-holders decrypt at "decrypt"
    "paillier-holder": Mode({"aggregation": {**_PAILLIER, "keys": "holder"}}, kill_at="join",
                            setup=paillier_holder_ceremony, stages=("join", "decrypt"), parties=("key_holder",)),
    "paillier-threshold": Mode({"aggregation": {**_PAILLIER, "keys": "threshold"}}, kill_at="join",
                               setup=paillier_threshold_ceremony, stages=("join", "decrypt")),
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def study_config(mode: str, rounds: int, hospitals: int, base: Path = APP / "fedvault.toml") -> str:
    """The example's study with ``mode``'s changes, ``rounds`` rounds and ``hospitals`` data partitions."""
    raw = tomllib.loads(base.read_text(encoding="utf-8"))
    raw.setdefault("training", {})["rounds"] = rounds
    raw.setdefault("data", {})["hospitals"] = hospitals
    for section, keys in MODES[mode].config.items():
        raw.setdefault(section, {}).update(keys)
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, keys in raw.items():
        if isinstance(keys, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def fedvault(argv: list[str], env: dict[str, str]) -> str:
    """Run a ``fedvault`` command (as a hospital or the coordinator would); its stdout."""
    out = subprocess.run([sys.executable, "-m", "fedvault", *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"fedvault {' '.join(argv)} failed: {out.stdout}{out.stderr}")
    return out.stdout


def enrol_consortium(wd: Path, names: list[str], env: dict[str, str],
                     parties: tuple[str, ...] = ()) -> tuple[dict[str, Path], Path]:
    """Steps 2-3: every hospital (and every other party, e.g. Paillier's key holder) enrols on its own node
    directory; the coordinator builds the roster from the public enrolments; every node installs it after
    comparing the announced fingerprint."""
    nodes = {n: wd / "hospitals" / n / "node" for n in names}
    nodes.update({n: wd / "parties" / n / "node" for n in parties})
    for n, d in nodes.items():  # on each hospital's machine
        d.parent.mkdir(parents=True, exist_ok=True)
        fedvault(["enrol", "--hospital", n, "--out", str(d)], env)
    coord = wd / "coordinator"
    coord.mkdir(parents=True, exist_ok=True)
    roster = coord / "roster.json"  # the coordinator sees the public enrolment.json files only
    out = fedvault(["roster", "build", *[str(d / "enrolment.json") for d in nodes.values()], "--out", str(roster)], env)
    fingerprint = re.search(r"roster fingerprint ([0-9a-f]{64})", out).group(1)  # announced out of band
    for n, d in nodes.items():
        copy = d.parent / "roster.json"  # what the hospital received
        copy.write_bytes(roster.read_bytes())
        fedvault(["roster", "install", str(copy), "--node", str(d), "--fingerprint", fingerprint], env)
    return nodes, roster


def deploy(hospitals: int = 4, kill: int | None = 3, kill_at: str | None = None, rounds: int = 1,
           workdir: str | Path | None = None, timeout: float = 400.0, stage_timeout: float = 60.0,
           train_timeout: float = 90.0, mode: str = "secagg") -> dict:
    """Run the deployment; returns the study's history (history.json) plus ``killed``, ``workdir``,
    ``ledgers`` (each hospital's ledger file, read from its node directory) and ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    m = MODES[mode]
    kill_at = kill_at or m.kill_at
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedvault-deploy-")
        workdir = tmp.name
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "logs").mkdir(exist_ok=True)
    ca, cert, key = make_certs(wd)
    names = [f"hospital_{k}" for k in range(hospitals)]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
    base_env.update(FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                    FEDVAULT_TORCH_THREADS="1", PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    nodes, roster = enrol_consortium(wd, names, base_env, m.parties)
    study = study_config(mode, rounds, hospitals)
    (wd / "coordinator" / "study.toml").write_text(study, encoding="utf-8")
    for n in nodes:  # every hospital (and party) keeps its own copy of the consortium's config
        (nodes[n].parent / "study.toml").write_text(study, encoding="utf-8")
    extra: dict[str, Any] = {"run_config": {}, "node_config": {}}
    if m.setup is not None:
        extra = m.setup(wd, names, nodes, wd / "coordinator", lambda argv: fedvault(argv, base_env))
    progress, history = wd / "progress.txt", wd / "coordinator" / "history.json"
    link, *node_ports = free_ports(1 + len(nodes))  # Flower serves Fleet, Control and Runtime APIs on one port
    procs = Procs(wd / "logs")
    try:
        env = dict(base_env, FLWR_HOME=str(wd / "home-superlink"))
        procs.start("superlink", [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca),
                                  "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                                  "--host", "127.0.0.1", "--port", str(link),
                                  "--database", ":flwr-in-memory:", "--disable-runtime-dependency-installation"], env)
        wait_port(link, 60)
        for k, name in enumerate(nodes):
            nc = {"fedvault-dir": str(nodes[name]), "fedvault-config": str(nodes[name].parent / "study.toml"),
                  **extra.get("node_config", {}).get(name, {})}
            env = dict(base_env, FLWR_HOME=str(wd / f"home-{name}"))
            procs.start(name, [str(BIN / "flower-supernode"), "--root-certificates", str(ca),
                               "--superlink", f"127.0.0.1:{link}", "--host", "127.0.0.1",
                               "--port", str(node_ports[k]),
                               "--node-config", " ".join(f"{k2}={_toml_value(v)}" for k2, v in nc.items())], env)
        home = wd / "home-cli"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "fedvault"\n\n[superlink.fedvault]\naddress = "127.0.0.1:{link}"\n'
            f'root-certificates = "{ca}"\n', encoding="utf-8")
        rc = {"fedvault-config": str(wd / "coordinator" / "study.toml"), "fedvault-roster": str(roster),
              "fedvault-history": str(history), "progress-file": str(progress), "stage-timeout": stage_timeout,
              "train-timeout": train_timeout, **extra.get("run_config", {})}
        procs.start("flwr-run", [str(BIN / "flwr"), "run", str(APP), "fedvault", "--stream", "--run-config",
                                 " ".join(f"{k}={_toml_value(v)}" for k, v in rc.items())],
                    dict(base_env, FLWR_HOME=str(home)))  # --stream: the ServerApp's log lands in logs/flwr-run.log
        killed = None
        t0 = time.monotonic()
        while procs.procs["flwr-run"].poll() is None or not history.exists():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"no history after {timeout:.0f} s; logs in {wd / 'logs'}")
            if kill is not None and killed is None and progress.exists():
                if f"1 {kill_at}" in progress.read_text().split("\n"):
                    procs.kill(names[kill - 1])
                    killed = names[kill - 1]
            if procs.procs["flwr-run"].poll() is not None and not history.exists():
                time.sleep(2)
                if not history.exists():
                    raise RuntimeError(f"the run ended without a history; see {wd / 'logs' / 'flwr-run.log'}")
            if procs.procs["superlink"].poll() is not None:
                raise RuntimeError(f"the SuperLink exited; see {wd / 'logs' / 'superlink.log'}")
            time.sleep(0.2)
        out = json.loads(history.read_text())
        from fedvault.dp.ledger import PrivacyLedger

        out["ledgers"] = {n: PrivacyLedger.load(d / "ledger.json").to_dict() for n, d in nodes.items()
                          if (d / "ledger.json").exists()}
        out.update(killed=killed, workdir=str(wd), mode=mode)
        return out
    finally:
        procs.kill_all()
        if tmp is not None:
            tmp.cleanup()


def check(out: dict) -> list[str]:
    """What is wrong with a deployment's result (empty: round 1 completed without the killed hospital)."""
    r1 = out["rounds"][0] if out.get("rounds") else {}
    problems = []
    if not r1.get("participants"):
        problems.append(f"round 1 did not complete: {r1.get('aborted') or out.get('final', {}).get('stop_reason')}")
    killed = out.get("killed")
    if killed is not None:
        if killed in r1.get("participants", []):
            problems.append(f"{killed} was killed but is listed as a contributor")
        if not any(killed in v for v in (r1.get("dropped") or {}).values()):
            problems.append(f"{killed} is not listed dropped: {r1.get('dropped')}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="secagg", choices=list(MODES))
    ap.add_argument("--hospitals", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--kill", type=int, default=3, help="client id (1-based) whose SuperNode is killed; 0: none")
    ap.add_argument("--kill-at", default=None, help="the stage of round 1 whose start kills it (default: the mode's)")
    ap.add_argument("--stage-timeout", type=float, default=60.0)
    ap.add_argument("--train-timeout", type=float, default=90.0,
                    help="the join stage (hospitals train) waits this long; a node killed then costs all of it")
    ap.add_argument("--keep", default=None, help="keep certificates, node directories and logs in this folder")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    out = deploy(a.hospitals, a.kill or None, a.kill_at, a.rounds, a.keep, stage_timeout=a.stage_timeout,
                 train_timeout=a.train_timeout, mode=a.mode)
    for r in out["rounds"]:
        print(json.dumps({k: r.get(k) for k in ("round", "participants", "dropped", "refused", "aborted", "epsilon",
                                                 "metrics") if k in r}))
    print(f"mode {out['mode']}; killed {out['killed']}; {time.monotonic() - t0:.1f} s")
    problems = check(out)
    print("round 1 completed without the killed hospital" if not problems else "CHECK FAILED: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
