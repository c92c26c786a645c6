"""The network: forward and its cache, transformations (jit, grad, vmap over x and over params),
the pytree structure of params, loss_fn's natural pairs, and the linear collapse."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxmlp
from jaxmlp import activations
from jaxmlp.types import ForwardPass, Layer

SIZES = [3, 5, 4, 3]  # the shapes of test_backprop.py and test_checks.py: compiled ops are reused
B = 5
TOL32 = dict(rtol=1e-6, atol=1e-6)


def setup(sizes=SIZES, dtype=jnp.float32, init="pytorch"):
    """params with nonzero biases (a forward that dropped b would pass with zero ones) and x."""
    params = jaxmlp.init_mlp(jax.random.key(0), sizes, init=init, dtype=dtype)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(B, sizes[0])), dtype)
    return params, x


def test_params_are_a_tuple_of_layers_and_a_pytree():
    params, _ = setup()
    assert type(params) is tuple and all(type(layer) is Layer for layer in params)
    leaves = jax.tree_util.tree_leaves(params)
    assert len(leaves) == 2 * (len(SIZES) - 1)
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, params)
    assert jax.tree_util.tree_structure(doubled) == jax.tree_util.tree_structure(params)
    assert type(doubled[0]) is Layer
    flat, unravel = ravel_pytree(params)
    assert flat.size == sum(n_in * n_out + n_out for n_in, n_out in zip(SIZES[:-1], SIZES[1:]))
    assert jax.tree_util.tree_structure(unravel(flat)) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("activation", activations.HIDDEN_NAMES)
def test_forward_matches_the_equations(activation, x64):
    params, x = setup(dtype=jnp.float64)
    sigma = activations.get(activation).fn
    a = x
    for l, (W, b) in enumerate(params, start=1):
        z = a @ W.T + b[None, :]
        a = sigma(z) if l < len(params) else z  # identity output
    np.testing.assert_allclose(jaxmlp.forward(params, x, activation=activation), a, rtol=1e-13, atol=1e-15)


def test_unbatched_and_batched_forward_agree():
    params, x = setup()
    out = jaxmlp.forward(params, x, activation="tanh", output_activation="sigmoid")
    assert out.shape == (B, SIZES[-1])
    for i in range(B):
        one = jaxmlp.forward(params, x[i], activation="tanh", output_activation="sigmoid")
        assert one.shape == (SIZES[-1],)
        np.testing.assert_allclose(one, out[i], **TOL32)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_forward_with_cache_indexing(batched):
    params, x = setup()
    x = x if batched else x[0]
    lead = (B,) if batched else ()
    out, cache = jaxmlp.forward_with_cache(params, x, activation="relu", output_activation="softmax")
    L = len(params)
    assert isinstance(cache, ForwardPass) and len(cache.z) == len(cache.a) == L + 1
    assert cache.z[0] is None  # z[0] does not exist
    np.testing.assert_array_equal(cache.a[0], x)  # a[0] = x
    np.testing.assert_array_equal(cache.a[L], out)
    np.testing.assert_array_equal(out, jaxmlp.forward(params, x, activation="relu", output_activation="softmax"))
    for l in range(1, L + 1):
        W, b = params[l - 1]
        assert cache.z[l].shape == cache.a[l].shape == lead + (SIZES[l],)
        b_row = b[None, :] if batched else b
        np.testing.assert_allclose(cache.z[l], cache.a[l - 1] @ W.T + b_row, **TOL32)  # (F1)
        sigma = activations.softmax if l == L else activations.relu
        np.testing.assert_allclose(cache.a[l], sigma.fn(cache.z[l]), **TOL32)  # (F2)


def test_forward_default_activations_are_relu_and_identity():
    params, x = setup()
    np.testing.assert_array_equal(jaxmlp.forward(params, x),
                                  jaxmlp.forward(params, x, activation="relu", output_activation="identity"))


def test_forward_under_jit():
    params, x = setup()
    f = jax.jit(partial(jaxmlp.forward, activation="gelu", output_activation="tanh"))
    np.testing.assert_allclose(f(params, x), jaxmlp.forward(params, x, activation="gelu", output_activation="tanh"),
                               **TOL32)


def test_forward_under_grad():
    params, x = setup()
    grads = jax.grad(lambda p: jnp.sum(jaxmlp.forward(p, x, activation="tanh")))(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    x_bar = jax.grad(lambda x: jnp.sum(jaxmlp.forward(params, x, activation="tanh")))(x)
    assert x_bar.shape == x.shape


def test_forward_under_vmap_over_x():
    params, x = setup()
    vmapped = jax.vmap(lambda x_i: jaxmlp.forward(params, x_i, activation="sigmoid"))(x)
    np.testing.assert_allclose(vmapped, jaxmlp.forward(params, x, activation="sigmoid"), **TOL32)


def test_forward_under_vmap_over_params():
    """A stacked ensemble: every leaf gains a leading member axis; each member is an ordinary MLP."""
    E = 4
    _, x = setup()
    keys = jax.random.split(jax.random.key(3), E)
    ensemble = jax.jit(jax.vmap(lambda k: jaxmlp.init_mlp(k, SIZES)))(keys)
    assert type(ensemble) is tuple and type(ensemble[0]) is Layer
    assert ensemble[0].W.shape == (E, SIZES[1], SIZES[0]) and ensemble[0].b.shape == (E, SIZES[1])
    member = jax.tree_util.tree_map(lambda leaf: leaf[1], ensemble)
    np.testing.assert_allclose(member[0].W, jaxmlp.init_mlp(keys[1], SIZES)[0].W, **TOL32)  # == one at a time
    outs = jax.jit(jax.vmap(lambda p: jaxmlp.forward(p, x, activation="tanh")))(ensemble)
    assert outs.shape == (E, B, SIZES[-1])
    for e in range(E):
        member = jax.tree_util.tree_map(lambda leaf: leaf[e], ensemble)
        np.testing.assert_allclose(outs[e], jaxmlp.forward(member, x, activation="tanh"), **TOL32)
    assert not jnp.allclose(outs[0], outs[1])  # members differ


def test_loss_fn_and_backward_under_vmap_over_params():
    _, x = setup()
    y = jnp.asarray(np.random.default_rng(2).normal(size=(B, SIZES[-1])), jnp.float32)
    ensemble = jax.jit(jax.vmap(lambda k: jaxmlp.init_mlp(k, SIZES)))(jax.random.split(jax.random.key(3), 4))

    @jax.jit
    def both(ensemble):
        return (jax.vmap(jax.value_and_grad(lambda p: jaxmlp.loss_fn(p, x, y, activation="tanh")))(ensemble),
                jax.vmap(lambda p: jaxmlp.backward(p, x, y, activation="tanh"))(ensemble))

    (values, auto_grads), (manual_values, grads) = both(ensemble)
    assert values.shape == (4,) and grads[0].W.shape == (4, SIZES[1], SIZES[0])
    np.testing.assert_allclose(manual_values, values, **TOL32)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(auto_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "loss, natural, make_y",
    [
        ("mse", "identity", lambda rng: jnp.asarray(rng.normal(size=(B, SIZES[-1])), jnp.float32)),
        ("bce", "sigmoid", lambda rng: jnp.asarray(rng.integers(0, 2, size=(B, SIZES[-1])), jnp.float32)),
        ("ce", "softmax", lambda rng: jnp.asarray(rng.integers(0, SIZES[-1], size=B), jnp.int32)),
    ],
    ids=["mse-identity", "bce-sigmoid", "ce-softmax"],
)
def test_loss_fn_natural_pair_and_value(loss, natural, make_y):
    params, x = setup()
    y = make_y(np.random.default_rng(2))
    value = jaxmlp.loss_fn(params, x, y, activation="tanh", loss=loss)
    np.testing.assert_array_equal(value, jaxmlp.loss_fn(params, x, y, activation="tanh", output_activation=natural,
                                                        loss=loss))
    # The same number from the network's output, by the textbook formula written out here (not jaxmlp.losses).
    out = np.asarray(jaxmlp.forward(params, x, activation="tanh", output_activation=natural), np.float64)
    y64 = np.asarray(y, np.float64)
    expected = {
        "mse": lambda: np.mean((out - y64) ** 2),
        "bce": lambda: -np.mean(y64 * np.log(out) + (1 - y64) * np.log1p(-out)),
        "ce": lambda: -np.mean(np.log(out[np.arange(B), np.asarray(y)])),
    }[loss]()
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_user_activation_in_forward(x64):
    softplus = activations.Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)
    params, x = setup(dtype=jnp.float64)
    out = jaxmlp.forward(params, x, activation=softplus)
    a = x
    for W, b in params[:-1]:
        a = jax.nn.softplus(a @ W.T + b[None, :])
    np.testing.assert_allclose(out, a @ params[-1].W.T + params[-1].b[None, :], rtol=1e-13)


@pytest.mark.parametrize("sizes", [[3, 3], [3, 5, 3], [3, 5, 4, 3], [3, 5, 4, 5, 4, 3]],
                         ids=["depth1", "depth2", "depth3", "depth5"])
def test_collapse_linear_equals_identity_network(sizes, x64):
    params, x = setup(sizes, dtype=jnp.float64)
    W, b = collapsed = jaxmlp.collapse_linear(params)
    assert type(collapsed) is Layer
    assert W.shape == (sizes[-1], sizes[0]) and b.shape == (sizes[-1],)
    out = jaxmlp.forward(params, x, activation="identity", output_activation="identity")
    np.testing.assert_allclose(x @ W.T + b[None, :], out, rtol=1e-12, atol=1e-14)


def test_collapse_linear_is_not_a_nonlinear_network(x64):
    """Guard against a vacuous test above: with tanh the network is no longer the collapsed map."""
    params, x = setup([3, 5, 3], dtype=jnp.float64)
    W, b = jaxmlp.collapse_linear(params)
    assert not np.allclose(x @ W.T + b[None, :], jaxmlp.forward(params, x, activation="tanh"), rtol=1e-3)


# ---- What forward's docstring promises ----------------------------------------------------------------

def test_forward_docstring_shows_custom_activations():
    """Custom activations are findable from forward's docstring, and its example runs: softplus hidden
    units, against the network written in NumPy."""
    assert "Activation" in jaxmlp.forward.__doc__ and "softplus" in jaxmlp.forward.__doc__
    from jaxmlp.activations import Activation

    softplus = Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)
    params = jaxmlp.init_mlp(jax.random.key(0), [3, 4, 2])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    (W1, b1), (W2, b2) = (tuple(np.asarray(t, np.float64) for t in layer) for layer in params)
    expected = np.logaddexp(0, x @ W1.T + b1) @ W2.T + b2
    np.testing.assert_allclose(jaxmlp.forward(params, x, activation=softplus), expected, rtol=1e-5, atol=1e-6)


def test_forward_default_is_logits_and_softmax_gives_probabilities():
    """forward's identity default returns z[L] (what loss_fn's natural pair is applied to): the same argmax
    as the softmax probabilities, and exactly log-probabilities up to a per-row constant."""
    params = jaxmlp.init_mlp(jax.random.key(1), [3, 5, 4])
    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    logits = np.asarray(jaxmlp.forward(params, x), np.float64)
    probs = np.asarray(jaxmlp.forward(params, x, output_activation="softmax"), np.float64)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(probs.argmax(axis=1), logits.argmax(axis=1))
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), probs, rtol=1e-5)


def test_nan_row_gives_nan_loss_not_a_number():
    """The issue's observation: evaluate on a NaN row returned a finite loss (relu mapped NaN to 0)."""
    params = jaxmlp.init_mlp(jax.random.key(0), [2, 4, 3])
    x = np.array([[0.5, -1.0], [np.nan, 1.0]], np.float32)
    labels = np.array([0, 1], np.int32)
    assert np.isnan(float(jaxmlp.evaluate(params, x, labels, loss="ce")["loss"]))
    assert np.isnan(np.asarray(jaxmlp.forward(params, x))[1]).all()


@pytest.mark.parametrize("kw, error, match", [
    (dict(key=0), TypeError, r"key must be a jax.random key.*got int: 0"),
    (dict(dtype=jnp.int32), TypeError, "dtype must be a floating dtype"),
    (dict(dtype=jnp.int32, init="zeros"), TypeError, "dtype must be a floating dtype"),
], ids=["key-int", "dtype-int", "dtype-int-zeros"])
def test_init_mlp_names_a_bad_key_or_dtype(kw, error, match):
    with pytest.raises(error, match=match):
        jaxmlp.init_mlp(**{"key": jax.random.key(0), "sizes": [2, 3], **kw})


def test_an_empty_batch_is_refused_not_a_nan_loss():
    params = jaxmlp.init_mlp(jax.random.key(0), [4, 3, 1])
    x, y = jnp.zeros((0, 4)), jnp.zeros((0, 1))
    for fn in (partial(jaxmlp.loss_fn, loss="mse"), partial(jaxmlp.backward, loss="mse"),
               jax.jit(partial(jaxmlp.loss_fn, loss="bce"))):
        with pytest.raises(ValueError, match=r"x has no examples: shape \(0, 4\)"):
            fn(params, x, y)
