"""The hand-derived backward pass against autodiff, finite differences, and its own batch structure.
(Where it orders (B3) before (B2) with an optimization barrier is ``test_perf.py``'s.)

Tolerances for ``backward`` against ``jax.value_and_grad(loss_fn)``, with scale = the largest
|component| of the reference gradient (all layers flattened):

    float64: rtol 1e-9, atol 1e-12 · scale
    float32: rtol 1e-4, atol 1e-5 · scale   (float32 rounding of sums of B products, ~1e-7 relative
                                             to the largest terms; a component that nearly cancels
                                             is only meaningful relative to the scale)

Central finite differences in float64 (h = 1e-6, truncation error O(h²) ≈ 1e-12, rounding ≈ eps/h ≈
1e-10 relative to the loss): rtol 1e-6, atol 1e-8 · scale, on smooth activations only.

Cost: compilation dominates (~45 ms per eager op per new shape and dtype, ~0.3 s per jitted program).
The full activation × pair × init × dtype table runs eagerly on one shared architecture, so its ops
compile once and are reused; one-off shapes (the lesson's network, the perceptron, generated shapes)
run backward and the reference as one jitted program; test data comes from NumPy.
"""

import ast
import math
from functools import lru_cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmlp
from jaxmlp import activations
from jaxmlp.activations import Activation
from jaxmlp.gradcheck import finite_difference_grads
from jaxmlp.types import Layer

# (id, loss, output_activation, kind of target)
PAIRS = [
    ("mse-identity", "mse", "identity", "real"),
    ("mse-sigmoid", "mse", "sigmoid", "unit"),
    ("mse-tanh", "mse", "tanh", "signed"),
    ("bce-sigmoid", "bce", "sigmoid", "binary"),
    ("ce-softmax-onehot", "ce", "softmax", "one_hot"),
    ("ce-softmax-labels", "ce", "softmax", "labels"),
]
PAIR_IDS = [p[0] for p in PAIRS]
HIDDEN = activations.HIDDEN_NAMES
INITS = ["random", "zeros", "kink"]
SIZES = [3, 5, 4, 3]  # every pair uses 3 outputs: shared shapes share eager compilations
B = 5


def make_params(key, sizes, init, dtype):
    """'random': He weights and nonzero biases (U(±1/√n_in), as pytorch); 'zeros': every z is exactly 0;
    'kink': He weights, zero biases and the first layer zeroed, so z[1] = 0 exactly (and z[l] = 0 after
    it for relu-like σ) while later W are not: σ'(0) multiplies a nonzero δ."""
    if init == "zeros":
        return jaxmlp.init_mlp(key, sizes, init="zeros", dtype=dtype)
    key_W, key_b = jax.random.split(key)
    params = jaxmlp.init_mlp(key_W, sizes, init="he", dtype=dtype)
    if init == "random":
        biases = jaxmlp.init_mlp(key_b, sizes, init="pytorch", dtype=dtype)
        return tuple(Layer(layer.W, other.b) for layer, other in zip(params, biases))
    return (jax.tree_util.tree_map(jnp.zeros_like, params[0]),) + params[1:]


def make_targets(kind, rng, lead, C, dtype):
    """Targets of the shape the loss expects; ``lead`` is ``(B,)`` or ``()`` for one example.

    Test data comes from NumPy: each new shape drawn by ``jax.random`` eagerly costs compilations.
    """
    if kind == "real":
        y = rng.normal(size=lead + (C,))
    elif kind == "unit":
        y = rng.uniform(size=lead + (C,))
    elif kind == "signed":
        y = rng.uniform(-1, 1, size=lead + (C,))
    elif kind == "binary":
        y = rng.integers(0, 2, size=lead + (C,))
    else:
        labels = rng.integers(0, C, size=lead)
        if kind == "labels":
            return jnp.asarray(labels, jnp.int32)
        y = np.eye(C)[labels]
    return jnp.asarray(y, dtype)


def problem(pair, init="random", dtype=jnp.float64, seed=0):
    """params, x, y and the keyword arguments for one case (arrays are immutable: cached across cases)."""
    _, loss, out, kind = pair
    params, x, y = _problem_arrays(kind, init, jnp.dtype(dtype).name, seed)
    return params, x, y, dict(output_activation=out, loss=loss)


