"""check_gradients, layer-wise deltas and the symmetry diagnostic: they must catch wrong backwards."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import backprop, gradcheck
from jaxmlp.types import Layer

SIZES = (4, 6, 5, 2)


def _problem(init="he", sizes=SIZES, batch=5, seed=0, dtype=jnp.float64):
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxmlp.init_mlp(k_p, sizes, init=init, dtype=dtype)
    x = jax.random.normal(k_x, (batch, sizes[0]), dtype)
    y = jax.random.normal(k_y, (batch, sizes[-1]), dtype)
    return params, x, y


@pytest.mark.parametrize("activation", ["tanh", "gelu", "relu", "leaky_relu"])
def test_jaxmlp_backward_passes_with_errors_near_rounding(x64, activation):
    params, x, y = _problem()
    report = gradcheck.check_gradients(params, x, y, activation=activation, loss="mse")
    assert report.ok, str(report)
    assert report.max_rel_autodiff <= 1e-12
    assert report.max_rel_fd <= 1e-6
    assert all(r.autodiff.cosine > 1 - 1e-12 for r in report.rows)
    assert len(report.rows) == 2 * (len(SIZES) - 1)  # one row per layer and leaf


def test_report_prints_a_table_with_every_layer_and_leaf(x64):
    params, x, y = _problem()
    text = str(gradcheck.check_gradients(params, x, y, activation="tanh"))
    lines = text.splitlines()
    assert "ad max rel" in lines[1] and "fd max rel" in lines[1] and "near kink" in lines[1]
    assert len(lines) == 3 + 2 * (len(SIZES) - 1)
    assert all(line.rstrip().endswith("ok") for line in lines[3:])


def test_casts_float32_input_to_float64():
    params32, x32, y32 = _problem(dtype=jnp.float32)
    assert x32.dtype == jnp.float32
    report = gradcheck.check_gradients(params32, x32, y32, activation="tanh")
    # float32 inputs would leave ~1e-7 relative errors against finite differences, and fail 1e-6.
    assert report.ok and report.max_rel_fd < 1e-7, str(report)


def _buggy_backward(params, x, y, *, layer, factor):
    """jaxmlp's backward with one layer's dW scaled: the kind of slip a hand derivation makes."""
    loss, grads = backprop.backward(params, x, y, activation="tanh", loss="mse")
    grads = list(grads)
    grads[layer - 1] = Layer(grads[layer - 1].W * factor, grads[layer - 1].b)
    return loss, tuple(grads)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_user_backward_with_a_wrong_layer_fails_in_that_layer_only(x64, layer):
    params, x, y = _problem()
    report = gradcheck.check_gradients(
        params, x, y, activation="tanh", backward_fn=partial(_buggy_backward, layer=layer, factor=1.001),
        loss_fn=partial(jaxmlp.loss_fn, activation="tanh", loss="mse"))
    assert not report.ok
    failing = {(r.layer, r.leaf) for r in report.rows if not r.ok}
    assert failing == {(layer, "W")}
    bad = next(r for r in report.rows if not r.ok)
    assert bad.autodiff.max_rel == pytest.approx(1e-3, rel=1e-6)
    assert bad.finite_diff.max_rel == pytest.approx(1e-3, rel=1e-3)


def test_user_backward_needs_its_loss_fn(x64):
    params, x, y = _problem()
    with pytest.raises(TypeError, match="backward_fn and loss_fn together"):
        gradcheck.check_gradients(params, x, y, backward_fn=partial(jaxmlp.backward, loss="mse"))


def test_kinks_are_flagged_at_zero_init_and_fd_is_not_judged_there(x64):
    params, x, y = _problem(init="zeros")
    report = gradcheck.check_gradients(params, x, y, activation="relu")
    hidden = [r for r in report.rows if r.layer < len(SIZES) - 1]
    # every hidden pre-activation is exactly 0, on relu's kink
    assert all(r.near_kink == 5 * SIZES[r.layer] for r in hidden)
    assert report.rows[-1].near_kink == 0  # the output layer is identity: no kink
    assert report.ok  # autodiff agrees exactly; finite differences are flagged, not judged


def test_fd_across_a_kink_is_wrong_and_flagged_not_failed(x64):
    """First layer zero, later layers random: every z[1] sits on relu's kink while the deltas above are
    not zero, so central differences straddle the kink and disagree; the row is flagged, not failed."""
    params, x, y = _problem(init="he")
    params = (Layer(jnp.zeros_like(params[0].W), jnp.zeros_like(params[0].b)),) + params[1:]
    report = gradcheck.check_gradients(params, x, y, activation="relu")
    first = report.rows[0]
    assert first.near_kink == 5 * SIZES[1]
    assert first.finite_diff.max_rel > 1e-2  # finite differences mean nothing on the kink...
    assert first.autodiff.max_rel <= 1e-12 and first.ok and report.ok  # ...and are not judged there
    value, grads = jaxmlp.backward(params, x, y, activation="relu")
    ref_ad, ref_fd, _ = gradcheck.gradient_references(
        params, x, y, loss_fn=partial(jaxmlp.loss_fn, activation="relu"), activation="relu", h=1e-6)
    unflagged = gradcheck.make_report(value, grads, ref_ad, ref_fd, kinks=[0, 0, 0])
    assert not unflagged.rows[0].ok  # without the flag the same row fails


def test_step_must_be_positive(x64):
    params, x, y = _problem()
    with pytest.raises(ValueError, match="h .* must be > 0"):
        gradcheck.check_gradients(params, x, y, h=0.0)


def test_no_kinks_flagged_for_smooth_activations(x64):
    params, x, y = _problem(init="zeros")
    report = gradcheck.check_gradients(params, x, y, activation="tanh")
    assert all(r.near_kink == 0 for r in report.rows)


def test_near_kinks_counts_only_within_the_window(x64):
    params = (Layer(jnp.eye(2, dtype=jnp.float64), jnp.zeros(2, jnp.float64)),
              Layer(jnp.ones((1, 2), jnp.float64), jnp.zeros(1, jnp.float64)))
    x = jnp.array([[1e-7, 0.5], [-3e-6, 2e-7]])  # window = h (1 + max|x|) = 1.5e-6 for h = 1e-6
    counts = gradcheck.near_kinks(params, x, "relu", 1e-6)
    assert counts.tolist() == [2, 0]


def test_compare_deltas_points_at_the_wrong_layer(x64):
    params, x, y = _problem()
    kw = dict(activation="tanh", loss="mse")
    report = gradcheck.compare_deltas(params, x, y, **kw)
    assert all(r.max_rel < 1e-12 for r in report.rows), str(report)

    def wrong_deltas(params, x, y):  # forgets σ'(z) in (B2) for layer 1
        d = list(backprop.deltas(params, x, y, **kw))
        d[1] = d[2] @ params[1].W
        return tuple(d)

    bad = gradcheck.compare_deltas(params, x, y, deltas_fn=wrong_deltas, **kw)
    assert [r.max_rel > 1e-3 for r in bad.rows] == [True, False, False]
    assert "layer" in str(bad)


def test_autodiff_deltas_match_the_batched_delta_definition(x64):
    """δ[L] for CE is (softmax(z) - y)/B: checks the zero-perturbation reference itself."""
    params, x, _ = _problem(sizes=(3, 4, 3))
    labels = jnp.array([0, 2, 1, 1, 0])
    d = gradcheck.autodiff_deltas(params, x, labels, activation="tanh", loss="ce")
    logits = jaxmlp.forward(params, x, activation="tanh")
    expected = (jax.nn.softmax(logits) - jax.nn.one_hot(labels, 3, dtype=jnp.float64)) / 5
    np.testing.assert_allclose(d[2], expected, rtol=1e-12, atol=1e-15)


def test_symmetry_zero_init_collapses_every_hidden_layer_to_one_unit(x64):
    params, x, y = _problem(init="zeros")
    _, grads = jaxmlp.backward(params, x, y, activation="tanh")
    report = gradcheck.symmetry(params, grads)
    assert report.widths == (6, 5)
    assert report.distinct == (1, 1)
    assert report.groups == ((tuple(range(6)),), (tuple(range(5)),))
    assert "distinct units" in str(report)


def test_symmetry_random_init_has_no_copies(x64):
    params, x, y = _problem(init="he")
    _, grads = jaxmlp.backward(params, x, y, activation="tanh")
    report = gradcheck.symmetry(params, grads)
    assert report.distinct == (6, 5) and report.groups == ((), ())


def test_symmetry_survives_training_from_zeros(x64):
    """Equal units get equal deltas, so gradient descent keeps them equal: the lesson's point."""
    params, x, y = _problem(init="zeros")
    params = tuple(Layer(W + 0.3, b) for W, b in params)  # constant per layer: symmetric, but not stuck at 0
    for _ in range(20):
        _, grads = jaxmlp.backward(params, x, y, activation="tanh")
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    assert not bool(jnp.allclose(params[0].W, 0.3))  # the weights did move...
    assert gradcheck.symmetry(params).distinct == (1, 1)  # ...but the units stayed copies


def test_finite_differences_of_a_quadratic_are_exact_to_rounding(x64):
    params = (Layer(jnp.array([[1.0, -2.0]]), jnp.array([0.5])),)
    fd = gradcheck.finite_difference_grads(lambda p: jnp.sum(p[0].W ** 2) + 3 * p[0].b[0], params, h=1e-4)
    np.testing.assert_allclose(fd[0].W, [[2.0, -4.0]], rtol=1e-9)
    np.testing.assert_allclose(fd[0].b, [3.0], rtol=1e-9)
