"""Packed Paillier with proofs vs per-value phe (issues 4, 12): ``python -m benchmarks paillier [--quick]``.

Measured side by side in one run, for each key size:

* per-value phe: ``PaillierPublicKey.encrypt`` of ``--phe-d`` floats (measured) and
  ``raw_decrypt`` per ciphertext; both extrapolated linearly to 1e6 values;
* packed (:mod:`secagg.paillier`): encryption of d = 1e4, 1e5, 1e6 values with the
  conservative DJN exponent and with the short exponent, on ``--workers`` processes,
  then the proof of plaintext knowledge every upload now carries
  (:mod:`secagg.paillier_proofs`): proving (client) and verifying (server, and again each
  decryptor) timed separately; the speedup over phe counts encryption + proof;
* bytes per client: packed ciphertexts vs phe's ``2|n|`` bits per value;
* a 10-client holder-mode round at d = 1e6 through the roles and the driver
  (:func:`protocols.paillier.simulate_round`): the holder's time (signature and proof
  checks of every upload, its own homomorphic sum, CRT decryption), its CRT decryption
  alone, and the per-ciphertext time against the CRT floor (phe's ``raw_decrypt``, one core);
* range proofs: the lower bound on what per-slot range proofs would cost (one
  commitment exponentiation per slot, i.e. at least ``slots`` times a packed encryption),
  against the 3x budget of issue 12;

Every timing records wall seconds and CPU seconds (this process plus its pool workers).
When other jobs share the machine, ``cpu / workers`` is what the wall time would be on
otherwise idle cores; both are reported, and the targets are judged on wall time.
* threshold mode at a small d (safe-prime dealing, share + proof per party, verification
  and combination), for orientation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
from phe import paillier as phe

from benchmarks._report import markdown_table, write
from fedvault.protocols.paillier import PaillierParams, setup_keys, simulate_round
from fedvault.secagg.paillier import (PARALLEL_MIN, EncryptedVector, FastEncryptor, PackingLayout, ciphertext_bytes,
                                      generate_keypair)
from fedvault.secagg.paillier_proofs import djn_hs, prove_plaintexts, verify_vector

TARGET_CONSERVATIVE = 2000.0
TARGET_SHORT = 5000.0
TARGET_BYTES = 1 / 100
TARGET_DECRYPT_S = 25.0
TARGET_WITH_PROOF = 1000.0  # issue 12: with proofs, encrypting 1e6 parameters stays >= 1000x faster than phe
RANGE_PROOF_BUDGET = 3.0  # issue 12: build per-slot range proofs only if proving + verifying <= 3x encryption


def _t(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _cpu() -> float:
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def _cores(args: argparse.Namespace, ciphertexts: int) -> int:
    """Processes a vector of ``ciphertexts`` is spread over (see ``secagg.paillier.PARALLEL_MIN``)."""
    return max(1, args.workers) if ciphertexts >= PARALLEL_MIN else 1


def _tc(fn) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds (self + reaped children) and the result of ``fn()``."""
    c0, t0 = _cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, _cpu() - c0, out


def _phe_per_value(pk: phe.PaillierPublicKey, sk: phe.PaillierPrivateKey, d: int, d_dec: int) -> dict:
    vals = np.random.default_rng(0).uniform(-1, 1, d)
    enc_s, enc_cpu, cts = _tc(lambda: [pk.encrypt(float(v)) for v in vals])
    raw = [c.ciphertext(be_secure=False) for c in cts[:d_dec]]
    dec_s, dec_cpu, _ = _tc(lambda: [sk.raw_decrypt(c) for c in raw])
    return {"d_measured": d, "encrypt_s": enc_s, "encrypt_s_per_value": enc_s / d,
            "encrypt_cpu_s_per_value": enc_cpu / d, "decrypt_s_per_ciphertext": dec_s / len(raw),
            "decrypt_cpu_s_per_ciphertext": dec_cpu / len(raw),
            "bytes_per_value": ciphertext_bytes(pk.n.bit_length())}