@lru_cache(maxsize=None)
def _problem_arrays(kind, init, dtype, seed):
    rng = np.random.default_rng(seed)
    params = make_params(jax.random.key(seed), SIZES, init, dtype)
    x = jnp.asarray(rng.normal(size=(B, SIZES[0])), dtype)
    y = make_targets(kind, rng, (B,), SIZES[-1], dtype)
    assert x.dtype == dtype, "float64 needs the x64 fixture"
    return params, x, y


def reference(params, x, y, **kw):
    return jax.value_and_grad(partial(jaxmlp.loss_fn, **kw))(params, x, y)


def both_ways(params, x, y, **kw):
    """backward and the autodiff reference compiled as one program: for one-off shapes this costs one
    compilation instead of one per eager op and shape."""
    return jax.jit(partial(_both_ways, kw=kw))(params, x, y)


def _both_ways(params, x, y, kw):
    return jaxmlp.backward(params, x, y, **kw), reference(params, x, y, **kw)


def tolerances(dtype, scale):
    if jnp.dtype(dtype) == jnp.float64:
        return dict(rtol=1e-9, atol=1e-12 * scale)
    return dict(rtol=1e-4, atol=1e-5 * scale)


def flat64(tree):
    """All leaves as one float64 NumPy vector (NumPy, so comparing costs no compilation)."""
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree_util.tree_leaves(tree)])


# The loss written once more, in float64 NumPy, from the formulas (F1)-(F2), (A1)-(A7) and (L1)-(L5):
# backward's loss and loss_fn's both come from mlp.prepare + loss_from_forward, so comparing them with each
# other would compare a function with itself.
NUMPY_ACTIVATIONS = {
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z >= 0, z, 0.01 * z),
    "gelu": lambda z: z * 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
    "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
    "identity": lambda z: z,
}


def numpy_loss(params, x, y, *, activation, output_activation, loss):
    """The mean loss of the network on (x, y), in float64 NumPy; x may be one example."""
    a = np.atleast_2d(np.asarray(x, np.float64))
    y = np.asarray(y)
    y = y[None] if np.ndim(x) == 1 else y
    for l, (W, b) in enumerate(params, start=1):
        z = a @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
        a = NUMPY_ACTIVATIONS[activation](z) if l < len(params) else None
    n = z.shape[0]
    if loss == "mse":
        return np.mean((NUMPY_ACTIVATIONS[output_activation or "identity"](z) - y) ** 2)  # (L1)
    if loss == "bce":
        p = 1 / (1 + np.exp(-z))
        return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))  # (L2) on σ(z)
    Y = np.eye(z.shape[1])[y] if np.issubdtype(y.dtype, np.integer) else y.astype(np.float64)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return -np.sum(Y * log_p) / n  # (L3) on softmax(z)


def assert_same_value_and_grads(actual, desired, dtype, problem=None):
    """Gradients against the reference's; the loss against :func:`numpy_loss` of ``problem`` =
    ``(params, x, y, kw)`` when given (else against the reference's loss, e.g. two ways of calling backward)."""
    (value, grads), (ref_value, ref_grads) = actual, desired
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(ref_grads)
    assert all(g.dtype == dtype for g in jax.tree_util.tree_leaves(grads))
    assert value.dtype == dtype and value.shape == ()
    flat, ref_flat = flat64(grads), flat64(ref_grads)
    scale = max(np.abs(ref_flat).max(), 1e-30)
    tol = tolerances(dtype, scale)
    if problem is not None:
        params, x, y, kw = problem
        ref_value = numpy_loss(params, x, y, **{"output_activation": None, **kw})
    np.testing.assert_allclose(value, ref_value, rtol=tol["rtol"])
    np.testing.assert_allclose(flat, ref_flat, **tol)


# ---- backward == jax.value_and_grad(loss_fn) -----------------------------------------------------

