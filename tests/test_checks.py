"""jaxmlp.checks: bad input fails early and clearly: a ValueError or TypeError whose message names the argument
and shows the shapes or values, raised while tracing, so the same error comes eagerly and under ``jax.jit``
(never an XLA error from deep inside, never a silent broadcast); and fit and fit_ensemble refuse non-finite
data and out-of-range labels on the host, before anything compiles."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _training import Compilations

import jaxmlp
from jaxmlp.types import Layer

SIZES = [3, 5, 4, 3]  # as in test_backprop.py and test_mlp.py
B = 5


def good():
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, SIZES[0])), jnp.float32)
    y = jnp.zeros((B, SIZES[-1]), jnp.float32)
    return params, x, y


def column_output():
    params = jaxmlp.init_mlp(jax.random.key(0), [3, 5, 4, 1])
    return params, jnp.ones((B, 3))


def disconnected():
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    return (params[0], Layer(jnp.zeros((2, 7)), jnp.zeros(2)))


def run(fn, jit, args, kwargs):
    """Call ``fn(*args, **kwargs)``, or the same through ``jax.jit`` with the keywords static."""
    return jax.jit(partial(fn, **kwargs))(*args) if jit else fn(*args, **kwargs)


JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def case(id, make, error, match):
    """``make()`` returns ``(function, positional args, keyword args)``."""
    return pytest.param(make, error, match, id=id)


CASES = [
    # ---- x ----
    case("x-width-backward", lambda: (jaxmlp.backward, (good()[0], jnp.ones((B, 7)), good()[2]), {}),
         ValueError, r"x has width 7 \(shape \(5, 7\)\) but the first layer expects n_in = 3"),
    case("x-width-forward", lambda: (jaxmlp.forward, (good()[0], jnp.ones((B, 7))), {}),
         ValueError, r"x has width 7 \(shape \(5, 7\)\) but the first layer expects n_in = 3"),
    case("x-width-unbatched", lambda: (jaxmlp.forward, (good()[0], jnp.ones(7)), {}),
         ValueError, r"x has width 7 \(shape \(7,\)\) but the first layer expects n_in = 3"),
    case("x-3-dims-backward", lambda: (jaxmlp.backward, (good()[0], jnp.ones((2, B, 3)), good()[2]), {}),
         ValueError, r"x must have shape \(n_in,\) or \(batch, n_in\), got 3 dims: shape \(2, 5, 3\)"),
    case("x-3-dims-forward", lambda: (jaxmlp.forward, (good()[0], jnp.ones((2, B, 3))), {}),
         ValueError, r"x must have shape \(n_in,\) or \(batch, n_in\), got 3 dims: shape \(2, 5, 3\)"),
    # ---- y against the output ----
    case("y-vector-vs-column-mse", lambda: (jaxmlp.backward, (*column_output(), jnp.ones(B)), {"loss": "mse"}),
         ValueError, r"y has shape \(5,\) but the output has shape \(5, 1\)"),
    case("y-vector-vs-column-bce", lambda: (jaxmlp.backward, (*column_output(), jnp.ones(B)), {"loss": "bce"}),
         ValueError, r"y has shape \(5,\) but the output has shape \(5, 1\)"),
    case("y-vector-vs-column-loss_fn", lambda: (jaxmlp.loss_fn, (*column_output(), jnp.ones(B)), {}),
         ValueError, r"y has shape \(5,\) but the output has shape \(5, 1\)"),
    case("y-width", lambda: (jaxmlp.backward, (*good()[:2], jnp.ones((B, 2))), {}),
         ValueError, r"y has shape \(5, 2\) but the output has shape \(5, 3\)"),
    case("y-batch", lambda: (jaxmlp.backward, (*good()[:2], jnp.ones((B - 1, 3))), {}),
         ValueError, r"y has batch 4 but x has batch 5 \(x shape \(5, 3\), y shape \(4, 3\)\)"),
    case("y-batch-labels", lambda: (jaxmlp.backward, (*good()[:2], jnp.zeros(B + 1, jnp.int32)), {"loss": "ce"}),
         ValueError, r"y has batch 6 but x has batch 5"),
    case("y-labels-shape", lambda: (jaxmlp.backward, (*good()[:2], jnp.zeros((B, 1), jnp.int32)), {"loss": "ce"}),
         ValueError, r"integer labels y must have shape \(5,\) for an output of shape \(5, 3\), got shape \(5, 1\)"),
    case("y-batched-for-one-x", lambda: (jaxmlp.backward, (good()[0], jnp.ones(3), jnp.ones((1, 3))), {}),
         ValueError, r"x is one example of shape \(3,\) but y is batched with shape \(1, 3\)"),
    case("per-example-y-batch", lambda: (jaxmlp.per_example_grads, (*good()[:2], jnp.ones((2, 3))), {}),
         ValueError, r"y has batch 2 but x has batch 5"),
    # ---- params ----
    case("params-disconnected", lambda: (jaxmlp.backward, (disconnected(), *good()[1:]), {}),
         ValueError, r"params do not connect: layer 1 outputs 5 units but layer 2's W has shape \(2, 7\), "
                     r"expecting n_in = 5"),
    case("params-disconnected-forward", lambda: (jaxmlp.forward, (disconnected(), good()[1]), {}),
         ValueError, r"params do not connect"),
    case("params-bias-shape", lambda: (jaxmlp.forward, ((Layer(jnp.zeros((4, 3)), jnp.zeros(3)),), good()[1]), {}),
         ValueError, r"layer 1: b must have shape \(n_out,\) = \(4,\) to match W of shape \(4, 3\), got shape \(3,\)"),
    case("params-not-layers", lambda: (jaxmlp.forward, ((jnp.zeros((4, 3)),), good()[1]), {}),
         TypeError, r"params\[0\] \(layer 1\) must be a Layer\(W, b\)"),
    # ---- names ----
    case("unknown-activation", lambda: (jaxmlp.backward, good(), {"activation": "swish"}),
         ValueError, r"unknown activation 'swish'; valid names: sigmoid, tanh, relu, leaky_relu, gelu, gelu_tanh, "
                     r"identity, softmax"),
    case("unknown-output-activation", lambda: (jaxmlp.forward, good()[:2], {"output_activation": "softsign"}),
         ValueError, r"unknown activation 'softsign'; valid names: sigmoid, tanh"),
    case("activation-wrong-type", lambda: (jaxmlp.forward, good()[:2], {"activation": 3}),
         TypeError, r"activation must be a name or an Activation, got int: 3"),
    case("unknown-loss", lambda: (jaxmlp.backward, good(), {"loss": "hinge"}),
         ValueError, r"unknown loss 'hinge'; valid names: mse, bce, ce"),
    case("unknown-loss-loss_fn", lambda: (jaxmlp.loss_fn, good(), {"loss": "hinge"}),
         ValueError, r"unknown loss 'hinge'; valid names: mse, bce, ce"),
    # ---- pairs ----
    case("pair-bce-identity", lambda: (jaxmlp.backward, good(), {"loss": "bce", "output_activation": "identity"}),
         ValueError, r"output_activation='identity' cannot be paired with loss='bce'; allowed pairs: loss='mse' with "
                     r"output_activation in \('identity', 'sigmoid', 'tanh'\)"),
    case("pair-ce-sigmoid", lambda: (jaxmlp.backward, good(), {"loss": "ce", "output_activation": "sigmoid"}),
         ValueError, r"output_activation='sigmoid' cannot be paired with loss='ce'; allowed pairs: .*"
                     r"loss='ce' with output_activation in \('softmax',\)"),
    case("pair-mse-softmax", lambda: (jaxmlp.loss_fn, good(), {"loss": "mse", "output_activation": "softmax"}),
         ValueError, r"output_activation='softmax' cannot be paired with loss='mse'; allowed pairs"),
    case("pair-mse-relu", lambda: (jaxmlp.backward, good(), {"loss": "mse", "output_activation": "relu"}),
         ValueError, r"output_activation='relu' cannot be paired with loss='mse'; allowed pairs"),
    case("softmax-hidden-backward", lambda: (jaxmlp.backward, good(), {"activation": "softmax"}),
         ValueError, r"activation='softmax' is not elementwise; it is allowed only as the output activation with "
                     r"loss='ce'. Hidden activations: sigmoid, tanh, relu, leaky_relu, gelu, gelu_tanh, identity"),
    case("softmax-hidden-forward", lambda: (jaxmlp.forward, good()[:2], {"activation": "softmax"}),
         ValueError, r"activation='softmax' is not elementwise"),
]


@JIT
@pytest.mark.parametrize("make, error, match", CASES)
def test_bad_input(make, error, match, jit):
    fn, args, kwargs = make()
    with pytest.raises(error, match=match):
        run(fn, jit, args, kwargs)


@JIT
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_no_silent_broadcast_even_with_rank_promotion_allowed(loss, jit):
    """(B,) against (B, 1) would broadcast to a (B, B) loss matrix; the library refuses it itself, not
    only because conftest makes rank promotion strict."""
    params, x = column_output()
    with jax.numpy_rank_promotion("allow"):
        with pytest.raises(ValueError, match=r"y has shape \(5,\) but the output has shape \(5, 1\)"):
            run(jaxmlp.backward, jit, (params, x, jnp.ones(B)), {"loss": loss})
        with pytest.raises(ValueError, match=r"\(5,\).*\(5, 1\)"):
            run(jaxmlp.loss_fn, jit, (params, x, jnp.ones(B)), {"loss": loss})
        # The correctly shaped target goes through, and gives a scalar.
        value, _ = run(jaxmlp.backward, jit, (params, x, jnp.ones((B, 1))), {"loss": loss})
        assert value.shape == ()


SIZE_CASES = [
    pytest.param([], ValueError, r"sizes needs at least two entries \(n_in and n_out\), got \[\]", id="empty"),
    pytest.param([5], ValueError, r"sizes needs at least two entries \(n_in and n_out\), got \[5\]", id="one-entry"),
    pytest.param([5, 0, 1], ValueError, r"sizes\[1\] must be a positive width, got 0 in \[5, 0, 1\]", id="zero-width"),
    pytest.param([5, 3, 0], ValueError, r"sizes\[2\] must be a positive width, got 0", id="zero-output"),
]


@JIT
@pytest.mark.parametrize("sizes, error, match", SIZE_CASES)
def test_bad_sizes(sizes, error, match, jit):
    with pytest.raises(error, match=match):
        run(jaxmlp.init_mlp, jit, (jax.random.key(0),), {"sizes": sizes})


@JIT
def test_unknown_init(jit):
    with pytest.raises(ValueError, match=r"unknown init 'glorot'; valid names: zeros, xavier, xavier_uniform, he, "
                                         r"he_uniform, lecun, pytorch, or a callable"):
        run(jaxmlp.init_mlp, jit, (jax.random.key(0),), {"sizes": SIZES, "init": "glorot"})


def test_errors_are_raised_before_compute():
    """Shape errors come from the checks at trace time: even jax.eval_shape, which computes nothing, raises."""
    params, x, _ = good()
    with pytest.raises(ValueError, match=r"x has width 7"):
        jax.eval_shape(partial(jaxmlp.backward, loss="mse"), params, jnp.ones((B, 7)), jnp.ones((B, 3)))


def test_cross_entropy_with_one_output_unit_is_an_error():
    params = jaxmlp.init_mlp(jax.random.key(0), [3, 4, 1])
    x, labels = jnp.ones((5, 3)), jnp.zeros((5,), jnp.int32)
    for fn in (partial(jaxmlp.loss_fn, loss="ce"), partial(jaxmlp.backward, loss="ce"),
               jax.jit(partial(jaxmlp.backward, loss="ce"))):
        with pytest.raises(ValueError, match="at least 2 output units"):
            fn(params, x, labels)


@pytest.mark.parametrize("loss", [None, "cross_entropy"])
def test_loss_taking_functions_reject_a_missing_or_unknown_loss(loss):
    params = jaxmlp.init_mlp(jax.random.key(0), [3, 4, 1])
    x, y = jnp.ones((5, 3)), jnp.ones((5, 1))
    for fn in (jaxmlp.loss_fn, jaxmlp.backward, jaxmlp.evaluate):
        with pytest.raises(ValueError, match="unknown loss .*valid names: mse, bce, ce"):
            fn(params, x, y, loss=loss)


def test_integer_compute_dtype_is_an_error():
    params = jaxmlp.init_mlp(jax.random.key(0), [3, 4, 1])
    with pytest.raises(ValueError, match="compute_dtype must be a floating dtype"):
        jaxmlp.backward(params, jnp.ones((5, 3)), jnp.ones((5, 1)), compute_dtype=jnp.int32)


# ---- Data values: fit and fit_ensemble hold the data concretely, and refuse NaN/inf and bad labels -------

def _fitters(params):
    """fit and fit_ensemble (K = 2 copies of ``params``), each as ``(params, x, y, loss) -> result``."""
    from jaxmlp import optim

    def fit(params, x, y, loss):
        return jaxmlp.fit(params, x, y, optimizer=optim.adam(1e-3), loss=loss, epochs=2)

    stack = jax.tree.map(lambda leaf: np.stack([leaf, leaf]), params)
    learning_rates = jnp.array([1e-3, 1e-2], jnp.float32)  # made here: jnp.asarray of NumPy data compiles

    def ensemble(params, x, y, loss):
        return jaxmlp.fit_ensemble(stack, x, y, learning_rates=learning_rates, loss=loss, epochs=2)

    return {"fit": fit, "fit_ensemble": ensemble}


FIT_SIZES = [6, 7, 3]  # shapes of their own: had the check come after a compilation, it would show


@pytest.mark.parametrize("fitter", ["fit", "fit_ensemble"])
@pytest.mark.parametrize("where, bad, match", [
    ("x", [(3, 1, np.nan), (8, 0, np.inf)], r"x holds 2 non-finite values \(1 NaN, 1 inf\) in 2 of its 10 rows; "
                                             r"the first is row 3"),
    ("x", [(0, 5, -np.inf)], r"x holds 1 non-finite values \(0 NaN, 1 inf\) in 1 of its 10 rows; the first is row 0"),
    ("y", [(6, 2, np.nan)], r"y holds 1 non-finite values \(1 NaN, 0 inf\) in 1 of its 10 rows; the first is row 6"),
], ids=["x-nan-and-inf", "x-minus-inf", "y-nan"])
def test_fit_refuses_non_finite_data_before_compiling(fitter, where, bad, match):
    params = jaxmlp.init_mlp(jax.random.key(0), FIT_SIZES)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(10, 6)).astype(np.float32), "y": rng.normal(size=(10, 3)).astype(np.float32)}
    for row, col, value in bad:
        data[where][row, col] = value
    train = _fitters(params)[fitter]
    with Compilations() as compiled, pytest.raises(ValueError, match=match):
        train(params, data["x"], data["y"], "mse")
    assert compiled.n == 0


def test_finite_values_sees_nan_in_bfloat16_data():
    """NumPy does not count bfloat16 as inexact: the check asks jax, so bf16 data is checked too."""
    x = jnp.ones((4, 2), jnp.bfloat16).at[2, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"x holds 1 non-finite values \(1 NaN, 0 inf\) in 1 of its 4 rows; "
                                         r"the first is row 2"):
        jaxmlp.checks.finite_values("x", x)


@pytest.mark.parametrize("fitter", ["fit", "fit_ensemble"])
@pytest.mark.parametrize("label", [3, -1, 7])
def test_fit_refuses_labels_outside_the_classes(fitter, label):
    params = jaxmlp.init_mlp(jax.random.key(0), FIT_SIZES)
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    y = np.arange(10, dtype=np.int32) % 3
    y[4] = label
    with pytest.raises(ValueError, match=rf"y holds class label {label} \(row 4; 1 labels in all\) outside "
                                         rf"\[0, C\) = \[0, 3\)"):
        _fitters(params)[fitter](params, x, jnp.asarray(y), "ce")


def test_data_checks_compile_nothing_and_let_good_data_through():
    """The checks read the data on the host: no XLA program, whatever the shape; good data passes."""
    from jaxmlp import checks

    x = jnp.asarray(np.random.default_rng(0).normal(size=(13, 11)), jnp.float32)
    labels = jnp.asarray(np.arange(13) % 4, jnp.int32)
    with Compilations() as compiled:
        jaxmlp.checks.finite_values("x", x)
        checks.labels_in_range(labels, 4)
    assert compiled.n == 0
    with pytest.raises(ValueError, match=r"class label 3 \(row 3; 3 labels in all\)"):
        checks.labels_in_range(labels, 3)
    jax.jit(lambda t: checks.finite_values("x", t) or t)(x)  # a tracer: nothing to read, nothing raised