def _bench_key(key_bits: int, args: argparse.Namespace) -> dict:
    print(f"== {key_bits}-bit key", flush=True)
    pk, sk = generate_keypair(key_bits)
    ph = _phe_per_value(pk, sk, args.phe_d, min(args.phe_d, 1000))
    print(f"phe: {ph['encrypt_s_per_value'] * 1e3:.2f} ms/value enc, "
          f"{ph['decrypt_s_per_ciphertext'] * 1e3:.2f} ms/ct dec", flush=True)
    layout = PackingLayout(key_bits, 16, args.clients, 1.0)
    out: dict[str, Any] = {"key_bits": key_bits, "layout": layout.describe(), "phe": ph, "packed": []}
    for short in (False, True):
        t_table, enc = _t(lambda: FastEncryptor(pk, short_exponent=short))
        for d in args.dims:
            x = np.random.default_rng(d).uniform(-1, 1, d)
            reps = 3 if d <= 100_000 else 1
            hs = djn_hs(pk.n)
            times, cpus, proves, verifies = [], [], [], []
            for _ in range(reps):
                pts = layout.pack(layout.quantise(x))
                s, cpu, (cts, exps) = _tc(lambda: enc.encrypt_ints_with_exponents(pts, os.urandom, args.workers))
                vec = EncryptedVector(pk, layout, d, 1, tuple(cts))
                ps, _, proof = _tc(lambda: prove_plaintexts(enc.n, enc.h_s, 8 * enc.exponent_bytes, cts, pts, exps,
                                                            context=b"bench", workers=args.workers))
                vs, _, _ = _tc(lambda: verify_vector(hs, vec, proof, context=b"bench", workers=args.workers))
                times.append(s)
                cpus.append(cpu)
                proves.append(ps)
                verifies.append(vs)
            s, cpu = statistics.median(times), statistics.median(cpus)
            prove_s, verify_s = statistics.median(proves), statistics.median(verifies)
            phe_s = ph["encrypt_s_per_value"] * d
            phe_cpu = ph["encrypt_cpu_s_per_value"] * d
            row = {"key_bits": key_bits, "exponent": "short" if short else "conservative",
                   "exponent_bits": enc.exponent_bits, "table_s": t_table, "d": d,
                   "ciphertexts": len(vec.ciphertexts), "encrypt_s": s, "prove_s": prove_s, "verify_s": verify_s,
                   "encrypt_prove_s": s + prove_s,
                   "proof_over_encrypt": (prove_s + verify_s) / s,
                   "phe_encrypt_s": phe_s, "phe_measured": d <= ph["d_measured"],
                   "speedup": phe_s / s, "speedup_with_proof": phe_s / (s + prove_s),
                   "encrypt_cpu_s": cpu, "phe_encrypt_cpu_s": phe_cpu,
                   "speedup_idle_cores": phe_cpu / max(cpu / _cores(args, len(vec.ciphertexts)), 1e-9),
                   "bytes": vec.nbytes, "phe_bytes": ph["bytes_per_value"] * d,
                   "bytes_ratio": vec.nbytes / (ph["bytes_per_value"] * d),
                   "cpu_ms_per_ciphertext": cpu / len(vec.ciphertexts) * 1e3,
                   "range_proof_lower_bound_x": float(layout.slots)}
            out["packed"].append(row)
            print(f"packed {row['exponent']:12s} d={d:>8d}: enc {s:8.3f} s + prove {prove_s:.3f} s "
                  f"(verify {verify_s:.3f} s), x{row['speedup_with_proof']:8.0f} vs phe with proof, "
                  f"{vec.nbytes / 1e6:.2f} MB", flush=True)
    # -- a 10-client holder round at the largest d -------------------------------------
    d = max(args.dims)
    clients = tuple(range(1, args.clients + 1))
    params = PaillierParams(b"bench", 1, clients, min_clients=args.clients, keys="holder", key_bits=key_bits,
                            clip=1.0, short_exponent=True)
    setup = setup_keys(params, keypair=(pk, sk))
    enc = setup.encryptor(True)  # build the table outside the timed round
    inputs = {c: np.random.default_rng(c).uniform(-1, 1, d) for c in clients}
    c0 = _cpu()
    res = simulate_round(params, setup, inputs, seed=os.urandom(32), workers=args.workers)
    round_cpu = _cpu() - c0
    err = float(np.max(np.abs(res.total - sum(inputs.values()))))
    n_ct = params.layout.ciphertexts_for(d)
    c = enc.encrypt_int(12345)
    ours_1core = statistics.median(_t(lambda: setup.crt_decryptor().decrypt_int(c))[0] for _ in range(20))
    rnd = np.random.default_rng(0)
    summed = [enc.encrypt_int(int(rnd.integers(1, 2**62))) for _ in range(min(n_ct, 2000))]
    crt_s, crt_cpu, _ = _tc(lambda: setup.crt_decryptor().decrypt_ints(summed, workers=args.workers))
    crt_per_ct = crt_s / len(summed)
    out["round_holder"] = {
        "clients": args.clients, "d": d, "ciphertexts": n_ct,
        "seconds": dict(res.seconds), "round_cpu_s": round_cpu,
        "holder_crt_decrypt_s_est": crt_per_ct * n_ct,
        "holder_verify_s_est": res.seconds["decrypt"] - crt_per_ct * n_ct,
        "decrypt_ms_per_ciphertext_wall": res.seconds["decrypt"] / n_ct * 1e3,
        "crt_floor_ms_per_ciphertext_phe_1core": ph["decrypt_s_per_ciphertext"] * 1e3,
        "ours_ms_per_ciphertext_1core": ours_1core * 1e3,
        "phe_decrypt_1e6_s_extrapolated": ph["decrypt_s_per_ciphertext"] * d,
        "max_abs_error": err, "error_bound": params.layout.error_bound(args.clients),
        "upload_bytes_per_client": max(res.upload_bytes.values()),
    }
    print(f"{args.clients}-client round d={d}: {out['round_holder']['seconds']}", flush=True)
    return out