@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_backward_equals_autodiff(activation, pair, init, float_dtype):
    params, x, y, kw = problem(pair, init, float_dtype)
    assert_same_value_and_grads(jaxmlp.backward(params, x, y, activation=activation, **kw),
                                reference(params, x, y, activation=activation, **kw), float_dtype,
                                problem=(params, x, y, dict(activation=activation, **kw)))


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_backward_equals_autodiff_jitted(pair, float_dtype):
    params, x, y, kw = problem(pair, "kink", float_dtype)
    assert_same_value_and_grads(*both_ways(params, x, y, activation="leaky_relu", **kw), float_dtype,
                                problem=(params, x, y, dict(activation="leaky_relu", **kw)))


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_ordered_path_equals_autodiff(pair, float_dtype, monkeypatch):
    """With IN_ORDER_MIN = 1 every layer takes the path that orders (B3) before (B2) with an optimization
    barrier (large layers only, otherwise); the gradients still equal jax.grad's, jitted, and under
    vmap over a stack of two models. (That the barriers are there, on CPU only, is test_perf.py's.)"""
    from jaxmlp import backprop

    params, x, y, kw = problem(pair, "random", float_dtype)
    monkeypatch.setattr(backprop, "IN_ORDER_MIN", 1)
    assert_same_value_and_grads(*both_ways(params, x, y, activation="tanh", **kw), float_dtype)
    stack = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf, 2 * leaf]), params)
    vmapped = jax.jit(jax.vmap(partial(_both_ways, kw=dict(activation="tanh", **kw)), in_axes=(0, None, None)))
    (values, grads), (ref_values, ref_grads) = vmapped(stack, x, y)
    for i in range(2):
        pick = partial(jax.tree_util.tree_map, lambda leaf: leaf[i])
        assert_same_value_and_grads((values[i], pick(grads)), (ref_values[i], pick(ref_grads)), float_dtype)


def test_kink_case_reaches_the_kink(x64):
    """Guard against a vacuous kink case: z[1] is exactly 0 and σ'(0) multiplies a nonzero δ."""
    params, x, y, kw = problem(PAIRS[0], "kink")
    _, cache = jaxmlp.forward_with_cache(params, x, activation="leaky_relu")
    assert jnp.all(cache.z[1] == 0) and jnp.all(cache.z[2] == 0)
    _, grads = jaxmlp.backward(params, x, y, activation="leaky_relu", **kw)
    assert jnp.any(grads[0].W != 0)  # through leaky_relu'(0) = 1; relu'(0) = 0 would give zeros
    _, grads = jaxmlp.backward(params, x, y, activation="relu", **kw)
    assert jnp.all(grads[0].W == 0)


@pytest.mark.parametrize(
    "pair, dtype",
    [(PAIRS[0], "float64"), (PAIRS[3], "float32")],
    ids=["mse-identity-float64", "bce-sigmoid-float32"],
)
def test_lesson_architecture(pair, dtype):
    """The lesson's [5, 64, 32, 16, 1] with relu and He init (jitted: one-off shapes compile once)."""
    _, loss, out, kind = pair
    with jax.enable_x64(dtype == "float64"):
        rng = np.random.default_rng(0)
        params = jaxmlp.init_mlp(jax.random.key(0), [5, 64, 32, 16, 1], init="he", dtype=dtype)
        x = jnp.asarray(rng.normal(size=(8, 5)), dtype)
        y = make_targets(kind, rng, (8,), 1, dtype)
        kw = dict(activation="relu", output_activation=out, loss=loss)
        assert_same_value_and_grads(*both_ways(params, x, y, **kw), jnp.dtype(dtype), problem=(params, x, y, kw))


@pytest.mark.parametrize("pair", [PAIRS[0], PAIRS[3], PAIRS[5]], ids=["mse-identity", "bce-sigmoid", "ce-labels"])
def test_perceptron(pair, float_dtype):
    """One layer [3, 1], no hidden activation: (B1), (B3), (B4) alone. CE needs ≥ 2 classes: [3, 3]."""
    _, loss, out, kind = pair
    C = 3 if loss == "ce" else 1
    rng = np.random.default_rng(0)
    params = jaxmlp.init_mlp(jax.random.key(0), [3, C], init="pytorch", dtype=float_dtype)
    x = jnp.asarray(rng.normal(size=(B, 3)), float_dtype)
    y = make_targets(kind, rng, (B,), C, float_dtype)
    kw = dict(activation="relu", output_activation=out, loss=loss)
    assert_same_value_and_grads(*both_ways(params, x, y, **kw), float_dtype, problem=(params, x, y, kw))


