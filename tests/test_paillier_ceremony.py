"""Paillier's key ceremony for deployments (fl.integrations.flower.ceremony, `fedvault paillier ...`).

A full ceremony on temporary node directories (holder and threshold), then a Paillier round whose
parties are built ONLY from what each node directory holds (and the coordinator only from its roster
and the public file) gives the exact sum; every refusal path raises a typed CeremonyError.
Keys are 512 bits (TEST-ONLY size) so the tests stay fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedvault.fl.integrations.flower import ceremony as C
from fedvault.fl.integrations.flower.node import NodeDir, NodeSetupError, Registry, provision
from fedvault.protocols.driver import run_in_memory
from fedvault.protocols.paillier import PaillierParams
from fedvault.secagg import keys as K

BITS = 512  # TEST-ONLY key size
HOSPITALS = ["h_a", "h_b", "h_c", "h_d"]


def _consortium(root: Path, names: list[str]) -> Path:
    provision(root, names)
    return root / "registry.json"


def _round(nodes: dict[str, NodeDir], coordinator_public, registry: Registry, contributors: list[str],
           rnd: int = 1, drop: dict | None = None):
    """One Paillier round: every party from its node directory, the server from the coordinator's files."""
    from fedvault.fl import roles
    from fedvault.protocols.paillier import MemoryDecryptLog

    ids = {n: nodes[n].client for n in contributors}
    params = PaillierParams(b"ceremony-study", rnd, tuple(sorted(ids.values())), min_clients=2,
                            keys=coordinator_public.mode, key_bits=BITS, clip=2.0)
    xs = {ids[n]: np.linspace(-1.5, 1.5, 12) * (k + 1) / 4 for k, n in enumerate(contributors)}
    parties = {}
    for name, node in nodes.items():
        public, secret = node.paillier_public(), node.paillier_secret()
        keys = node.registry.identity_keys()  # the node's OWN roster
        if public.mode == "holder" and public.holder == node.client:
            parties[node.client] = roles.paillier_holder(params, public, secret, node.identity(), keys,
                                                         MemoryDecryptLog())
        elif node.client in ids.values() or secret is not None:
            parties[node.client] = roles.paillier_party(params, public, node.client, node.identity(), keys, os.urandom,
                                                        xs.get(node.client), secret, MemoryDecryptLog())
    server = roles.paillier_server(params, coordinator_public, registry.identity_keys())
    from fedvault.protocols.driver import DriverStats

    stats = DriverStats()
    try:
        run_in_memory(server, parties, drop=drop, stats=stats)
    finally:
        assert not stats.refused and not stats.aborted, (stats.refused, stats.aborted)
    res = server.result()
    lay = params.layout
    want = lay.dequantise_sum(sum(lay.quantise(x) for c, x in xs.items() if c in res.contributors),
                              len(res.contributors))
    return res, want