def _bench_threshold(args: argparse.Namespace) -> dict:
    key_bits, d = args.threshold_bits, args.threshold_d
    clients = tuple(range(1, 6))
    params = PaillierParams(b"bench-t", 1, clients, min_clients=3, keys="threshold", key_bits=key_bits,
                            clip=1.0, threshold=3)
    t_setup, setup = _t(lambda: setup_keys(params))
    setup.encryptor(False)
    inputs = {c: np.random.default_rng(c).uniform(-1, 1, d) for c in clients}
    res = simulate_round(params, setup, inputs, seed=b"bench-t", workers=args.workers)
    print(f"threshold {key_bits}-bit d={d}: setup {t_setup:.1f} s, {res.seconds}", flush=True)
    return {"key_bits": key_bits, "d": d, "parties": 5, "threshold": 3, "dealer_setup_s": t_setup,
            "ciphertexts": params.layout.ciphertexts_for(d), "seconds": res.seconds}


def _markdown(payload: dict) -> str:
    lines = ["# Packed Paillier vs per-value phe", "",
             f"Machine: {payload['machine']['cpus']} CPUs, Python {payload['machine']['python']}; "
             f"workers = {payload['workers']}; {payload['clients']} clients' headroom; 16-bit values; "
             f"1-min load average {payload['loadavg_1min']['start']:.2f} at start, "
             f"{payload['loadavg_1min']['end']:.2f} at end (other jobs share the cores). "
             "phe columns at d > phe's measured d are linear extrapolations of the measured per-value cost. "
             f"Command: `{payload.get('command', 'python -m benchmarks paillier')}`"
             f" ({payload.get('run_seconds', 0) / 60:.1f} min).", ""]
    rows = [r for k in payload["keys"] for r in k["packed"]]
    lines.append(markdown_table(rows, ["key_bits", "exponent", "exponent_bits", "d", "ciphertexts", "encrypt_s",
                                       "prove_s", "verify_s", "proof_over_encrypt", "phe_encrypt_s", "phe_measured",
                                       "speedup", "speedup_with_proof", "speedup_idle_cores", "bytes",
                                       "bytes_ratio", "cpu_ms_per_ciphertext", "table_s"]))
    lines += ["", "Proof cost per client = `prove_s` (the hospital) + `verify_s` (the server, and again each "
              "decryptor). Per-slot range proofs would cost at least one commitment exponentiation per slot, "
              f"i.e. >= `slots_per_plaintext` x a packed encryption "
              f"({', '.join(str(int(k['packed'][0]['range_proof_lower_bound_x'])) + 'x at ' + str(k['key_bits']) for k in payload['keys'])}"
              f"), far above the {RANGE_PROOF_BUDGET:g}x budget: not built (SECURITY.md states the residual).", "",
              "## 10-client holder round (roles + driver, proofs on, short exponent for the uploads)", ""]
    rr = []
    for k in payload["keys"]:
        r = k["round_holder"]
        rr.append({"key_bits": k["key_bits"], "d": r["d"], "ciphertexts": r["ciphertexts"],
                   "client encrypt+prove s": r["seconds"]["encrypt"], "server s (verify+sum+decode)": r["seconds"]["sum"],
                   "holder s (verify+decrypt)": r["seconds"]["decrypt"],
                   "holder CRT decrypt s (est.)": r["holder_crt_decrypt_s_est"],
                   "ms/ct wall": r["decrypt_ms_per_ciphertext_wall"],
                   "ours ms/ct 1 core": r["ours_ms_per_ciphertext_1core"],
                   "CRT floor ms/ct (phe, 1 core)": r["crt_floor_ms_per_ciphertext_phe_1core"],
                   "phe decrypt 1e6 s (extrap.)": r["phe_decrypt_1e6_s_extrapolated"],
                   "max_abs_error": r["max_abs_error"], "error_bound": r["error_bound"],
                   "MB/client": r["upload_bytes_per_client"] / 1e6})
    lines.append(markdown_table(rr, list(rr[0])))
    if payload.get("threshold"):
        t = payload["threshold"]
        lines += ["", "## Threshold mode (3 of 5, dealer with safe primes)", "",
                  markdown_table([{"key_bits": t["key_bits"], "d": t["d"], "ciphertexts": t["ciphertexts"],
                                   "dealer_setup_s": t["dealer_setup_s"], **t["seconds"]}],
                                 ["key_bits", "d", "ciphertexts", "dealer_setup_s", "encrypt", "sum", "decrypt"])]
    lines += ["", "## Targets", ""]
    lines.append(markdown_table(payload["targets"], ["target", "key_bits", "measured", "idle cores", "goal",
                                                     "met"]))
    return "\n".join(lines) + "\n"