@pytest.mark.parametrize("loss, natural", [("mse", "identity"), ("bce", "sigmoid"), ("ce", "softmax")])
def test_output_activation_none_is_the_natural_pair(loss, natural, x64):
    pair = next(p for p in PAIRS if p[1] == loss and p[2] == natural)
    params, x, y, _ = problem(pair)
    implicit = jaxmlp.backward(params, x, y, activation="tanh", loss=loss)
    explicit = jaxmlp.backward(params, x, y, activation="tanh", output_activation=natural, loss=loss)
    assert_same_value_and_grads(implicit, explicit, jnp.float64)
    assert_same_value_and_grads(implicit, reference(params, x, y, activation="tanh", loss=loss), jnp.float64,
                                problem=(params, x, y, dict(activation="tanh", output_activation=natural, loss=loss)))


@pytest.mark.parametrize("pair", [PAIRS[0], PAIRS[3], PAIRS[5]], ids=["mse-identity", "bce-sigmoid", "ce-labels"])
def test_unbatched_example(pair, x64):
    """x of shape (n_in,) is one example: the same as autodiff, and as the batch of one x[:1]."""
    params, x, y, kw = problem(pair)
    kw["activation"] = "gelu"

    @jax.jit
    def three_ways(params, x, y):
        return (jaxmlp.backward(params, x[0], y[0], **kw), reference(params, x[0], y[0], **kw),
                jaxmlp.backward(params, x[:1], y[:1], **kw))

    one, auto, batch_of_one = three_ways(params, x, y)
    assert_same_value_and_grads(one, auto, jnp.float64, problem=(params, x[0], y[0], kw))
    assert_same_value_and_grads(one, batch_of_one, jnp.float64)


def test_user_defined_activations(x64):
    softplus = Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)
    params, x, y, kw = problem(PAIRS[0])
    for kw in [dict(activation=softplus, loss="mse"), dict(activation="tanh", output_activation=softplus, loss="mse"),
               dict(activation=softplus, output_activation="sigmoid", loss="mse")]:
        assert_same_value_and_grads(jaxmlp.backward(params, x, y, **kw), reference(params, x, y, **kw), jnp.float64)


# ---- Finite differences ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "activation, pair",
    [("tanh", PAIRS[0]), ("gelu", PAIRS[3]), ("sigmoid", PAIRS[5]), ("gelu_tanh", PAIRS[2])],
    ids=["tanh-mse-identity", "gelu-bce-sigmoid", "sigmoid-ce-labels", "gelu_tanh-mse-tanh"],
)
def test_backward_equals_finite_differences(activation, pair, x64):
    params, x, y, kw = problem(pair, seed=1)
    kw["activation"] = activation
    _, grads = jaxmlp.backward(params, x, y, **kw)
    numeric = finite_difference_grads(lambda p: jaxmlp.loss_fn(p, x, y, **kw), params)  # central, h = 1e-6
    flat, ref_flat = flat64(grads), flat64(numeric)
    np.testing.assert_allclose(flat, ref_flat, rtol=1e-6, atol=1e-8 * np.abs(ref_flat).max())


# ---- Invalid pairs -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "loss, out",
    [("bce", "identity"), ("ce", "sigmoid"), ("mse", "softmax"), ("mse", "relu"), ("bce", "softmax"),
     ("ce", "identity")],
    ids=["bce-identity", "ce-sigmoid", "mse-softmax", "mse-relu", "bce-softmax", "ce-identity"],
)
def test_invalid_pairs_name_the_allowed_pairs(loss, out):
    params, x, y, _ = problem(PAIRS[0], dtype=jnp.float32)
    pattern = (rf"output_activation='{out}' cannot be paired with loss='{loss}'; allowed pairs: "
               r"loss='mse' with output_activation in \('identity', 'sigmoid', 'tanh'\); "
               r"loss='bce' with output_activation in \('sigmoid',\); loss='ce' with output_activation in "
               r"\('softmax',\)")
    for f in (jaxmlp.backward, jaxmlp.loss_fn, jaxmlp.per_example_grads):
        with pytest.raises(ValueError, match=pattern):
            f(params, x, y, activation="tanh", output_activation=out, loss=loss)


# ---- Per-example gradients -----------------------------------------------------------------------

