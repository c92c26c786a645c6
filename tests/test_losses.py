"""Losses against optax and independent NumPy formulas, with the averaging written down.

MSE and BCE average over every element (batch and outputs); CE averages over the batch the per-example
sum over classes. Tolerance: rtol 1e-12 in float64, 1e-6 in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmlp import losses

RTOL = {"float64": 1e-12, "float32": 1e-6}
B, C = 5, 3


def rtol(dtype):
    return RTOL[jnp.dtype(dtype).name]


def data(dtype):
    """Logits, real targets, binary targets, integer labels and their one-hot form."""
    rng = np.random.default_rng(0)
    z = jnp.asarray(2 * rng.normal(size=(B, C)), dtype)
    y_real = jnp.asarray(rng.normal(size=(B, C)), dtype)
    y_binary = jnp.asarray(rng.integers(0, 2, size=(B, C)), dtype)
    labels = np.arange(B) % C
    return z, y_real, y_binary, jnp.asarray(labels, jnp.int32), jnp.asarray(np.eye(C)[labels], dtype)


def test_mse_is_mean_over_all_elements(float_dtype):
    z, y, *_ = data(float_dtype)
    value = losses.mse(z, y)
    assert value.dtype == float_dtype and value.shape == ()
    np.testing.assert_allclose(value, jnp.mean(optax.losses.squared_error(z, y)), rtol=rtol(float_dtype))
    np.testing.assert_allclose(value, np.sum((np.asarray(z, np.float64) - np.asarray(y, np.float64)) ** 2) / (B * C),
                               rtol=rtol(float_dtype))


def test_bce_with_logits_is_mean_over_all_elements(float_dtype):
    z, _, y, *_ = data(float_dtype)
    value = losses.binary_cross_entropy_with_logits(z, y)
    assert value.dtype == float_dtype
    np.testing.assert_allclose(value, jnp.mean(optax.losses.sigmoid_binary_cross_entropy(z, y)),
                               rtol=rtol(float_dtype))


def test_bce_on_probabilities_matches_formula_and_logit_form(float_dtype):
    z, _, y, *_ = data(float_dtype)
    p = jax.nn.sigmoid(z)
    value = losses.binary_cross_entropy(p, y)
    p64, y64 = np.asarray(p, np.float64), np.asarray(y, np.float64)
    expected = -np.sum(y64 * np.log(p64) + (1 - y64) * np.log(1 - p64)) / (B * C)
    # float32: log(1 - p) of a rounded p loses a few ulps of p relative to 1 - p.
    np.testing.assert_allclose(value, expected, rtol=rtol(float_dtype) * 10)
    np.testing.assert_allclose(value, losses.binary_cross_entropy_with_logits(z, y), rtol=rtol(float_dtype) * 10)


def test_ce_with_logits_is_batch_mean_of_per_example_sum(float_dtype):
    z, *_, Y = data(float_dtype)
    value = losses.softmax_cross_entropy_with_logits(z, Y)
    assert value.dtype == float_dtype
    np.testing.assert_allclose(value, jnp.mean(optax.losses.softmax_cross_entropy(z, Y)), rtol=rtol(float_dtype))
    # Not averaged over classes as well (that would divide the loss and its gradient by C).
    log_p = np.asarray(jax.nn.log_softmax(z.astype(jnp.float32)), np.float64)
    assert not np.isclose(float(value), -np.mean(np.asarray(Y) * log_p), rtol=0.1)


def test_ce_on_probabilities_matches_logit_form(float_dtype):
    z, *_, Y = data(float_dtype)
    value = losses.cross_entropy(jax.nn.softmax(z), Y)
    assert value.dtype == float_dtype
    np.testing.assert_allclose(value, jnp.mean(optax.losses.softmax_cross_entropy(z, Y)),
                               rtol=rtol(float_dtype) * 10)


@pytest.mark.parametrize("form", ["logits", "probabilities"])
def test_ce_integer_labels_equal_one_hot(form, float_dtype):
    z, *_, labels, Y = data(float_dtype)
    loss, out = ((losses.softmax_cross_entropy_with_logits, z) if form == "logits"
                 else (losses.cross_entropy, jax.nn.softmax(z)))
    np.testing.assert_allclose(loss(out, labels), loss(out, Y), rtol=rtol(float_dtype))
    np.testing.assert_allclose(
        loss(out, labels), jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(z, labels)),
        rtol=rtol(float_dtype) * 10)


def test_unbatched_output_is_one_example(float_dtype):
    z, y, yb, labels, Y = data(float_dtype)
    np.testing.assert_allclose(losses.mse(z[0], y[0]), losses.mse(z[:1], y[:1]), rtol=rtol(float_dtype))
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits(z[0], yb[0]),
                               losses.binary_cross_entropy_with_logits(z[:1], yb[:1]), rtol=rtol(float_dtype))
    np.testing.assert_allclose(losses.softmax_cross_entropy_with_logits(z[0], labels[0]),
                               losses.softmax_cross_entropy_with_logits(z[:1], Y[:1]), rtol=rtol(float_dtype))


# ---- Stability -------------------------------------------------------------------------------------

def test_bce_with_logits_finite_at_huge_logits(float_dtype):
    z = jnp.array([[1e4, -1e4, 1e4, -1e4]], float_dtype)
    y = jnp.array([[0.0, 1.0, 1.0, 0.0]], float_dtype)
    value, grad = jax.value_and_grad(losses.binary_cross_entropy_with_logits)(z, y)
    np.testing.assert_allclose(value, (1e4 + 1e4 + 0 + 0) / 4, rtol=rtol(float_dtype))
    assert jnp.all(jnp.isfinite(grad))
    np.testing.assert_allclose(grad, (jax.nn.sigmoid(z) - y) / 4, rtol=rtol(float_dtype))  # (σ(z) - y) / n


def test_ce_with_logits_finite_at_huge_logits(float_dtype):
    z = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], float_dtype)
    labels = jnp.array([1, 0])
    value, grad = jax.value_and_grad(losses.softmax_cross_entropy_with_logits)(z, labels)
    np.testing.assert_allclose(value, (2e4 + (2e4 + np.log(2.0))) / 2, rtol=rtol(float_dtype))
    assert jnp.all(jnp.isfinite(grad))
    np.testing.assert_allclose(grad, (jax.nn.softmax(z) - jax.nn.one_hot(labels, 3, dtype=float_dtype)) / 2,
                               rtol=rtol(float_dtype), atol=1e-30)


def test_bce_on_probabilities_finite_at_exact_zero_and_one(float_dtype):
    y_hat = jnp.array([[0.0, 1.0, 0.0, 1.0]], float_dtype)
    y = jnp.array([[1.0, 0.0, 0.0, 1.0]], float_dtype)
    value = losses.binary_cross_entropy(y_hat, y)
    assert jnp.isfinite(value)
    np.testing.assert_allclose(value, -2 * losses.LOG_FLOOR / 4, rtol=rtol(float_dtype))  # two clamped logs


def test_ce_on_probabilities_finite_at_exact_zero(float_dtype):
    y_hat = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], float_dtype)
    value = losses.cross_entropy(y_hat, jnp.array([1, 1]))
    assert jnp.isfinite(value)
    np.testing.assert_allclose(value, -losses.LOG_FLOOR / 2, rtol=rtol(float_dtype))


# ---- Shapes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [losses.mse, losses.binary_cross_entropy, losses.binary_cross_entropy_with_logits],
                         ids=["mse", "bce", "bce_with_logits"])
def test_vector_target_against_column_output_raises(loss):
    y_hat = jnp.full((4, 1), 0.5)
    y = jnp.ones(4)
    with pytest.raises(ValueError, match=r"y has shape \(4,\) but the output has shape \(4, 1\)"):
        loss(y_hat, y)
    # Under permissive rank promotion too: it is the library's check, not conftest's strict mode, that
    # refuses the (4, 4) broadcast.
    with jax.numpy_rank_promotion("allow"), pytest.raises(ValueError, match=r"\(4,\).*\(4, 1\)"):
        loss(y_hat, y)


@pytest.mark.parametrize("loss", [losses.cross_entropy, losses.softmax_cross_entropy_with_logits],
                         ids=["ce", "ce_with_logits"])
def test_ce_target_shapes(loss):
    out = jnp.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"integer labels y must have shape \(4,\) for an output of shape "
                                         r"\(4, 3\), got shape \(4, 1\)"):
        loss(out, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"y has shape \(4, 2\) but the output has shape \(4, 3\)"):
        loss(out, jnp.zeros((4, 2)))


@pytest.mark.parametrize("name", ["binary_cross_entropy", "cross_entropy"])
def test_probability_forms_have_finite_gradients_at_exact_zero_and_one(name):
    y_hat = jnp.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    y = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    g = jax.grad(getattr(losses, name))(y_hat, y)
    assert bool(jnp.all(jnp.isfinite(g))), g
    assert float(getattr(losses, name)(y_hat, y)) > 50  # the clamped -log 0 = 100 dominates


@pytest.mark.parametrize("bad", [3, -1], ids=["C", "minus-one"])
def test_ce_out_of_range_label_under_jit_is_logsumexp_alone(bad, x64):
    """What the losses docstring says (L5) computes under jit for a label outside [0, C): one_hot gives
    that row no class, so its term is logsumexp(z_b) alone and its logit gradient softmax(z_b) / B. The
    reference is written here from the formula, in NumPy."""
    z = np.random.default_rng(1).normal(size=(2, 3))
    labels = jnp.array([1, bad])
    value, grad = jax.jit(jax.value_and_grad(losses.softmax_cross_entropy_with_logits))(jnp.asarray(z), labels)
    lse = np.log(np.exp(z).sum(axis=1))
    np.testing.assert_allclose(value, ((lse[0] - z[0, 1]) + lse[1]) / 2, rtol=1e-12)
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad[1], softmax[1] / 2, rtol=1e-12)
