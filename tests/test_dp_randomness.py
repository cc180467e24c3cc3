"""dp.randomness: AES-CTR streams keyed from the OS CSPRNG; reproducible streams only on request."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedvault.dp.errors import PrivacyError
from fedvault.dp.randomness import RandomStream


def test_os_streams_never_repeat_and_reproducible_streams_replay():
    a, b = RandomStream.from_os(), RandomStream.from_os()
    assert not a.reproducible and not b.reproducible
    assert a.random_bytes(32) != b.random_bytes(32)
    r1 = RandomStream.reproducible_from(42, "h0|1|noise")
    r2 = RandomStream.reproducible_from(42, "h0|1|noise")
    r3 = RandomStream.reproducible_from(42, "h0|2|noise")
    assert r1.reproducible
    assert np.array_equal(r1.normal(100), r2.normal(100))
    assert not np.array_equal(RandomStream.reproducible_from(42, "h0|1|noise").normal(100), r3.normal(100))
    key = bytes(range(32))
    assert key.hex() not in repr(RandomStream(key, reproducible=True))


def test_keystream_is_aes256_ctr_with_a_zero_nonce():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes(range(32))
    ks = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(48))
    s = RandomStream(key, reproducible=True)
    assert s.random_bytes(16) + s.random_bytes(32) == ks  # a stream continues across calls


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 300))
def test_uniforms_lie_on_the_53_bit_grid_in_the_unit_interval(n):
    u = RandomStream.from_os().uniform(n)
    assert u.shape == (n,) and u.dtype == np.float64
    assert np.all((u >= 0) & (u < 1))
    assert np.all(u * 2**53 % 1 == 0)  # k * 2^-53 exactly


class _FixedWords(RandomStream):
    """A stream whose keystream is given (to probe the extreme words)."""

    def __init__(self, words):
        super().__init__(bytes(32), reproducible=True)
        self._words = np.asarray(words, dtype="<u8").tobytes()

    def random_bytes(self, n):
        out, self._words = self._words[:n], self._words[n:]
        return out


def test_extreme_words_map_inside_the_interval_and_coins_are_exact_at_0_and_1():
    top = 2**64 - 1
    u = _FixedWords([0, top]).uniform(2)
    assert u[0] == 0.0 and u[1] == 1 - 2.0**-53 and u[1] < 1
    assert _FixedWords([top] * 3).bernoulli(3, 1.0).all()
    assert not _FixedWords([0] * 3).bernoulli(3, 0.0).any()
    z = _FixedWords([top, 0, top, 0] * 4).normal(2)  # u1 at its maximum: ln(1 - u1) is finite
    assert np.isfinite(z).all()
    z = _FixedWords([0] * 16).normal(2)  # u1 = 0: radius 0
    assert np.array_equal(z, np.zeros(2))


def test_gaussians_are_standard_normal():
    # fixed key: a deterministic sample (no flaky statistics); the OS path uses the same code
    z = RandomStream.reproducible_from(7, "ks").normal(200_000)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(stats.kurtosis(z)) < 0.05
    w = RandomStream.from_os().normal(100_000, std=2.5)
    assert w.std() == pytest.approx(2.5, rel=0.03)  # sd of the estimate ~ 0.2%


def test_bernoulli_rate():
    c = RandomStream.from_os().bernoulli(200_000, 0.3)
    assert c.mean() == pytest.approx(0.3, abs=0.006)  # ~ 6 standard deviations


def test_refusals():
    with pytest.raises(PrivacyError):
        RandomStream(b"short", reproducible=False)
    with pytest.raises(PrivacyError):
        RandomStream.reproducible_from(-1, "x")
    with pytest.raises(PrivacyError):
        RandomStream.reproducible_from(True, "x")  # type: ignore[arg-type]
    s = RandomStream.from_os()
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(PrivacyError):
            s.bernoulli(3, bad)
    with pytest.raises(PrivacyError):
        s.normal(3, std=math.inf)


def test_the_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fedvault.dp.randomness; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
