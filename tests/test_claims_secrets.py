"""What leaves a hospital and what is persisted: no secret in a wire message, a log line, the
output or history.json.

Claims: PLAN/SECURITY — "no secrets logged"; SECURITY "Flower deployments": secrets are "never in a
Flower record, Context.state or a log line"; SECURITY Paillier: "the dealer erases p, q and the
secret exponent", each secret "goes only to its owner"; README "What stays where": "Flower carries
only public protocol messages". Played on the in-process engine (the same roles and messages as a
deployment): every secret a run creates is collected and searched for in every byte that leaves
(the wire transcript), every log record at DEBUG, stdout/stderr, and the history JSON.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest

from fedvault.fl.config import from_dict


def _forms(secret: bytes | int) -> list[bytes]:
    """The ways a secret could show up: raw bytes, hex, base64; for integers decimal and hex too."""
    if isinstance(secret, int):
        raw = secret.to_bytes((secret.bit_length() + 7) // 8, "big")
        out = [str(secret).encode(), format(secret, "x").encode()]
    else:
        raw, out = secret, []
    out += [raw, raw.hex().encode(), base64.b64encode(raw)]
    return [s for s in out if len(s) >= 16]  # long enough never to match by chance


def _collect(monkeypatch, mode: str) -> tuple[dict[str, list[bytes]], object, list]:
    import fedvault.protocols.paillier as P
    from fedvault.fl.simulation import federate
    secrets: dict[str, list[bytes]] = {}
    real = P.setup_keys

    def spying_setup_keys(*a, **kw):
        ks = real(*a, **kw)
        if ks.holder_key is not None:
            secrets["paillier p"] = _forms(int(ks.holder_key.p))
            secrets["paillier q"] = _forms(int(ks.holder_key.q))
        for i, sh in ks.shares.items():
            secrets[f"threshold share {i}"] = _forms(int(sh.secret))
        return ks

    monkeypatch.setattr(P, "setup_keys", spying_setup_keys)
    agg = {"mode": "secagg"} if mode == "secagg" else {"mode": "paillier", "keys": mode, "key_bits": 512}
    cfg = from_dict({"seed": 9, "data": {"hospitals": 3}, "training": {"rounds": 1},
                     "privacy": {"noise_multiplier": 1.0}, "aggregation": agg})
    transcript: list = []
    run = federate(cfg, baseline=False, transcript=transcript)
    for h in run.hospitals:
        secrets[f"{h.name} identity key"] = _forms(h.identity.private_bytes_raw())
    return secrets, run, transcript


@pytest.mark.parametrize("mode", ["secagg", "holder", "threshold"])
def test_no_secret_leaves_in_a_message_a_log_line_or_history(monkeypatch, caplog, capsys, mode):
    with caplog.at_level(logging.DEBUG):
        secrets, run, transcript = _collect(monkeypatch, mode)
    assert secrets and (mode == "secagg" or any(k.startswith(("paillier", "threshold")) for k in secrets))
    wire = b"".join(bytes(data) for _, _, data in transcript)
    out = capsys.readouterr()
    places = {
        "wire messages": wire,
        "log records": "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records).encode(),
        "stdout/stderr": (out.out + out.err).encode(),
        "history.json": json.dumps(run.history).encode(),
    }
    assert wire, "no protocol messages recorded"
    for where, blob in places.items():
        for what, forms in secrets.items():
            for form in forms:
                assert form not in blob, f"{what} appears in {where}"


@pytest.mark.parametrize("mode", ["holder", "threshold"])
def test_the_decrypt_once_log_persists_no_plaintext_in_a_private_directory(monkeypatch, tmp_path, mode):
    """README ``FEDVAULT_STATE_DIR``: each decryptor keeps its durable decrypt-once log in
    ``decrypt-log/<key fingerprint>/`` (mode 0700); SPEC P4: the record is
    ``{"aggregate_sha256", "contributors"}`` — never the decrypted sum."""
    import os
    import stat

    monkeypatch.setenv("FEDVAULT_STATE_DIR", str(tmp_path))
    _, run, _ = _collect(monkeypatch, mode)
    logs = [d for d in (tmp_path / "decrypt-log").iterdir() if d.is_dir()]
    assert logs, "no decrypt-once log was written"
    records = 0
    for d in logs:
        assert stat.S_IMODE(os.stat(d).st_mode) & 0o077 == 0, oct(os.stat(d).st_mode)
        for f in d.iterdir():
            if f.suffix != ".json":
                continue
            doc = json.loads(f.read_text())
            assert set(doc) == {"aggregate_sha256", "contributors"}, doc
            records += 1
    assert records >= 1