def test_holder_ceremony_then_a_round_from_node_directories_only(tmp_path, capsys):
    from fedvault.fl.cli import main

    reg_path = _consortium(tmp_path, [*HOSPITALS[:3], "key_holder"])
    reg = Registry.load(reg_path)
    kh = tmp_path / "key_holder"
    out = tmp_path / "public.json"
    # the key holder, on its own machine (TEST-ONLY key size needs explicit words)
    assert main(["paillier", "keygen", str(kh), "--bits", str(BITS), "--out", str(out)]) == 2
    assert "test" in capsys.readouterr().err.lower()
    assert main(["paillier", "keygen", str(kh), "--bits", str(BITS), "--out", str(out), "--insecure-test-key"]) == 0
    printed = capsys.readouterr().out
    fp = re.search(r"fingerprint ([0-9a-f]{64})", printed).group(1)
    assert "TEST-ONLY" in printed
    assert (kh / C.HOLDER_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert "\"p\"" not in out.read_text() and "\"q\"" not in out.read_text()  # only public material travels
    for h in HOSPITALS[:3]:
        assert main(["paillier", "install", str(tmp_path / h), "--public", str(out), "--fingerprint", fp]) == 0
    # the coordinator checks the file against its roster and the announced fingerprint
    assert main(["paillier", "show", str(out), "--roster", str(reg_path), "--fingerprint", fp]) == 0
    coord = C.load_public(out, reg, fp).setup
    nodes = {n: NodeDir(tmp_path / n) for n in [*HOSPITALS[:3], "key_holder"]}
    assert coord.holder == nodes["key_holder"].client
    assert all(nodes[h].paillier_secret() is None for h in HOSPITALS[:3])  # hospitals hold no secret
    assert nodes["key_holder"].paillier_secret().public_key.n == coord.public_key.n
    res, want = _round(nodes, coord, reg, HOSPITALS[:3])
    assert sorted(res.contributors) == sorted(nodes[h].client for h in HOSPITALS[:3])
    np.testing.assert_array_equal(np.asarray(res.total), want)


@pytest.fixture(scope="module")
def threshold_ceremony(tmp_path_factory):
    """4 hospitals, each with its share key; the dealer deals 3-of-4 sealed shares; nothing installed yet."""
    root = tmp_path_factory.mktemp("thr")
    reg_path = _consortium(root / "c", HOSPITALS)
    for h in HOSPITALS:
        C.share_key(root / "c" / h)
    res = C.deal(reg_path, 3, BITS, root / "dealer", share_keys=[root / "c" / h / C.SHARE_REQUEST_FILE
                                                                 for h in HOSPITALS], allow_small=True)
    return root, reg_path, res


def _fresh(threshold_ceremony, tmp_path) -> tuple[Path, Path, "C.DealResult"]:
    """A private copy of the consortium (node dirs with their share keys) and the dealer's output."""
    root, reg_path, res = threshold_ceremony
    shutil.copytree(root / "c", tmp_path / "c")
    shutil.copytree(root / "dealer", tmp_path / "dealer")
    shares = {c: tmp_path / "dealer" / p.name for c, p in res.shares.items()}
    return tmp_path / "c", tmp_path / "c" / "registry.json", C.DealResult(res.public, tmp_path / "dealer" / C.PUBLIC_FILE, shares)


def test_threshold_ceremony_then_a_round_with_a_dropped_share_holder(threshold_ceremony, tmp_path):
    c, reg_path, res = _fresh(threshold_ceremony, tmp_path)
    reg = Registry.load(reg_path)
    fp = res.public.fingerprint
    for h in HOSPITALS:
        node = NodeDir(c / h)
        C.install(node.path, res.public_path, fp, res.shares[node.client])
        assert (node.path / C.SHARE_FILE).stat().st_mode & 0o777 == 0o600
        assert not (node.path / C.SHARE_KEY_FILE).exists()  # the one-time receiving key is gone
    nodes = {h: NodeDir(c / h) for h in HOSPITALS}
    coord = C.load_public(res.public_path, reg, fp).setup
    assert coord.threshold == 3 and coord.parties == tuple(sorted(n.client for n in nodes.values()))
    # the sealed share files carry no share in the clear
    body = json.loads(res.shares[nodes["h_a"].client].read_text())
    assert body["format"] == C.SEALED_FORMAT and "share" not in body
    shares = {h: nodes[h].paillier_secret() for h in HOSPITALS}
    assert sorted(s.index for s in shares.values()) == [1, 2, 3, 4]
    # three contribute; one share-holder vanishes at decryption: 3 shares are enough
    victim = nodes["h_d"].client
    res1, want = _round(nodes, coord, reg, ["h_a", "h_b", "h_c"], drop={"decrypt": [victim]})
    np.testing.assert_array_equal(np.asarray(res1.total), want)


def test_public_file_refusals(threshold_ceremony, tmp_path):
    c, reg_path, res = _fresh(threshold_ceremony, tmp_path)
    node = c / "h_a"
    share = res.shares[NodeDir(node).client]
    with pytest.raises(C.CeremonyError, match="not the announced"):  # mismatched fingerprint
        C.install(node, res.public_path, "00" * 32, share)
    doc = json.loads(res.public_path.read_text())
    # tampered: another modulus, fingerprint left as it was
    bad = dict(doc, setup=dict(doc["setup"], n=format(int(doc["setup"]["n"], 16) + 2, "x")))
    p = tmp_path / "tampered.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(C.CeremonyError, match="does not match its own fingerprint"):
        C.install(node, p, None, share)
    # minority threshold: t = 2 of 4 with a recomputed fingerprint is still refused on load
    minority = dict(doc, setup=dict(doc["setup"], threshold=2))
    minority["fingerprint"] = C._public_fingerprint(minority)
    p.write_text(json.dumps(minority))
    with pytest.raises(C.CeremonyError, match="disjoint quorums"):
        C.load_public(p, Registry.load(reg_path))
    with pytest.raises(C.CeremonyError, match="not empty"):  # never mixes two deals in one directory
        C.deal(reg_path, 3, BITS, res.public_path.parent, plaintext=True, allow_small=True)
    # the dealer refuses to deal it in the first place
    with pytest.raises(C.CeremonyError, match="disjoint quorums"):
        C.deal(reg_path, 2, BITS, tmp_path / "d2", plaintext=True, allow_small=True)
    # made for another roster
    other = _consortium(tmp_path / "other", HOSPITALS)
    with pytest.raises(C.CeremonyError, match="another roster|made for roster"):
        C.load_public(res.public_path, Registry.load(other), res.public.fingerprint)
    # wrong format / version
    p.write_text(json.dumps(dict(doc, version=2)))
    with pytest.raises(C.CeremonyError, match="version"):
        C.load_public(p, Registry.load(reg_path))
    # a node without an installed setup says what to run
    with pytest.raises(C.CeremonyError, match="paillier install"):
        NodeDir(node).paillier_public()


def test_share_refusals(threshold_ceremony, tmp_path):
    c, reg_path, res = _fresh(threshold_ceremony, tmp_path)
    a, b = NodeDir(c / "h_a"), NodeDir(c / "h_b")
    fp = res.public.fingerprint
    # another hospital's sealed share: sealed to another key
    with pytest.raises(C.CeremonyError, match="sealed to another key"):
        C.install(a.path, res.public_path, fp, res.shares[b.client])
    # a share-holder must install its share
    with pytest.raises(C.CeremonyError, match="--share"):
        C.install(a.path, res.public_path, fp)
    # a tampered sealed share (one ciphertext byte, or the header it is bound to) does not open
    doc = json.loads(res.shares[a.client].read_text())
    ct = bytearray(bytes.fromhex(doc["ciphertext"]))
    ct[5] ^= 1
    p = tmp_path / "bad-share.json"
    p.write_text(json.dumps(dict(doc, ciphertext=ct.hex())))
    with pytest.raises(C.CeremonyError, match="does not open"):
        C.install(a.path, res.public_path, fp, p)
    p.write_text(json.dumps(dict(doc, public="11" * 32)))
    with pytest.raises(C.CeremonyError, match="does not open"):
        C.install(a.path, res.public_path, fp, p)
    # a correctly opened share installed; then its file is edited on disk: refused on load
    C.install(a.path, res.public_path, fp, res.shares[a.client])
    assert a.paillier_secret().index == res.public.setup.share_index(a.client)
    inner = json.loads((a.path / C.SHARE_FILE).read_text())
    inner["share"]["secret"] = format(int(inner["share"]["secret"], 16) + 1, "x")
    (a.path / C.SHARE_FILE).write_text(json.dumps(inner))
    os.chmod(a.path / C.SHARE_FILE, 0o600)
    with pytest.raises(C.CeremonyError, match="verification key"):
        a.paillier_secret()
    os.chmod(a.path / C.SHARE_FILE, 0o644)
    with pytest.raises(C.CeremonyError, match="chmod 600"):
        a.paillier_secret()


def test_plaintext_shares_foreign_share_and_other_deal(threshold_ceremony, tmp_path):
    c, reg_path, res = _fresh(threshold_ceremony, tmp_path)
    a, b = NodeDir(c / "h_a"), NodeDir(c / "h_b")
    out = C.deal(reg_path, 3, BITS, tmp_path / "plain", plaintext=True, allow_small=True)
    fp = out.public.fingerprint
    # another hospital's unsealed share, relabelled as this one's: its index gives it away
    doc = json.loads(out.shares[b.client].read_text())
    p = tmp_path / "relabelled.json"
    p.write_text(json.dumps(dict(doc, client=a.client, name=a.name)))
    with pytest.raises(C.CeremonyError, match="another hospital"):
        C.install(a.path, out.public_path, fp, p)
    with pytest.raises(C.CeremonyError, match="not of this hospital"):
        C.install(a.path, out.public_path, fp, out.shares[b.client])
    # a share of one deal with the public file of another
    with pytest.raises(C.CeremonyError, match="public file of the same deal"):
        C.install(a.path, res.public_path, res.public.fingerprint, out.shares[a.client])
    # and the right pair installs
    C.install(a.path, out.public_path, fp, out.shares[a.client])
    assert a.paillier_secret().index == out.public.setup.share_index(a.client)
    # sealing needs every share-holder's signed share key; a forged one is refused
    with pytest.raises(C.CeremonyError, match="share key"):
        C.deal(reg_path, 3, BITS, tmp_path / "d3", share_keys=[], allow_small=True)
    req = json.loads((c / "h_c" / C.SHARE_REQUEST_FILE).read_text())
    req["x25519"] = K.public_bytes(__import__("cryptography.hazmat.primitives.asymmetric.x25519",
                                              fromlist=["X"]).X25519PrivateKey.generate()).hex()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(req))
    keys = [c / h / C.SHARE_REQUEST_FILE for h in ("h_a", "h_b", "h_d")] + [forged]
    with pytest.raises(C.CeremonyError, match="not a share key signed"):
        C.deal(reg_path, 3, BITS, tmp_path / "d4", share_keys=keys, allow_small=True)


