"""jaxmlp.shuffle.permutation: a bijection of 0 … n-1 for every n, keyed, and uniform where we can count.

Uniformity is tested on small n, where all n! orderings can be counted over many keys: a chi-square
statistic against the uniform distribution, with a threshold at the 99.9 % quantile (the keys are fixed,
so the test is deterministic, not flaky). The same test fails on a 3-bit domain, or with 4 rounds on a
4-bit one: the 2^10 floor and the 8 rounds are both margin over what is needed.
"""

from collections import Counter

import jax
import numpy as np
import pytest

from jaxmlp import shuffle
from jaxmlp.shuffle import permutation

# chi-square 99.9 % quantiles for n! - 1 degrees of freedom (scipy.stats.chi2.ppf(0.999, df))
CHI2_999 = {5: 20.515, 119: 170.9}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1023, 1024, 1025, 2048, 2049, 5000])
def test_is_a_permutation_of_range_n(n):
    p = np.asarray(jax.jit(permutation, static_argnums=1)(jax.random.key(n), n))
    assert p.dtype == np.int32 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_same_key_same_permutation_other_key_other_permutation():
    a, b = permutation(jax.random.key(0), 1000), permutation(jax.random.key(0), 1000)
    c = permutation(jax.random.key(1), 1000)
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.asarray(a) == np.asarray(c)) < 0.01  # about 1/n agree by chance
    assert np.mean(np.asarray(a) == np.arange(1000)) < 0.01  # not the identity


def _chi2(perms, n):
    counts = Counter(map(tuple, np.asarray(perms)))
    expected = len(perms) / np.prod(np.arange(1, n + 1))
    observed = np.array([counts.get(p, 0) for p in _all_orderings(n)])
    return np.sum((observed - expected) ** 2 / expected)


def _all_orderings(n):
    from itertools import permutations

    return list(permutations(range(n)))


@pytest.mark.parametrize("n, draws", [(3, 30_000), (5, 60_000)])
def test_small_n_orderings_are_uniform(n, draws):
    keys = jax.random.split(jax.random.key(42), draws)
    perms = jax.jit(jax.vmap(lambda k: permutation(k, n)))(keys)
    assert _chi2(perms, n) < CHI2_999[np.prod(np.arange(1, n + 1)) - 1]


@pytest.mark.parametrize("rounds, min_bits", [(8, 3), (4, 4)], ids=["3-bit-domain", "4-rounds-4-bits"])
def test_without_enough_rounds_or_domain_small_n_is_not_uniform(monkeypatch, rounds, min_bits):
    """The safeguards matter, so the uniformity test can fail: a tiny domain, or too few rounds on a small
    one, give orderings of 5 far from uniform (measured chi-square 477 and 314 against 171)."""
    monkeypatch.setattr(shuffle, "ROUNDS", rounds)
    monkeypatch.setattr(shuffle, "MIN_BITS", min_bits)
    keys = jax.random.split(jax.random.key(42), 60_000)
    perms = jax.jit(jax.vmap(lambda k: permutation(k, 5)))(keys)
    assert _chi2(perms, 5) > 1.5 * CHI2_999[119]


def test_positions_are_uniform_for_large_n():
    """Where element 0 lands, over 4000 keys, n = 3000: uniform over 10 bins of positions (chi-square, 9 dof)."""
    n, draws = 3000, 4000
    keys = jax.random.split(jax.random.key(7), draws)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(keys))
    where0 = np.argmax(perms == 0, axis=1)
    observed = np.bincount(where0 * 10 // n, minlength=10)
    assert np.sum((observed - draws / 10) ** 2 / (draws / 10)) < 27.88  # chi2.ppf(0.999, 9)


@pytest.mark.parametrize("n", [0, -1, 2.0, True, 2**30 + 1])
def test_bad_n_raises(n):
    with pytest.raises(ValueError, match="n must be an int"):
        permutation(jax.random.key(0), n)


def test_accepts_numpy_ints():
    np.testing.assert_array_equal(np.sort(permutation(jax.random.key(0), np.int64(9))), np.arange(9))