def _targets(keys: list[dict]) -> list[dict]:
    out = []
    for k in keys:
        big = max(r["d"] for r in k["packed"])
        by = {r["exponent"]: r for r in k["packed"] if r["d"] == big}
        out.append({"target": f"encrypt d={big} speedup, conservative", "key_bits": k["key_bits"],
                    "measured": by["conservative"]["speedup"],
                    "idle cores": by["conservative"]["speedup_idle_cores"], "goal": f">= {TARGET_CONSERVATIVE:.0f}x",
                    "met": by["conservative"]["speedup"] >= TARGET_CONSERVATIVE})
        out.append({"target": f"encrypt d={big} speedup, short exponent", "key_bits": k["key_bits"],
                    "measured": by["short"]["speedup"], "idle cores": by["short"]["speedup_idle_cores"], "goal": f">= {TARGET_SHORT:.0f}x",
                    "met": by["short"]["speedup"] >= TARGET_SHORT})
        out.append({"target": f"encrypt + prove d={big} speedup, conservative", "key_bits": k["key_bits"],
                    "measured": by["conservative"]["speedup_with_proof"], "goal": f">= {TARGET_WITH_PROOF:.0f}x",
                    "met": by["conservative"]["speedup_with_proof"] >= TARGET_WITH_PROOF})
        out.append({"target": f"encrypt + prove d={big} speedup, short exponent", "key_bits": k["key_bits"],
                    "measured": by["short"]["speedup_with_proof"], "goal": f">= {TARGET_WITH_PROOF:.0f}x",
                    "met": by["short"]["speedup_with_proof"] >= TARGET_WITH_PROOF})
        out.append({"target": "ciphertext bytes / phe", "key_bits": k["key_bits"],
                    "measured": by["conservative"]["bytes_ratio"], "goal": "<= 0.01",
                    "met": by["conservative"]["bytes_ratio"] <= TARGET_BYTES})
        r = k["round_holder"]
        stated = k["key_bits"] == 2048  # the issue states the decryption target for 2048-bit keys
        out.append({"target": f"holder decrypt of {r['clients']}-client d={r['d']} sum (s)", "key_bits": k["key_bits"],
                    "measured": r["seconds"]["decrypt"],
                    "goal": f"< {TARGET_DECRYPT_S:.0f} s" if stated else "(reported)",
                    "met": (r["seconds"]["decrypt"] < TARGET_DECRYPT_S) if stated else "-"})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks paillier", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (1024-bit key, small d)")
    ap.add_argument("--keys", default="2048,3072", help="comma-separated key sizes")
    ap.add_argument("--phe-d", type=int, default=10_000, help="values encrypted with per-value phe (measured)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--no-threshold", action="store_true")
    ap.add_argument("--threshold-bits", type=int, default=2048)
    ap.add_argument("--threshold-d", type=int, default=10_000)
    ap.add_argument("--dims", default=None, help="comma-separated vector lengths (default 1e4,1e5,1e6)")
    ap.add_argument("--out", default=None, help="output directory (default benchmarks/results)")
    ap.add_argument("--render", default=None, metavar="JSON", help="only re-render the markdown of a results JSON")
    args = ap.parse_args(argv)
    args.dims_arg = args.dims
    if args.render:
        from pathlib import Path
        src = Path(args.render)
        payload = json.loads(src.read_text())
        payload["targets"] = _targets(payload["keys"])
        src.write_text(json.dumps(payload, indent=2))
        src.with_suffix(".md").write_text(_markdown(payload))
        return 0
    if args.quick:
        args.keys, args.phe_d, args.dims = "1024", 200, [1_000, 10_000]
        args.threshold_bits, args.threshold_d = 1024, 1_000
    else:
        args.dims = [10_000, 100_000, 1_000_000]
    if args.dims_arg:
        args.dims = [int(float(d)) for d in args.dims_arg.split(",")]
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    keys = [_bench_key(int(b), args) for b in args.keys.split(",")]
    payload: dict[str, Any] = {"workers": args.workers, "clients": args.clients, "quick": args.quick,
                               "keys": keys, "targets": _targets(keys)}
    if not args.no_threshold:
        payload["threshold"] = _bench_threshold(args)
    payload["loadavg_1min"] = {"start": load_start[0], "end": os.getloadavg()[0]}
    payload["command"] = "python -m benchmarks paillier " + " ".join(argv if argv is not None else __import__("sys").argv[2:])
    payload["run_seconds"] = time.perf_counter() - t_start
    name = "paillier_quick" if args.quick else "paillier"
    from pathlib import Path
    jp, mp = write(name, payload, "", Path(args.out) if args.out else None)
    from benchmarks._report import machine
    payload["machine"] = machine()
    mp.write_text(_markdown(payload))
    print(mp.read_text())
    return 0