def test_holder_file_signature_and_secret_checks(tmp_path):
    reg_path = _consortium(tmp_path, ["h_a", "h_b", "key_holder"])
    kh = NodeDir(tmp_path / "key_holder")
    out = tmp_path / "public.json"
    pub = C.keygen(kh.path, BITS, out, allow_small=True)
    reg = Registry.load(reg_path)
    assert C.load_public(out, reg).fingerprint == pub.fingerprint
    with pytest.raises(C.CeremonyError, match="already holds"):
        C.keygen(kh.path, BITS, tmp_path / "again.json", allow_small=True)
    # someone else's key, re-fingerprinted, is refused: the roster's key holder did not sign it
    from fedvault.secagg.paillier import generate_keypair

    doc = json.loads(out.read_text())
    forged = dict(doc, setup=dict(doc["setup"], n=format(generate_keypair(BITS)[0].n, "x")))
    forged["fingerprint"] = C._public_fingerprint(forged)
    p = tmp_path / "forged.json"
    p.write_text(json.dumps(forged))
    with pytest.raises(C.CeremonyError, match="not signed by the roster's key holder"):
        C.install(tmp_path / "h_a", p, forged["fingerprint"])
    # the key holder's private key file must match the installed setup
    key = json.loads((kh.path / C.HOLDER_KEY_FILE).read_text())
    key["key"]["p"] = format(int(key["key"]["p"], 16) + 2, "x")
    (kh.path / C.HOLDER_KEY_FILE).write_text(json.dumps(key))
    os.chmod(kh.path / C.HOLDER_KEY_FILE, 0o600)
    with pytest.raises(C.CeremonyError, match="does not belong"):
        kh.paillier_secret()
    # the config the study runs with must fit the key
    with pytest.raises(C.CeremonyError, match="key_bits = 512"):
        pub.check_config("holder", 2048)
    with pytest.raises(C.CeremonyError, match="keys"):
        pub.check_config("threshold", BITS)
    pub.check_config("holder", BITS)
    assert issubclass(C.CeremonyError, NodeSetupError)