@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_per_example_grads(activation, pair, x64):
    params, x, y, kw = problem(pair)
    kw["activation"] = activation
    per_example = jaxmlp.per_example_grads(params, x, y, **kw)

    def loss_one(p, x_i, y_i):  # the loss of a batch of one: loss_fn on x[i:i+1], y[i:i+1]
        return jaxmlp.loss_fn(p, x_i[None], y_i[None], **kw)

    auto = jax.jit(jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0)))(params, x, y)
    assert jax.tree_util.tree_structure(per_example) == jax.tree_util.tree_structure(params)
    for got, want, leaf in zip(jax.tree_util.tree_leaves(per_example), jax.tree_util.tree_leaves(auto),
                               jax.tree_util.tree_leaves(params)):
        assert got.shape == (B,) + leaf.shape
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-13)
    _, grads = jaxmlp.backward(params, x, y, **kw)
    for got, want in zip(jax.tree_util.tree_leaves(per_example), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(np.mean(np.asarray(got), axis=0), want, rtol=1e-9, atol=1e-13)


def test_per_example_grads_needs_a_batch():
    params, x, y, kw = problem(PAIRS[0], dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"needs a batch x of shape \(batch, n_in\), got shape \(3,\)"):
        jaxmlp.per_example_grads(params, x[0], y[0], **kw)


# ---- No autodiff inside --------------------------------------------------------------------------

AUTODIFF = {"grad", "value_and_grad", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian", "custom_vjp",
            "custom_jvp", "linear_transpose"}


def autodiff_uses(source):
    """Autodiff names a module uses: bare names, names imported from jax, and attributes of jax modules
    (``jax.grad``, ``j.vjp`` after ``import jax as j``). An Activation's ``.grad`` (the hand-written
    derivative, ``sigma.grad(z)``) is an attribute of a value, not of jax, and is not autodiff."""
    tree = ast.parse(source)
    jax_modules, found = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            jax_modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] == "jax"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jax":
            found |= {a.name for a in node.names if a.name in AUTODIFF}
            jax_modules |= {a.asname or a.name for a in node.names if a.name not in AUTODIFF}  # lax, numpy
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in AUTODIFF:
            found.add(node.id)  # a use; a NamedTuple field declared `grad: Callable` is a Store
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in AUTODIFF:
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in jax_modules:
                found.add(node.attr)
    return found


@pytest.mark.parametrize("module", ["backprop.py", "activations.py"])
def test_no_autodiff_in_hand_written_derivatives(module):
    source = Path(jaxmlp.__file__).with_name(module).read_text()
    assert autodiff_uses(source) == set(), f"{module} uses autodiff"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import jax\ng = jax.grad(f)", {"grad"}),
        ("import jax as j\nv, f_vjp = j.vjp(f, x)", {"vjp"}),
        ("from jax import value_and_grad as vg", {"value_and_grad"}),
        ("from jax import api\nh = api.jacfwd(f)", {"jacfwd"}),
        ("grad = make()\ngrad(x)", {"grad"}),
        ("import jax.numpy as jnp\ns = sigma.grad(z) + jnp.sum(z)", set()),
    ],
    ids=["jax.grad", "alias.vjp", "from-import", "submodule", "bare-name", "activation-grad-allowed"],
)
def test_autodiff_detector(source, expected):
    """The check above can fail: it sees each way of reaching autodiff, and allows ``sigma.grad``."""
    assert autodiff_uses(source) == expected


# ---- Generated shapes ----------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True, database=None)  # the same 25 shapes every run
@given(
    widths=st.lists(st.integers(1, 9), min_size=2, max_size=5),  # n_0 .. n_L: depth 1-4
    batch=st.integers(1, 6),
    activation=st.sampled_from(HIDDEN),
    pair=st.sampled_from(PAIRS),
    seed=st.integers(0, 2**16),
)
def test_backward_equals_autodiff_on_generated_shapes(widths, batch, activation, pair, seed):
    """Every example has new shapes, so it is built in NumPy and compiled once, both sides in one jit."""
    _, loss, out, kind = pair
    if loss == "ce":  # cross-entropy needs two classes at least (one is a ValueError, tested in test_checks)
        widths = widths[:-1] + [max(widths[-1], 2)]
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        params = tuple(Layer(jnp.asarray(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)),
                             jnp.asarray(rng.normal(size=n_out) / 2))
                       for n_in, n_out in zip(widths[:-1], widths[1:]))
        x = jnp.asarray(rng.normal(size=(batch, widths[0])))
        y = make_targets(kind, rng, (batch,), widths[-1], jnp.float64)
        kw = dict(activation=activation, output_activation=out, loss=loss)
        assert_same_value_and_grads(*both_ways(params, x, y, **kw), jnp.float64, problem=(params, x, y, kw))
