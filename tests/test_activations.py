"""Activations: hand-written values and derivatives against ``jax.nn`` and ``jax.grad``, kinks included.

Tolerance: ``|ours - ref| <= rtol |ref| + atol`` with rtol 1e-12 (float64) or 1e-6 (float32) and
atol = 32 eps of the dtype. The atol is conditioning, not slack for a wrong formula: a derivative
computed from t = tanh z (tanh, gelu_tanh) has an absolute error of a few eps however it is arranged,
and near |t| -> 1 that is a large *relative* error (JAX's own tanh JVP, (1 - t) + (1 - t) t, differs
from 1 - t² by up to 11 eps there). A wrong formula is off by orders of magnitude more.
"""

import os
import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import activations
from jaxmlp.activations import Activation

# Each hidden activation's trusted reference in jax.nn.
REFERENCE = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": jax.nn.leaky_relu,  # default negative_slope=0.01
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": partial(jax.nn.gelu, approximate=True),
    "identity": lambda z: z,
}
RTOL = {"float64": 1e-12, "float32": 1e-6}


def grid(dtype):
    """Exact zeros (both signs), ±tiny, small, moderate and large values, and a dense sweep."""
    tiny = float(jnp.finfo(dtype).tiny)
    special = [0.0, -0.0, tiny, -tiny, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5,
               5.0, -5.0, 10.0, -10.0, 20.0, -20.0, 40.0, -40.0, 100.0, -100.0, 1e4, -1e4]
    return jnp.concatenate([jnp.array(special, dtype), jnp.linspace(-12, 12, 961, dtype=dtype)])


def assert_close(actual, desired, dtype):
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    name = jnp.dtype(dtype).name
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(desired, np.float64),
                               rtol=RTOL[name], atol=32 * float(jnp.finfo(dtype).eps))


def test_registry_names():
    assert set(activations.HIDDEN_NAMES) == set(REFERENCE)
    assert set(activations.NAMES) == set(REFERENCE) | {"softmax"}
    assert "softmax" not in activations.HIDDEN_NAMES


@pytest.mark.parametrize("name", list(REFERENCE))
def test_value_matches_jax_nn(name, float_dtype):
    z = grid(float_dtype)
    assert_close(activations.get(name).fn(z), REFERENCE[name](z), float_dtype)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_derivative_matches_jax_grad_of_jax_nn(name, float_dtype):
    z = grid(float_dtype)
    assert_close(activations.get(name).grad(z), jax.vmap(jax.grad(REFERENCE[name]))(z), float_dtype)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_autodiff_of_our_fn_matches_our_grad(name, float_dtype):
    """jax.grad through our own ``fn`` meets our hand-written ``grad``, so backward == jax.grad at kinks."""
    act = activations.get(name)
    z = grid(float_dtype)
    assert_close(act.grad(z), jax.vmap(jax.grad(act.fn))(z), float_dtype)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_values_and_derivatives_finite(name, float_dtype):
    act = activations.get(name)
    z = grid(float_dtype)
    assert jnp.all(jnp.isfinite(act.fn(z))) and jnp.all(jnp.isfinite(act.grad(z)))


@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["+0", "-0"])
def test_kinks_follow_jax_nn(zero, float_dtype):
    z = jnp.array(zero, float_dtype)
    # relu'(0) = 0, as jax.nn.relu's custom derivative; leaky_relu'(0) = 1, as where(z >= 0, ...).
    assert activations.relu.grad(z) == 0 and jax.grad(jax.nn.relu)(z) == 0
    assert activations.leaky_relu.grad(z) == 1 and jax.grad(jax.nn.leaky_relu)(z) == 1
    # Autodiff through our value functions meets the same convention.
    assert jax.grad(activations.relu.fn)(z) == 0
    assert jax.grad(activations.leaky_relu.fn)(z) == 1
    assert activations.relu.kinks == (0.0,) and activations.leaky_relu.kinks == (0.0,)


NONFINITE = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_nan_and_inf_propagate_as_jax_nn(name, float_dtype):
    """At NaN, ±inf and the kinks, values and derivatives are jax.nn's, NaN for NaN (a NaN input must
    never be hidden: relu as where(z > 0, z, 0) once mapped it to 0)."""
    act = activations.get(name)
    z = jnp.array(NONFINITE, float_dtype)
    value, ref_value = np.asarray(act.fn(z)), np.asarray(REFERENCE[name](z))
    grad, ref_grad = np.asarray(act.grad(z)), np.asarray(jax.vmap(jax.grad(REFERENCE[name]))(z))
    assert np.isnan(value[0]), f"{name}(NaN) = {value[0]}, not NaN"
    np.testing.assert_array_equal(np.isnan(value), np.isnan(ref_value))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))
    finite = ~np.isnan(ref_value)
    np.testing.assert_array_equal(value[finite], ref_value[finite])  # ±inf and 0 exactly as jax.nn
    assert_close(jnp.asarray(grad[~np.isnan(ref_grad)]), ref_grad[~np.isnan(ref_grad)], float_dtype)


def test_softmax_propagates_nan_as_jax_nn():
    z = jnp.array([[1.0, float("nan"), 2.0], [1.0, 0.0, 2.0]])
    ours = np.asarray(activations.softmax.fn(z))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(np.asarray(jax.nn.softmax(z))))
    assert np.isnan(ours[0]).all() and np.isfinite(ours[1]).all()


