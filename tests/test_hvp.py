"""jaxmlp.hvp, the MLP's Hessian-vector product by the R-operator (H1)-(H6): equal to autodiff's
``jax.jvp(jax.grad(loss_fn))`` to 1e-10 relative in float64 on every hidden activation × (output, loss),
passing ``check_hvp``, and refusing an activation without a hand-written second derivative."""

from functools import partial

import jax
import jax.numpy as jnp
import pytest
from _trees import max_rel

import jaxmlp
from jaxmlp import activations

PAIRS = [("mse", "identity"), ("mse", "sigmoid"), ("mse", "tanh"), ("bce", "sigmoid"), ("ce", "softmax")]


def _problem(loss, activation, seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    params = jaxmlp.init_mlp(k[0], [4, 6, 5, 3], init="xavier", dtype=jnp.float64)
    x = jax.random.normal(k[1], (7, 4), jnp.float64)
    if loss == "mse":
        y = jax.random.normal(k[2], (7, 3), jnp.float64)
    elif loss == "bce":
        y = (jax.random.uniform(k[2], (7, 3)) < 0.5).astype(jnp.float64)
    else:
        y = jax.random.randint(k[2], (7,), 0, 3)
    v = jax.tree.map(lambda a: jax.random.normal(k[3], a.shape, jnp.float64), params)
    return params, v, x, y


def _autodiff_hvp(params, v, x, y, **kw):
    return jax.jvp(lambda p: jax.grad(partial(jaxmlp.loss_fn, **kw))(p, x, y), (params,), (v,))[1]


@pytest.mark.parametrize("loss, output", PAIRS, ids=[f"{l}-{o}" for l, o in PAIRS])
@pytest.mark.parametrize("activation", activations.HIDDEN_NAMES)
def test_hvp_equals_autodiff(x64, activation, loss, output):
    params, v, x, y = _problem(loss, activation)
    kw = dict(activation=activation, output_activation=output, loss=loss)
    mine = jax.jit(partial(jaxmlp.hvp, **kw))(params, v, x, y)
    assert max_rel(mine, _autodiff_hvp(params, v, x, y, **kw)) <= 1e-10


@pytest.mark.parametrize("loss, output", PAIRS, ids=[f"{l}-{o}" for l, o in PAIRS])
@pytest.mark.parametrize("activation", ["sigmoid", "gelu_tanh", "relu"])
def test_hvp_passes_check_hvp(x64, activation, loss, output):
    params, _, x, y = _problem(loss, activation, seed=1)
    kw = dict(activation=activation, output_activation=output, loss=loss)
    report = jaxmlp.check_hvp(params, x, y, hvp_fn=partial(jaxmlp.hvp, **kw), loss_fn=partial(jaxmlp.loss_fn, **kw))
    assert report.ok, str(report)


def test_one_example_and_a_perceptron(x64):
    params, v, x, y = _problem("mse", "tanh")
    kw = dict(activation="tanh", loss="mse")
    assert max_rel(jaxmlp.hvp(params, v, x[0], y[0], **kw), _autodiff_hvp(params, v, x[0], y[0], **kw)) <= 1e-10
    single, w = params[:1], v[:1]
    y1 = jax.random.normal(jax.random.key(3), (7, 6), jnp.float64)
    assert max_rel(jaxmlp.hvp(single, w, x, y1, **kw), _autodiff_hvp(single, w, x, y1, **kw)) <= 1e-10


def test_an_activation_without_a_second_derivative_is_refused(x64):
    params, v, x, y = _problem("mse", "tanh")
    softplus = activations.Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)
    with pytest.raises(ValueError, match="hvp needs the second derivative of the hidden activation 'softplus'"):
        jaxmlp.hvp(params, v, x, y, activation=softplus, loss="mse")
    with pytest.raises(ValueError, match="of the output activation 'softplus'"):
        jaxmlp.hvp(params, v, x, y, activation="tanh", output_activation=softplus, loss="mse")


def test_a_direction_not_shaped_like_params_is_refused_under_jit(x64):
    """A bias of shape (1,) would broadcast into a wrong H v; too few layers, a transposed W: named errors."""
    params, v, x, y = _problem("mse", "tanh")
    hvp = jax.jit(partial(jaxmlp.hvp, activation="tanh", loss="mse"))
    bad_bias = (v[0]._replace(b=v[0].b[:1]),) + v[1:]
    with pytest.raises(ValueError, match=r"v\[0\]\.b must have the shape of params\[0\]\.b, \(6,\), got \(1,\)"):
        hvp(params, bad_bias, x, y)
    with pytest.raises(ValueError, match="v must be 3 layers"):
        hvp(params, v[:2], x, y)
    with pytest.raises(ValueError, match=r"v\[1\]\.W must have the shape of params\[1\]\.W, \(5, 6\), got \(6, 5\)"):
        hvp(params, (v[0], v[1]._replace(W=v[1].W.T), v[2]), x, y)


@pytest.mark.parametrize("name", [n for n in activations.HIDDEN_NAMES])
def test_hand_written_second_derivatives_equal_autodiffs(x64, name):
    """The hand-written second derivatives (A1'')-(A7'') against autodiff's of the value function, on a grid
    that holds the kinks, relative to their largest value there (in the tails both are rounding-size
    cancellations: gelu_tanh's differ by 1.4e-14 at 1e-8)."""
    sigma = activations.get(name)
    z = jnp.concatenate([jnp.linspace(-6.0, 6.0, 241), jnp.array([0.0, -1e-9, 1e-9])])
    reference = jax.vmap(jax.grad(jax.grad(sigma.fn)))(z)
    scale = max(float(jnp.max(jnp.abs(reference))), 1.0)
    assert float(jnp.max(jnp.abs(sigma.grad2(z) - reference))) <= 1e-13 * scale


@pytest.mark.parametrize("name", activations.HIDDEN_NAMES)
def test_second_derivatives_are_finite_far_out_in_float32(name):
    """Far out σ'' tends to 0 (or is 0); z² overflowing float32 must not make it 0 · inf = NaN."""
    z = jnp.array([-3e19, -1e13, -1e10, -50.0, 50.0, 1e10, 1e13, 3e19], jnp.float32)
    g2 = activations.get(name).grad2(z)
    assert bool(jnp.all(jnp.isfinite(g2))) and float(jnp.max(jnp.abs(g2))) <= 1e-6, g2
