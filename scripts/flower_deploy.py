"""A real Flower deployment on one machine: SuperLink + SuperNodes over TLS, one node killed mid-round.

    python scripts/flower_deploy.py [--hospitals 4] [--kill 3] [--kill-at masked_input] [--keep DIR]

1. generates a throwaway CA and a server certificate for 127.0.0.1 with ``cryptography``;
2. provisions the consortium: one node directory per hospital (identity key, registry)
   and the server operator's copy of the registry (:func:`fl.integrations.flower.provision`);
3. starts ``flower-superlink`` (HTTPS on one port) and one ``flower-supernode`` per hospital as separate
   processes on free ports of 127.0.0.1, each SuperNode with its own node directory;
4. submits ``examples/flower`` with ``flwr run`` (TLS to the Control API);
5. follows the ServerApp's progress file and SIGKILLs hospital ``--kill``'s SuperNode (and
   its ClientApp processes) as soon as the server opens stage ``--kill-at`` of round 1;
6. waits for the server's result and checks the round completed through dropout
   recovery: the killed hospital is reported dropped and the sum covers exactly the others.

Every process is started in its own session and killed by its process-group id in a
``finally`` block.  Exit status 0 when the checks pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def deploy(hospitals: int = 4, kill: int | None = 3, kill_at: str = "masked_input", rounds: int = 1,
           workdir: str | Path | None = None, timeout: float = 400.0, stage_timeout: float = 60.0,
           train_timeout: float = 45.0,
           dp_seed: int = 0) -> dict:
    """Run the deployment; returns the server's result JSON plus ``killed`` and ``workdir``."""
    from fedvault.fl.integrations.flower import provision

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedvault-deploy-")
        workdir = tmp.name
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "logs").mkdir(exist_ok=True)
    ca, cert, key = make_certs(wd)
    names = [f"hospital_{k}" for k in range(hospitals)]
    provision(wd / "nodes", names)
    registry = wd / "server-registry.json"
    registry.write_text((wd / "nodes" / "registry.json").read_text())
    progress, result = wd / "progress.txt", wd / "result.json"
    link, *node_ports = free_ports(1 + hospitals)  # Flower 1.41 serves Fleet, Control and Runtime APIs on one port
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
    base_env.update(FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                    PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    procs = Procs(wd / "logs")
    try:
        env = dict(base_env, FLWR_HOME=str(wd / "home-superlink"))
        procs.start("superlink", [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca),
                                  "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                                  "--host", "127.0.0.1", "--port", str(link),
                                  "--database", ":flwr-in-memory:", "--disable-runtime-dependency-installation"], env)
        wait_port(link, 60)
        for k, name in enumerate(names):
            env = dict(base_env, FLWR_HOME=str(wd / f"home-{name}"))
            procs.start(name, [str(BIN / "flower-supernode"), "--root-certificates", str(ca),
                               "--superlink", f"127.0.0.1:{link}", "--host", "127.0.0.1",
                               "--port", str(node_ports[k]),
                               "--node-config", f'fedvault-dir="{wd / "nodes" / name}" fedvault-dp-seed={dp_seed}'],
                       env)  # the hospital's own settings (a test replays its DP noise), never the server's
        home = wd / "home-cli"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "fedvault"\n\n[superlink.fedvault]\naddress = "127.0.0.1:{link}"\n'
            f'root-certificates = "{ca}"\n', encoding="utf-8")
        rc = (f'num-hospitals={hospitals} num-server-rounds={rounds} fedvault-registry="{registry}" '
              f'progress-file="{progress}" result-file="{result}" stage-timeout={stage_timeout} train-timeout={train_timeout} '
              'min-clients=3')
        procs.start("flwr-run", [str(BIN / "flwr"), "run", str(APP), "fedvault", "--stream", "--run-config", rc],
                    dict(base_env, FLWR_HOME=str(home)))  # --stream: the ServerApp's log lands in logs/flwr-run.log
        killed = None
        t0 = time.monotonic()
        while not result.exists():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"no result after {timeout:.0f} s; logs in {wd / 'logs'}")
            if kill is not None and killed is None and progress.exists():
                if f"1 {kill_at}" in progress.read_text().split("\n"):
                    procs.kill(names[kill - 1])
                    killed = names[kill - 1]
            if procs.procs["flwr-run"].poll() is not None and not result.exists():
                time.sleep(2)
                if not result.exists():
                    raise RuntimeError(f"the run ended without a result; see {wd / 'logs' / 'flwr-run.log'}")
            if procs.procs["superlink"].poll() is not None:
                raise RuntimeError(f"the SuperLink exited; see {wd / 'logs' / 'superlink.log'}")
            time.sleep(0.1)
        time.sleep(0.5)  # the file is written in one call; let it land
        out = json.loads(result.read_text())
        out["killed"] = killed
        out["workdir"] = str(wd)
        return out
    finally:
        procs.kill_all()
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hospitals", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--kill", type=int, default=3, help="client id (1-based) whose SuperNode is killed; 0: none")
    ap.add_argument("--kill-at", default="masked_input", choices=["share", "masked_input", "consistency"])
    ap.add_argument("--stage-timeout", type=float, default=60.0)
    ap.add_argument("--train-timeout", type=float, default=45.0,
                    help="the masked-input stage (training) waits this long; the killed node costs all of it")
    ap.add_argument("--keep", default=None, help="keep certificates, node directories and logs in this folder")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    out = deploy(a.hospitals, a.kill or None, a.kill_at, a.rounds, a.keep, stage_timeout=a.stage_timeout,
                 train_timeout=a.train_timeout)
    r1 = out["rounds"][0]
    print(json.dumps({k: v for k, v in r1.items() if k != "total"}, indent=1))
    print(f"killed {out['killed']}; {time.monotonic() - t0:.1f} s")
    ok = "participants" in r1 and (out["killed"] is None or (
        out["killed"] not in r1["participants"] and any(out["killed"] in v for v in r1["dropped"].values())))
    print("round completed through dropout recovery" if ok else "CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