def test_leaky_relu_slope():
    z = jnp.array([-3.0, -1e-3, 2.0])
    np.testing.assert_array_equal(activations.leaky_relu.fn(z), 0.01 * np.array([-3.0, -1e-3, 0.0], np.float32)
                                  + np.array([0.0, 0.0, 2.0], np.float32))
    np.testing.assert_array_equal(activations.leaky_relu.grad(z), np.array([0.01, 0.01, 1.0], np.float32))


def test_softmax_value_matches_jax_nn(float_dtype):
    z = jax.random.normal(jax.random.key(0), (5, 4), float_dtype) * 3
    z = z.at[0].set(jnp.array([1e4, -1e4, 0.0, 1e4], float_dtype))  # would overflow a naive exp
    a = activations.softmax.fn(z)
    assert_close(a, jax.nn.softmax(z, axis=-1), float_dtype)
    assert jnp.all(jnp.isfinite(a))
    np.testing.assert_allclose(jnp.sum(a, axis=-1), 1.0, rtol=RTOL[jnp.dtype(float_dtype).name] * 10)


def test_softmax_has_no_elementwise_grad():
    assert not activations.softmax.elementwise
    with pytest.raises(ValueError, match=r"softmax has no elementwise derivative.*loss='ce'"):
        activations.softmax.grad(jnp.zeros(3))


def test_get_returns_registered_activation():
    assert activations.get("tanh") is activations.tanh
    assert activations.get("gelu_tanh") is activations.gelu_tanh


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; valid names: sigmoid, tanh, relu, "
                                         r"leaky_relu, gelu, gelu_tanh, identity, softmax"):
        activations.get("swish")


def test_get_passes_user_activation_through():
    softplus = Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)
    assert activations.get(softplus) is softplus


@pytest.mark.parametrize("bad", [3, None, jnp.tanh], ids=["int", "None", "function"])
def test_get_wrong_type(bad):
    with pytest.raises(TypeError, match=r"activation must be a name or an Activation"):
        activations.get(bad)


# ---- Float64 enabled after import ----------------------------------------------------------------

_AFTER_IMPORT_SCRIPT = textwrap.dedent("""
    import jaxmlp  # first, while float64 is still off: module-level jnp constants would be float32 here
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from functools import partial
    import jax.numpy as jnp
    import numpy as np
    from jaxmlp import activations, losses

    reference = {
        "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "leaky_relu": jax.nn.leaky_relu,
        "gelu": partial(jax.nn.gelu, approximate=False), "gelu_tanh": partial(jax.nn.gelu, approximate=True),
        "identity": lambda z: z,
    }
    z = jnp.linspace(-8.0, 8.0, 321)
    assert z.dtype == jnp.float64
    tol = dict(rtol=1e-12, atol=32 * np.finfo(np.float64).eps)
    for name, f in reference.items():
        act = activations.get(name)
        value, slope = act.fn(z), act.grad(z)
        assert value.dtype == slope.dtype == jnp.float64, (name, value.dtype, slope.dtype)
        np.testing.assert_allclose(value, f(z), **tol, err_msg=name)
        np.testing.assert_allclose(slope, jax.vmap(jax.grad(f))(z), **tol, err_msg=name)

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, 3)))
    y = jnp.asarray(np.eye(3)[np.arange(6) % 3])
    assert logits.dtype == y.dtype == jnp.float64
    for name, loss, args in [
        ("mse", losses.mse, (logits, y)),
        ("bce", losses.binary_cross_entropy, (activations.sigmoid.fn(logits), y)),
        ("bce_with_logits", losses.binary_cross_entropy_with_logits, (logits, y)),
        ("ce", losses.cross_entropy, (activations.softmax.fn(logits), y)),
        ("ce_with_logits", losses.softmax_cross_entropy_with_logits, (logits, y)),
    ]:
        assert loss(*args).dtype == jnp.float64, name

    params = jaxmlp.init_mlp(jax.random.key(0), [4, 5, 3], init="xavier", dtype=jnp.float64)
    x = jnp.asarray(rng.normal(size=(6, 4)))

    @partial(jax.jit, static_argnames="kw")
    def both_ways(params, x, y, kw):
        kw = dict(kw)
        return jaxmlp.backward(params, x, y, **kw), jax.value_and_grad(partial(jaxmlp.loss_fn, **kw))(params, x, y)

    for hidden, loss_name, yy in [("gelu", "mse", logits), ("tanh", "bce", y), ("sigmoid", "ce", jnp.arange(6) % 3)]:
        (value, grads), (ref_value, ref_grads) = both_ways(params, x, yy, (("activation", hidden), ("loss", loss_name)))
        assert value.dtype == jnp.float64
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-15, err_msg=f"{hidden} {loss_name}")
    print("OK")
""")


@pytest.mark.slow
def test_float64_enabled_after_import_works():
    """Import jaxmlp first, enable float64 after: everything must compute in float64 and agree tightly."""
    result = subprocess.run([sys.executable, "-c", _AFTER_IMPORT_SCRIPT], capture_output=True, text=True,
                            timeout=300, env={"JAX_PLATFORMS": "cpu", **os.environ})
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-4000:]