def test_deployment_loaders_check_the_config(tmp_path):
    from fedvault.fl.config import Config

    reg_path = _consortium(tmp_path, ["h_a", "h_b", "key_holder"])
    out = tmp_path / "public.json"
    pub = C.keygen(tmp_path / "key_holder", BITS, out, allow_small=True)
    C.install(tmp_path / "h_a", out, pub.fingerprint)
    reg = Registry.load(reg_path)
    cfg = Config().replace(aggregation={"mode": "paillier", "keys": "holder", "key_bits": BITS})
    assert C.coordinator_setup(out, reg, cfg, pub.fingerprint).public_key.n == pub.setup.public_key.n
    public, secret = C.node_setup(NodeDir(tmp_path / "key_holder"), cfg)
    assert secret.public_key.n == public.public_key.n
    assert C.node_setup(NodeDir(tmp_path / "h_a"), cfg)[1] is None
    with pytest.raises(C.CeremonyError, match="key_bits"):
        C.node_setup(NodeDir(tmp_path / "h_a"), cfg.replace(aggregation={"key_bits": 2048}))
    with pytest.raises(C.CeremonyError, match="paillier"):
        C.coordinator_setup(out, reg, cfg.replace(aggregation={"mode": "secagg"}))


APP_CONFIG = """
seed = 3
[data]
hospitals = 4
[model]
kind = "logreg"
[training]
rounds = 2
batch_size = 16
min_clients = 2
[privacy]
noise_multiplier = 1.0
reproducible = true
standardise = "public"
[aggregation]
mode = "paillier"
keys = "{keys}"
key_bits = 512
"""


