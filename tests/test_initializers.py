"""Initializers through ``jaxmlp.init_mlp``: shapes, dtypes, statistics, untruncated tails, errors, and the
compiled program's values bit for bit those of the op-by-op equations (that it is one program: ``test_perf.py``).

Statistics use one non-square layer with n_in = 2000, n_out = 500 (10^6 weights), so that the
schemes' variances differ (xavier 2/2500, he 2/2000, lecun 1/2000) and a transposed fan shows.
The sample variance of 10^6 draws has a relative standard deviation of about 0.14%, so 1% is > 7σ.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import initializers
from jaxmlp.types import Layer

N_IN, N_OUT = 2000, 500
VARIANCE = {
    "xavier": 2 / (N_IN + N_OUT),
    "xavier_uniform": 2 / (N_IN + N_OUT),
    "he": 2 / N_IN,
    "he_uniform": 2 / N_IN,
    "lecun": 1 / N_IN,
    "pytorch": 1 / (3 * N_IN),  # U(±1/√n_in) has variance (1/√n_in)² / 3
}
UNIFORM_LIMIT = {
    "xavier_uniform": math.sqrt(6 / (N_IN + N_OUT)),
    "he_uniform": math.sqrt(6 / N_IN),
    "pytorch": 1 / math.sqrt(N_IN),
}
NORMAL = ("xavier", "he", "lecun")
SIZES = [3, 4, 2]


@pytest.fixture(scope="module")
def big_layers():
    """One (500, 2000) layer per random scheme, drawn once, as float64 NumPy arrays."""
    out = {}
    for init in VARIANCE:
        (layer,) = jaxmlp.init_mlp(jax.random.key(42), [N_IN, N_OUT], init=init)
        out[init] = Layer(np.asarray(layer.W, np.float64), np.asarray(layer.b, np.float64))
    return out


def test_names():
    assert set(initializers.NAMES) == set(VARIANCE) | {"zeros"}


@pytest.mark.parametrize("init", initializers.NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=["float32", "bfloat16", "float16"])
def test_shapes_and_dtype(init, dtype):
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES, init=init, dtype=dtype)
    assert isinstance(params, tuple) and len(params) == len(SIZES) - 1
    for layer, n_in, n_out in zip(params, SIZES[:-1], SIZES[1:]):
        assert isinstance(layer, Layer)
        assert layer.W.shape == (n_out, n_in) and layer.b.shape == (n_out,)
        assert layer.W.dtype == dtype and layer.b.dtype == dtype


@pytest.mark.parametrize("init", initializers.NAMES)
def test_float64_dtype(init, x64):
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES, init=init, dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(params))


def test_default_dtype_is_float32_even_under_x64(x64):
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("init", list(VARIANCE))
def test_mean_and_variance(init, big_layers):
    W = big_layers[init].W
    var = VARIANCE[init]
    assert abs(W.mean()) < 5 * math.sqrt(var / W.size)  # 5 standard errors of the mean
    np.testing.assert_allclose(W.var(), var, rtol=0.01)


@pytest.mark.parametrize("init", list(UNIFORM_LIMIT))
def test_uniform_bounds(init, big_layers):
    W = big_layers[init].W
    limit = UNIFORM_LIMIT[init]
    assert np.abs(W).max() <= limit * (1 + 1e-6)
    assert np.abs(W).max() > 0.999 * limit  # the support really reaches the bound
    assert (W > 0.9 * limit).mean() == pytest.approx(0.05, abs=0.002)  # flat density, not bell-shaped


@pytest.mark.parametrize("init", NORMAL)
def test_normal_tails_are_untruncated(init, big_layers):
    W = big_layers[init].W
    std = math.sqrt(VARIANCE[init])
    # P(|w| > 2σ) = 4.55% for a normal. jax.nn.initializers truncate the unit normal at ±2 and rescale it
    # to the variance (÷ 0.8796): 3.4% beyond 2σ and nothing beyond 2.27σ.
    assert np.mean(np.abs(W) > 2 * std) == pytest.approx(0.0455, abs=0.0015)
    assert np.abs(W).max() / std > 3.5


def test_tail_check_detects_truncation():
    """The tail test above can fail: jax.nn.initializers.he_normal() is a truncated normal."""
    (layer,) = jaxmlp.init_mlp(jax.random.key(42), [N_IN, N_OUT], init=jax.nn.initializers.he_normal())
    W = np.asarray(layer.W, np.float64)
    std = math.sqrt(2 / N_IN)
    np.testing.assert_allclose(W.var(), std**2, rtol=0.01)  # same variance as ours...
    assert np.mean(np.abs(W) > 2 * std) == pytest.approx(0.034, abs=0.0015)  # ...thinner tails
    assert np.abs(W).max() / std < 2.3


def test_pytorch_bias_is_uniform_within_bound(big_layers):
    b = big_layers["pytorch"].b
    bound = 1 / math.sqrt(N_IN)
    assert b.shape == (N_OUT,)
    assert np.abs(b).max() <= bound * (1 + 1e-6)
    assert np.unique(b).size == N_OUT  # drawn, not constant
    np.testing.assert_allclose(b.var(), bound**2 / 3, rtol=0.2)  # 500 draws: ~6% relative std


@pytest.mark.parametrize("init", [n for n in initializers.NAMES if n != "pytorch"])
def test_biases_are_zero_except_pytorch(init):
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES, init=init)
    assert all(jnp.all(layer.b == 0) for layer in params)


def test_zeros_are_all_zero():
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES, init="zeros")
    assert all(jnp.all(leaf == 0) for leaf in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize(
    "make, variance",
    [
        (jax.nn.initializers.he_normal, 2 / N_IN),  # fan_in = n_in, not n_out (which would give 2/500)
        (jax.nn.initializers.lecun_normal, 1 / N_IN),
        (jax.nn.initializers.glorot_normal, 2 / (N_IN + N_OUT)),
        (jax.nn.initializers.he_uniform, 2 / N_IN),
    ],
    ids=["he_normal", "lecun_normal", "glorot_normal", "he_uniform"],
)
def test_callable_init_gets_fan_axes_right(make, variance):
    (layer,) = jaxmlp.init_mlp(jax.random.key(1), [N_IN, N_OUT], init=make())
    assert layer.W.shape == (N_OUT, N_IN) and layer.W.dtype == jnp.float32
    assert jnp.all(layer.b == 0)
    np.testing.assert_allclose(np.asarray(layer.W, np.float64).var(), variance, rtol=0.01)


def test_callable_init_with_wrong_shape_raises():
    def bad(key, shape, dtype):
        return jnp.zeros(shape[::-1], dtype)

    with pytest.raises(ValueError, match=r"init callable returned shape \(2, 3\) for the kernel shape \(3, 2\)"):
        jaxmlp.init_mlp(jax.random.key(0), [3, 2], init=bad)


def test_unknown_init_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown init 'glorot'; valid names: zeros, xavier, xavier_uniform, "
                                         r"he, he_uniform, lecun, pytorch"):
        jaxmlp.init_mlp(jax.random.key(0), SIZES, init="glorot")


def test_init_of_wrong_type_raises():
    with pytest.raises(TypeError, match=r"init must be a name or a callable"):
        jaxmlp.init_mlp(jax.random.key(0), SIZES, init=0.1)


@pytest.mark.parametrize(
    "sizes, error, match",
    [
        ([], ValueError, r"sizes needs at least two entries \(n_in and n_out\), got \[\]"),
        ([5], ValueError, r"sizes needs at least two entries \(n_in and n_out\), got \[5\]"),
        ([5, 0, 1], ValueError, r"sizes\[1\] must be a positive width, got 0 in \[5, 0, 1\]"),
        ([5, 3, -1], ValueError, r"sizes\[2\] must be a positive width, got -1"),
        ([5, 3.0, 1], TypeError, r"sizes\[1\] must be an int, got float"),
        ("51", TypeError, r"sizes must be a sequence of ints"),
    ],
    ids=["empty", "one-entry", "zero-width", "negative-width", "float-width", "string"],
)
def test_bad_sizes(sizes, error, match):
    with pytest.raises(error, match=match):
        jaxmlp.init_mlp(jax.random.key(0), sizes)


@pytest.mark.parametrize("init", [n for n in initializers.NAMES if n != "zeros"])
def test_keys(init):
    same_a = jaxmlp.init_mlp(jax.random.key(0), SIZES, init=init)
    same_b = jaxmlp.init_mlp(jax.random.key(0), SIZES, init=init)
    other = jaxmlp.init_mlp(jax.random.key(1), SIZES, init=init)
    for a, b, c in zip(jax.tree_util.tree_leaves(same_a), jax.tree_util.tree_leaves(same_b),
                       jax.tree_util.tree_leaves(other)):
        np.testing.assert_array_equal(a, b)
        if jnp.any(a != 0):  # zero biases stay zero
            assert jnp.any(a != c)


def test_each_layer_draws_its_own_key():
    W1, W2 = (layer.W for layer in jaxmlp.init_mlp(jax.random.key(0), [4, 4, 4], init="lecun"))
    assert jnp.all(W1 != W2)


# --- init_mlp is one compiled program, with the op-by-op values bit for bit. ----------------------------------

_STD = {"xavier": lambda i, o: math.sqrt(2 / (i + o)), "he": lambda i, o: math.sqrt(2 / i),
        "lecun": lambda i, o: math.sqrt(1 / i)}
_LIMIT = {"xavier_uniform": lambda i, o: math.sqrt(6 / (i + o)), "he_uniform": lambda i, o: math.sqrt(6 / i),
          "pytorch": lambda i, o: 1 / math.sqrt(i)}


def _eager_reference(key, sizes, init, dtype):
    """(I1)-(I7) written out again, run op by op (one small program per operation, nothing fused): what
    init_mlp computed before it was compiled as one program."""
    layers = []
    for k, n_in, n_out in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
        k_W, k_b = jax.random.split(k)
        b = jnp.zeros((n_out,), dtype)
        if init == "zeros":
            W = jnp.zeros((n_out, n_in), dtype)
        elif init in _STD:
            W = _STD[init](n_in, n_out) * jax.random.normal(k_W, (n_out, n_in), dtype)
        else:
            limit = _LIMIT[init](n_in, n_out)
            W = jax.random.uniform(k_W, (n_out, n_in), dtype, minval=-limit, maxval=limit)
            if init == "pytorch":
                b = jax.random.uniform(k_b, (n_out,), dtype, minval=-limit, maxval=limit)
        layers.append(Layer(W, b))
    return tuple(layers)


def _assert_bitwise_equal(ours, reference):
    assert jax.tree.structure(ours) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), np.max(np.abs(np.asarray(a, np.float64) - b))


DTYPES = [jnp.float32, jnp.bfloat16, jnp.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("init", initializers.NAMES)
def test_compiled_init_equals_op_by_op_bit_for_bit(init, dtype):
    """XLA fusing std · (√2 · erfinv u) into (std · √2) · erfinv u changed about a third of the normal draws by
    an ulp: compiled, the draws are the op-by-op ones exactly."""
    with jax.enable_x64(dtype == jnp.float64):
        key = jax.random.key(11)
        _assert_bitwise_equal(jaxmlp.init_mlp(key, [64, 32, 10], init=init, dtype=dtype),
                              _eager_reference(key, [64, 32, 10], init, dtype))


@pytest.mark.parametrize("init, jit", [(n, False) for n in initializers.NAMES] + [("he", True), ("pytorch", True)],
                         ids=lambda v: {False: "vmap", True: "jit-vmap"}.get(v, v) if isinstance(v, bool) else v)
def test_vmapped_init_equals_one_key_at_a_time(init, jit):
    """fit_ensemble's users write ``jax.vmap(lambda k: init_mlp(k, sizes))(keys)``: member i is, bit for bit,
    the op-by-op initialization from ``keys[i]``."""
    sizes, keys = [64, 32, 10], jax.random.split(jax.random.key(5), 3)
    many = jax.vmap(lambda k: jaxmlp.init_mlp(k, sizes, init=init))
    stacked = (jax.jit(many) if jit else many)(keys)
    for i in range(len(keys)):
        _assert_bitwise_equal(jax.tree.map(lambda leaf: leaf[i], stacked),
                              _eager_reference(keys[i], sizes, init, jnp.float32))


# sha256 of every leaf's bytes of init_mlp(jax.random.key(7), [5, 4, 3], init=name), float32, computed op by op
# by the implementation before init_mlp was compiled (and "he" in float64 under x64): today's values must stay.
PINNED = {"zeros": "59bf9091f4cbbd2a", "xavier": "0022b293138ff633", "xavier_uniform": "e7b3a0b7b2fba377",
          "he": "088ca524611981ad", "he_uniform": "9f2a7f6ed769079d", "lecun": "69abab6a2e7c616c",
          "pytorch": "5bddd9ca21cd62e6", ("he", "float64"): "bc7ceb9cfde847ba"}


@pytest.mark.parametrize("case", list(PINNED), ids=str)
def test_values_are_the_stored_ones(case):
    import hashlib

    init, dtype = (case, jnp.float32) if isinstance(case, str) else (case[0], jnp.float64)
    with jax.enable_x64(dtype == jnp.float64):
        params = jaxmlp.init_mlp(jax.random.key(7), [5, 4, 3], init=init, dtype=dtype)
    digest = hashlib.sha256(b"".join(np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(params))).hexdigest()
    assert digest[:16] == PINNED[case]
