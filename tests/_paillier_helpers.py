"""Shared pieces of the Paillier tests: small keys (512 bits, tests only), honest roles, a colluder."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fedvault.protocols.codec import SERVER_ID
from fedvault.protocols.paillier import (HolderDecryptor, KeySetup, MemoryDecryptLog, PaillierClient, PaillierParams,
                                         PaillierServer, ThresholdParty, setup_keys)
from fedvault.protocols.paillier.messages import AggregateRequest, Upload, pack_elements, signed
from fedvault.protocols.paillier.verify import proof_context
from fedvault.secagg.paillier import ciphertext_bytes, seeded_random
from fedvault.secagg.paillier_proofs import prove_plaintexts

CLIENTS = (11, 12, 13, 14, 15)
SID = b"study-A"


def params(keys: str, rnd: int = 1, **kw) -> PaillierParams:
    kw.setdefault("min_clients", 3)
    return PaillierParams(SID, rnd, CLIENTS, keys=keys, key_bits=512, clip=2.0, **kw)


@functools.lru_cache(maxsize=None)
def setup(keys: str) -> KeySetup:
    return setup_keys(params(keys), rng=seeded_random(b"setup-" + keys.encode()))


def inputs(d: int = 130, who=CLIENTS) -> dict[int, np.ndarray]:
    return {c: np.sin(np.arange(d) * (c % 7 + 1)) * 2.5 for c in who}  # some values beyond the clip


def expected_total(p: PaillierParams, xs: dict[int, np.ndarray]) -> np.ndarray:
    lay = p.layout
    return lay.dequantise_sum(sum(lay.quantise(x) for x in xs.values()), len(xs))


class Round:
    """One round's honest parties, for attacking them one message at a time."""

    def __init__(self, keys: str, rnd: int, who=CLIENTS, d: int = 20) -> None:
        # the study's keys with fresh decrypt logs (each Round is a new deployment of the same keys)
        self.keys, self.s, self.p = keys, dataclasses.replace(setup(keys), logs={}), params(keys, rnd)
        self.ids = self.s.simulated_identities(sorted(set(CLIENTS) | set(self.s.public.decryptors())))
        self.pubs = {i: k.public_key() for i, k in self.ids.items()}
        self.x = inputs(d, who)
        self.uploads: dict[int, Upload] = {c: self.client(c).start()[0] for c in who}

    def client(self, c: int, rng: bytes | None = None) -> PaillierClient:
        return PaillierClient(self.p, self.s.public, c, self.ids[c], self.s.encryptor(), seeded_random(rng or bytes([c])),
                              x=self.x.get(c, np.zeros(20)))

    def server(self) -> PaillierServer:
        return PaillierServer(self.p, self.s.public, self.pubs)

    def holder(self, log=None) -> HolderDecryptor:
        return HolderDecryptor(self.p, self.s.public, self.s.holder_key, self.ids[0], self.pubs,
                               log=log if log is not None else MemoryDecryptLog())

    def party(self, i: int, log=None) -> ThresholdParty:
        return ThresholdParty(self.p, self.s.public, i, self.s.shares[i], self.ids[i], self.pubs,
                              seeded_random(b"party" + bytes([i])), log=log if log is not None else MemoryDecryptLog())

    def request(self, ups) -> AggregateRequest:
        return AggregateRequest(self.p.session_tag, self.p.round, SERVER_ID, tuple(ups))

    def forged_upload(self, sender: int, ciphertexts: list[int], proof: tuple[int, int, int] | None = None,
                      length: int | None = None) -> Upload:
        """An upload by a colluding hospital ``sender``: arbitrary ciphertexts, its own valid signature."""
        w = ciphertext_bytes(512)
        length = length if length is not None else self.uploads[next(iter(self.uploads))].length
        prf = proof if proof is not None else (1, 0, 0)
        return signed(Upload(self.p.session_tag, self.p.round, sender, self.s.public.fingerprint(), length, w,
                             pack_elements(ciphertexts, w), pack_elements(prf, w), bytes(64)), self.ids[sender])

    def known_plaintext_upload(self, sender: int, plaintexts: list[int]) -> Upload:
        """A colluder's upload of plaintexts of its choice (any value in Z_n), with a *valid* proof: it knows them."""
        enc = self.s.encryptor()
        cts, exps = enc.encrypt_ints_with_exponents(plaintexts, seeded_random(b"colluder"))
        length = self.uploads[next(iter(self.uploads))].length
        fp = self.s.public.fingerprint()
        pr = prove_plaintexts(enc.n, enc.h_s, 8 * enc.exponent_bytes, cts, plaintexts, exps,
                              context=proof_context(self.p, sender, fp, length), rng=seeded_random(b"proof"))
        return self.forged_upload(sender, cts, (pr.commitment, pr.z_m, pr.z_a), length)


def cts(up: Upload) -> list[int]:
    w = up.width
    return [int.from_bytes(up.ciphertexts[i:i + w], "big") for i in range(0, len(up.ciphertexts), w)]