@pytest.mark.parametrize("keys", ["holder", "threshold"])
def test_the_flower_app_runs_paillier_from_the_ceremony_files_only(tmp_path, keys):
    """The library Flower app (in-process Grid) with Paillier keys from the ceremony: every node loads its
    public setup and secret from its own node directory, the coordinator the public file from its run config;
    the study gives the same global models as the simulation (reproducible DP noise, exact Paillier sums)."""
    pytest.importorskip("flwr")
    from flwr.app import Context, RecordDict

    from fedvault.fl import config, simulation
    from fedvault.fl.integrations.flower import InProcessGrid
    from fedvault.fl.integrations.flower.app import client_app, server_main

    cfg = tmp_path / "study.toml"
    cfg.write_text(APP_CONFIG.format(keys=keys))
    root = tmp_path / "nodes"
    names = [f"hospital_{k}" for k in range(4)] + (["key_holder"] if keys == "holder" else [])
    provision(root, names, dirs=[f"node-{k}" for k in range(4)] + (["key_holder"] if keys == "holder" else []))
    reg = root / "registry.json"
    if keys == "holder":
        pub = C.keygen(root / "key_holder", BITS, tmp_path / "public.json", allow_small=True)
        for k in range(4):
            C.install(root / f"node-{k}", tmp_path / "public.json", pub.fingerprint)
        public_file, fp = tmp_path / "public.json", pub.fingerprint
    else:
        for k in range(4):
            C.share_key(root / f"node-{k}")
        dealt = C.deal(reg, 3, BITS, tmp_path / "dealer", allow_small=True,
                       share_keys=[root / f"node-{k}" / C.SHARE_REQUEST_FILE for k in range(4)])
        for k in range(4):
            node = NodeDir(root / f"node-{k}")
            C.install(node.path, dealt.public_path, dealt.public.fingerprint, dealt.shares[node.client])
        public_file, fp = dealt.public_path, dealt.public.fingerprint
    rc = {"fedvault-root": str(root), "fedvault-paillier": str(public_file), "fedvault-paillier-fingerprint": fp}
    nodes = {10 + k: {"partition-id": k} for k in range(4)}
    if keys == "holder":
        nodes[14] = {"fedvault-dir": str(root / "key_holder")}
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc)
    # without the announced fingerprint's file the coordinator refuses before any hospital trains
    bad = dict(rc, **{"fedvault-paillier-fingerprint": "00" * 32})
    from fedvault.fl.integrations.flower.app import PaillierNotSetUp

    with pytest.raises(PaillierNotSetUp, match="not the announced"):
        server_main(InProcessGrid(client_app(cfg), nodes, run_config=bad),
                    Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=bad), config=cfg)
    hist = server_main(InProcessGrid(client_app(cfg), nodes, run_config=rc), ctx, config=cfg)
    sim = simulation.federate(config.load(cfg), baseline=False).history
    assert [r["participants"] for r in hist["rounds"]] == [r["participants"] for r in sim["rounds"]] != [[]] * 2
    assert [r["model_sha256"] for r in hist["rounds"]] == [r["model_sha256"] for r in sim["rounds"]]
    assert hist["final"]["metrics"] == sim["final"]["metrics"]
    g = hist["rounds"][0]["guarantee"]
    assert g["keys"] == keys and g["key_bits"] == BITS and "TEST-ONLY" in g["line"]
    assert "key_holder" not in hist["hospitals"]


def test_a_coordinator_with_another_dealt_key_gets_no_sum(tmp_path):
    """Hospitals encrypt under the public setup THEY installed, never the coordinator's: a coordinator that runs
    a second deal for the same roster (a validly formed file it can decrypt with t colluding shares of its own
    deal) and uses it without the announced fingerprint gets every upload refused, and no round completes."""
    pytest.importorskip("flwr")
    from flwr.app import Context, RecordDict

    from fedvault.fl.errors import FederationError
    from fedvault.fl.integrations.flower import InProcessGrid
    from fedvault.fl.integrations.flower.app import client_app, server_main

    cfg = tmp_path / "study.toml"
    cfg.write_text(APP_CONFIG.format(keys="threshold").replace("rounds = 2", "rounds = 1"))
    root = tmp_path / "nodes"
    provision(root, [f"hospital_{k}" for k in range(4)], dirs=[f"node-{k}" for k in range(4)])
    reg = root / "registry.json"
    dealt = C.deal(reg, 3, BITS, tmp_path / "dealer", plaintext=True, allow_small=True)
    for k in range(4):
        node = NodeDir(root / f"node-{k}")
        C.install(node.path, dealt.public_path, dealt.public.fingerprint, dealt.shares[node.client])
    rogue = C.deal(reg, 3, BITS, tmp_path / "rogue", plaintext=True, allow_small=True)  # the coordinator's own
    rc = {"fedvault-root": str(root), "fedvault-paillier": str(rogue.public_path),
          "fedvault-history": str(tmp_path / "history.json")}
    grid = InProcessGrid(client_app(cfg), {10 + k: {"partition-id": k} for k in range(4)}, run_config=rc)
    with pytest.raises(FederationError, match="no round completed"):
        server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc), config=cfg)
    (r1,) = json.loads((tmp_path / "history.json").read_text())["rounds"]
    assert "participants" not in r1 or not r1["participants"]
    # each upload refused: it is bound to the key its hospital installed, not the coordinator's
    assert r1["blamed"] == {
        f"hospital_{k}": [f"InconsistentError: upload of client {NodeDir(root / f'node-{k}').client} is under another key"]
        for k in range(4)}


@pytest.mark.parametrize("junk", [None, [], {}, "zz", 123, -1, "0", True])
def test_malformed_files_raise_only_typed_errors(threshold_ceremony, tmp_path, junk):
    """Every field of a public file (fingerprint recomputed, so checks go past it) and of a share file, replaced
    by junk of another type: the loaders raise CeremonyError and nothing else."""
    c, reg_path, res = _fresh(threshold_ceremony, tmp_path)
    reg = Registry.load(reg_path)
    doc = json.loads(res.public_path.read_text())
    p = tmp_path / "mutated.json"
    variants = [dict(doc, **{k: junk}) for k in doc if k != "fingerprint"]
    variants += [dict(doc, setup=dict(doc["setup"], **{k: junk})) for k in doc["setup"]]
    for v in variants:
        v["fingerprint"] = C._public_fingerprint(v) if isinstance(v, dict) else None
        p.write_text(json.dumps(v))
        with pytest.raises(C.CeremonyError):
            C.load_public(p, reg)
    a = NodeDir(c / "h_a")
    sealed = json.loads(res.shares[a.client].read_text())
    for k in sealed:
        p.write_text(json.dumps(dict(sealed, **{k: junk})))
        with pytest.raises(C.CeremonyError):
            C.install(a.path, res.public_path, res.public.fingerprint, p)
    plain = C.deal(reg_path, 3, BITS, tmp_path / "plain", plaintext=True, allow_small=True)
    share = json.loads(plain.shares[a.client].read_text())
    for v in [dict(share, **{k: junk}) for k in share] + [dict(share, share=dict(share["share"], **{k: junk}))
                                                          for k in share["share"]]:
        p.write_text(json.dumps(v))
        with pytest.raises(C.CeremonyError):
            C.install(a.path, plain.public_path, plain.public.fingerprint, p)


def test_the_deployment_scripts_threshold_ceremony(tmp_path, capsys):
    """scripts/flower_deploy.py's paillier-threshold setup, without the SuperLink: every party's `fedvault`
    commands as separate processes; afterwards each hospital's node holds its own share (and no other), the
    dealer's output is gone, and the coordinator's run config names a public file it can load."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "flower_deploy.py"
    spec = importlib.util.spec_from_file_location("flower_deploy_ceremony", script)
    dep = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = dep
    spec.loader.exec_module(dep)
    env = dict(os.environ, PYTHONPATH=str(script.parent.parent))
    names = [f"hospital_{k}" for k in range(4)]
    nodes, roster = dep.enrol_consortium(tmp_path, names, env)
    extra = dep.MODES["paillier-threshold"].setup(tmp_path, names, nodes, tmp_path / "coordinator",
                                                   lambda argv: dep.fedvault(argv, env))
    assert not (tmp_path / "dealer").exists()  # the dealer deleted its output after delivery
    rc = extra["run_config"]
    pub = C.load_public(rc["fedvault-paillier"], Registry.load(roster), rc["fedvault-paillier-fingerprint"])
    assert (pub.setup.threshold, len(pub.setup.parties), pub.setup.public_key.n.bit_length()) == (3, 4, 1024)
    assert "TEST-ONLY" in capsys.readouterr().out
    indices = set()
    for n in names:
        node = NodeDir(nodes[n])
        share = node.paillier_secret()
        assert share.index == pub.setup.share_index(node.client)
        indices.add(share.index)
        assert not (node.path / C.SHARE_KEY_FILE).exists()
    assert indices == {1, 2, 3, 4}


def test_ceremony_commands_on_a_node_without_its_roster_say_what_to_run(tmp_path, capsys):
    from fedvault.fl.cli import main
    from fedvault.fl.integrations.flower.node import enrol

    enrol("key_holder", tmp_path / "kh")
    for argv in (["paillier", "keygen", str(tmp_path / "kh"), "--bits", str(BITS), "--insecure-test-key", "--out",
                  str(tmp_path / "p.json")], ["paillier", "share-key", str(tmp_path / "kh")]):
        assert main(argv) == 2
        assert "roster install" in capsys.readouterr().err
    assert not (tmp_path / "kh" / C.HOLDER_KEY_FILE).exists()
