"""check_gradients: never a false pass, never a false fail, on any pytree model; kinks judged; the MLP extras.

"Never a false pass" plants one bug per test in a correct backward and requires a failing report that
names the leaf. "Never a false fail" gives correct gradients of models that are not jaxmlp's (dict
params, W stored (n_in, n_out), a custom_vjp rule, scalar leaves, exact kinks) and requires a pass.
``tests/_models.py`` adds a researcher's models (a convolution, attention, layer norm, an RNN through
lax.scan, mixed leaves), each with a hand-written backward and its realistic bugs.
"""

import io
import logging
from functools import partial

import _models
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import backprop, gradcheck, verify
from jaxmlp.types import Layer

SIZES = (4, 6, 5, 2)


def _problem(init="he", sizes=SIZES, batch=5, seed=0, dtype=jnp.float64):
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxmlp.init_mlp(k_p, sizes, init=init, dtype=dtype)
    x = jax.random.normal(k_x, (batch, sizes[0]), dtype)
    y = jax.random.normal(k_y, (batch, sizes[-1]), dtype)
    return params, x, y


# --------------------------------------------------------------------------------- user models
# A softmax regression with dict params and its hand-derived gradient:
#   L = -(1/B) Σ_b log softmax(x_b W + b)[y_b],  ∂L/∂W = xᵀ (p - onehot(y)) / B,  ∂L/∂b = Σ_b (p - onehot(y)) / B,
# plus a scalar leaf "s" (a temperature-like scale on the logits): ∂L/∂s = Σ_b <(p - onehot(y))_b, x_b W + b> / B.

def softmax_regression_loss(params, x, labels):
    logits = params["s"] * (x @ params["W"] + params["b"][None, :])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def softmax_regression_backward(params, x, labels):
    u = x @ params["W"] + params["b"][None, :]
    p = jax.nn.softmax(params["s"] * u)
    r = (p - jax.nn.one_hot(labels, p.shape[1], dtype=p.dtype)) / x.shape[0]
    grads = {"W": params["s"] * x.T @ r, "b": params["s"] * jnp.sum(r, axis=0), "s": jnp.sum(r * u)}
    return softmax_regression_loss(params, x, labels), grads


def _softmax_regression():
    k_w, k_x, k_y = jax.random.split(jax.random.key(1), 3)
    params = {"W": jax.random.normal(k_w, (4, 3)), "b": jnp.array([0.1, -0.2, 0.3]), "s": 1.5}
    x = jax.random.normal(k_x, (6, 4))
    labels = jax.random.randint(k_y, (6,), 0, 3)
    return params, x, labels


# A user's MLP with W stored (n_in, n_out) as a tuple of tuples, tanh hidden layer, MSE; by hand:
#   h = tanh(x W1 + b1), out = h W2 + b2, L = mean((out - y)²) over all entries,
#   δ2 = 2 (out - y) / (B n_out), δ1 = (δ2 W2ᵀ) ⊙ (1 - h²).

def own_layout_loss(params, x, y):
    (W1, b1), (W2, b2) = params
    out = jnp.tanh(x @ W1 + b1[None, :]) @ W2 + b2[None, :]
    return jnp.mean((out - y) ** 2)


def own_layout_backward(params, x, y):
    (W1, b1), (W2, b2) = params
    h = jnp.tanh(x @ W1 + b1[None, :])
    out = h @ W2 + b2[None, :]
    delta2 = 2 * (out - y) / out.size
    delta1 = (delta2 @ W2.T) * (1 - h ** 2)
    grads = ((x.T @ delta1, jnp.sum(delta1, axis=0)), (h.T @ delta2, jnp.sum(delta2, axis=0)))
    return jnp.mean((out - y) ** 2), grads


def _own_layout():
    ks = jax.random.split(jax.random.key(2), 4)
    params = ((jax.random.normal(ks[0], (3, 5)), jnp.zeros(5)), (jax.random.normal(ks[1], (5, 2)), jnp.ones(2)))
    return params, jax.random.normal(ks[2], (7, 3)), jax.random.normal(ks[3], (7, 2))


# A custom_vjp rule: softplus with its derivative σ(z) written by hand (and a wrong one).

def _softplus_with_rule(derivative):
    @jax.custom_vjp
    def softplus(z):
        return jnp.logaddexp(z, 0.0)

    softplus.defvjp(lambda z: (softplus(z), z), lambda z, g: (g * derivative(z),))
    return softplus


def _softplus_model(softplus):
    return lambda params, x: jnp.sum(softplus(x @ params["W"] + params["b"][None, :]) ** 2)


softplus_reference = _softplus_model(lambda z: jnp.logaddexp(z, 0.0))


# ----------------------------------------------------------------------------- never a false pass

def _mlp_backward_with(change):
    """jaxmlp's backward (tanh, mse) with ``change(loss, grads) -> (loss, grads)`` applied."""
    def backward_fn(params, x, y):
        return change(*backprop.backward(params, x, y, activation="tanh", loss="mse"))
    return backward_fn


MLP_REFERENCE = partial(jaxmlp.loss_fn, activation="tanh", loss="mse")


def _first_layer(change):
    return lambda loss, g: (loss, (change(g[0]),) + g[1:])


def _largest_entry_times(factor):
    def change(layer):
        i = np.unravel_index(np.argmax(np.abs(layer.W)), layer.W.shape)
        return Layer(layer.W.at[i].multiply(factor), layer.b)
    return change


MLP_BUGS = {  # name: (the planted bug, the failures it must produce)
    "missing-layer": (lambda loss, g: (loss, g[:2]), ["[2].W: missing", "[2].b: missing"]),
    "extra-leaf": (lambda loss, g: (loss, g + (Layer(jnp.zeros(1), jnp.zeros(1)),)),
                   ["[3].W: unexpected extra leaf", "[3].b: unexpected extra leaf"]),
    "transposed-non-square": (_first_layer(lambda l: Layer(l.W.T, l.b)), ["[0].W: shape (4, 6) != (6, 4)"]),
    "bias-(1,n)": (_first_layer(lambda l: Layer(l.W, l.b[None, :])), ["[0].b: shape (1, 6) != (6,)"]),
    "int-dtype": (_first_layer(lambda l: Layer(jnp.round(1e3 * l.W).astype(jnp.int32), l.b)),
                  ["[0].W: dtype int32 is not floating"]),
    "nan": (_first_layer(lambda l: Layer(l.W.at[1, 2].set(jnp.nan), l.b)), ["[0].W: 1 NaN and 0 inf"]),
    "inf": (_first_layer(lambda l: Layer(l.W, l.b.at[0].set(jnp.inf))), ["[0].b: 0 NaN and 1 inf"]),
    "wrong-loss": (lambda loss, g: (2 * loss + 1, g), ["loss: "]),
    "one-entry-1e-5": (_first_layer(_largest_entry_times(1 + 1e-5)), ["[0].W: disagrees with jax.grad"]),
    "list-of-dicts": (lambda loss, g: (loss, [{"W": l.W, "b": l.b} for l in g]),
                      ["[0].W: missing", "[0]['W']: unexpected extra leaf"]),
}


@pytest.mark.parametrize("bug", MLP_BUGS, ids=list(MLP_BUGS))
def test_planted_bug_in_an_mlp_backward_fails_naming_the_leaf(x64, bug):
    change, expected = MLP_BUGS[bug]
    params, x, y = _problem()
    report = jaxmlp.check_gradients(params, x, y, backward_fn=_mlp_backward_with(change), loss_fn=MLP_REFERENCE)
    assert not report.ok and not bool(report)
    for failure in expected:
        assert any(f.startswith(failure) for f in report.failures), (failure, report.failures)
    with pytest.raises(AssertionError, match=expected[0].split(":")[0].replace("[", r"\[").replace("]", r"\]")):
        report.raise_for_failure()


def test_transposed_square_matrix_fails_on_the_numbers(x64):
    params, x, y = _problem(sizes=(4, 5, 5, 2))

    def backward_fn(params, x, y):  # layer 2's 5x5 dW transposed: the shapes cannot tell
        loss, g = backprop.backward(params, x, y, activation="tanh", loss="mse")
        return loss, (g[0], Layer(g[1].W.T, g[1].b), g[2])

    report = jaxmlp.check_gradients(params, x, y, backward_fn=backward_fn, loss_fn=MLP_REFERENCE)
    assert [f.split(":")[0] for f in report.failures] == ["[1].W"]
    assert "jax.grad" in report.failures[0] and "finite differences" in report.failures[0]


DICT_BUGS = {
    "missing-leaf": (lambda g: {"W": g["W"], "s": g["s"]}, "['b']: missing"),
    "scalar-sign-flip": (lambda g: {**g, "s": -g["s"]}, "['s']: disagrees with jax.grad"),
    "extra-leaf": (lambda g: {**g, "t": jnp.zeros(())}, "['t']: unexpected extra leaf"),
    "wrong-shape": (lambda g: {**g, "b": g["b"][:, None]}, "['b']: shape (3, 1) != (3,)"),
}


@pytest.mark.parametrize("bug", DICT_BUGS, ids=list(DICT_BUGS))
def test_planted_bug_in_a_dict_model_fails_naming_the_leaf(x64, bug):
    change, expected = DICT_BUGS[bug]
    params, x, labels = _softmax_regression()

    def backward_fn(params, x, labels):
        loss, g = softmax_regression_backward(params, x, labels)
        return loss, change(g)

    report = jaxmlp.check_gradients(params, x, labels, backward_fn=backward_fn, loss_fn=softmax_regression_loss)
    assert not report.ok
    assert [f for f in report.failures if f.startswith(expected)], report.failures
    assert len(report.failures) == 1, report.failures


def test_a_wrong_custom_vjp_rule_fails():
    params = {"W": jnp.array([[0.3, -1.2], [0.5, 0.7]]), "b": jnp.array([0.1, -0.4])}
    x = jnp.array([[1.0, -2.0], [0.5, 0.25], [-1.5, 1.0]])
    wrong = _softplus_model(_softplus_with_rule(lambda z: jax.nn.sigmoid(-z)))  # σ(-z): a sign slip
    report = jaxmlp.check_gradients(params, x, backward_fn=jax.value_and_grad(wrong), loss_fn=softplus_reference)
    assert {f.split(":")[0] for f in report.failures} == {"['W']", "['b']"}


def test_a_backward_that_computes_in_float32_fails_and_says_so(x64):
    params, x, y = _problem()
    to32 = lambda loss, g: (loss, jax.tree.map(lambda a: a.astype(jnp.float32), g))
    report = jaxmlp.check_gradients(params, x, y, backward_fn=_mlp_backward_with(to32), loss_fn=MLP_REFERENCE)
    assert not report.ok
    assert all("came back as float32" in f for f in report.failures), report.failures


def test_report_prints_a_table_with_a_row_for_the_loss_and_one_per_leaf(x64):
    params, x, y = _problem()
    lines = str(jaxmlp.check_gradients(params, x, y, activation="tanh")).splitlines()
    assert lines[1].startswith("finite differences: ") and "directions" in lines[1]  # where the budget went
    assert all(h in lines[2] for h in ("ad max rel", "fd checked", "fd max rel", "fd flagged", "kinks"))
    assert [line.split()[0] for line in lines[4:]] == ["loss"] + [f"[{l}].{leaf}" for l in range(3) for leaf in "Wb"]
    assert all(line.rstrip().endswith("ok") for line in lines[4:])


def test_report_of_a_failure_prints_the_reason_and_the_table(x64):
    params, x, y = _problem()
    change, _ = MLP_BUGS["bias-(1,n)"]
    report = jaxmlp.check_gradients(params, x, y, backward_fn=_mlp_backward_with(change), loss_fn=MLP_REFERENCE)
    text = str(report)
    assert "[0].b" in text and "shape (1, 6) != (6,)" in text and "FAIL" in text
    with pytest.raises(AssertionError) as err:
        report.raise_for_failure()
    assert "[0].b: shape (1, 6) != (6,)" in str(err.value)
    wrong_loss = jaxmlp.check_gradients(params, x, y, backward_fn=_mlp_backward_with(MLP_BUGS["wrong-loss"][0]),
                                        loss_fn=MLP_REFERENCE)
    loss_line = str(wrong_loss).splitlines()[4]
    assert loss_line.startswith("loss") and "FAIL" in loss_line and "!= loss_fn's" in loss_line


# ------------------------------------------------------------------------------ never a false fail

@pytest.mark.parametrize("activation", ["tanh", "gelu", "relu", "leaky_relu"])
def test_jaxmlp_backward_passes_with_errors_near_rounding(x64, activation):
    params, x, y = _problem()
    report = jaxmlp.check_gradients(params, x, y, activation=activation, loss="mse")
    assert report.ok, str(report)
    assert report.max_rel_autodiff <= 1e-12
    assert report.max_rel_fd <= 1e-6
    assert all(r.autodiff.cosine > 1 - 1e-12 for r in report.rows)
    assert [r.path for r in report.rows] == [f"[{l}].{leaf}" for l in range(3) for leaf in "Wb"]
    assert report.loss_check.ok and report.loss_check.abs_err <= 1e-15 * abs(report.loss)
    report.raise_for_failure()  # passes silently


@pytest.mark.parametrize("loss, output, labels", [("bce", "sigmoid", "binary"), ("ce", "softmax", "int"),
                                                  ("ce", "softmax", "one-hot"), ("mse", "sigmoid", "float")])
def test_jaxmlp_backward_passes_for_every_output_and_loss(x64, loss, output, labels):
    params, x, y = _problem(sizes=(4, 6, 3))
    if labels == "binary":
        y = (y > 0).astype(jnp.float64)
    elif labels != "float":
        y = jnp.argmax(y, axis=1)
        y = y if labels == "int" else jax.nn.one_hot(y, 3, dtype=jnp.float64)
    report = jaxmlp.check_gradients(params, x, y, activation="gelu", output_activation=output, loss=loss)
    assert report.ok, str(report)


def test_dict_model_with_a_scalar_leaf_passes(x64):
    params, x, labels = _softmax_regression()
    report = jaxmlp.check_gradients(params, x, labels, backward_fn=softmax_regression_backward,
                                    loss_fn=softmax_regression_loss)
    assert report.ok, str(report)
    assert [r.path for r in report.rows] == ["['W']", "['b']", "['s']"]
    assert [r.fd_checked for r in report.rows] == ["all 12", "all 3", "all 1"]
    assert "near kink" not in str(report)  # not an MLP: no (G2) column


def test_own_layout_tuple_of_tuples_passes(x64):
    params, x, y = _own_layout()
    report = jaxmlp.check_gradients(params, x, y, backward_fn=own_layout_backward, loss_fn=own_layout_loss)
    assert report.ok, str(report)
    assert [r.path for r in report.rows] == ["[0][0]", "[0][1]", "[1][0]", "[1][1]"]


def test_own_layout_with_a_forgotten_derivative_fails_in_that_leaf(x64):
    params, x, y = _own_layout()

    def forgot_tanh_derivative(params, x, y):  # δ1 without ⊙ (1 - h²): the classic slip
        (W1, b1), (W2, b2) = params
        h = jnp.tanh(x @ W1 + b1[None, :])
        out = h @ W2 + b2[None, :]
        delta2 = 2 * (out - y) / out.size
        delta1 = delta2 @ W2.T
        return jnp.mean((out - y) ** 2), ((x.T @ delta1, jnp.sum(delta1, 0)), (h.T @ delta2, jnp.sum(delta2, 0)))

    report = jaxmlp.check_gradients(params, x, y, backward_fn=forgot_tanh_derivative, loss_fn=own_layout_loss)
    assert [f.split(":")[0] for f in report.failures] == ["[0][0]", "[0][1]"]


def test_custom_vjp_rule_passes_with_the_readme_recipe():
    params = {"W": jnp.array([[0.3, -1.2], [0.5, 0.7]]), "b": jnp.array([0.1, -0.4])}
    x = jnp.array([[1.0, -2.0], [0.5, 0.25], [-1.5, 1.0]])
    with_rule = _softplus_model(_softplus_with_rule(jax.nn.sigmoid))
    report = jaxmlp.check_gradients(params, x, backward_fn=jax.value_and_grad(with_rule), loss_fn=softplus_reference)
    assert report.ok, str(report)


def test_casts_float32_input_to_float64():
    params32, x32, y32 = _problem(dtype=jnp.float32)
    assert x32.dtype == jnp.float32
    report = jaxmlp.check_gradients(params32, x32, y32, activation="tanh")
    # float32 inputs would leave ~1e-7 relative errors against finite differences, and fail 1e-6.
    assert report.ok and report.max_rel_fd < 1e-7, str(report)


def test_float32_inputs_pass_for_a_user_model():
    params, x, labels = _softmax_regression()
    params32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    report = jaxmlp.check_gradients(params32, x.astype(jnp.float32), labels, backward_fn=softmax_regression_backward,
                                    loss_fn=softmax_regression_loss)
    assert report.ok, str(report)


def _zero_input_row(sizes=(4, 16, 16, 2)):
    """A relu MLP (zero biases) and a batch whose first row is all zeros: every pre-activation of that row,
    in every layer, sits exactly on relu's kink at 0."""
    params, x, y = _problem(sizes=sizes)
    return params, x.at[0].set(0.0), y


def test_exact_kinks_pass_for_jaxmlp_whose_convention_is_jaxs(x64):
    params, x, y = _zero_input_row()
    report = jaxmlp.check_gradients(params, x, y, activation="relu")
    assert report.ok, str(report)
    assert report.max_rel_autodiff <= 1e-14  # relu'(0) = 0, jax.nn.relu's: equal to rounding, nothing to excuse
    assert all(r.kinks == 0 for r in report.rows)


def test_exact_kinks_pass_for_a_user_backward_by_detecting_non_smoothness(x64):
    """Random directions through the 16 + 16 units on the kink are not bracketed by the one-sided slopes, and
    central differences miss the backward by ~10 %; (V5) flags those directions instead of failing them."""
    params, x, y = _zero_input_row()
    relu_loss = partial(jaxmlp.loss_fn, activation="relu")
    report = jaxmlp.check_gradients(params, x, y, backward_fn=partial(jaxmlp.backward, activation="relu"),
                                    loss_fn=relu_loss, fd_budget=40)
    assert report.ok, str(report)
    biases = [r for r in report.rows if r.path in ("[0].b", "[1].b")]
    assert all(r.fd_checked.endswith("dirs") and r.flagged > 0 and r.finite_diff.max_rel > 1e-2 for r in biases)


def test_non_smooth_direction_is_flagged_and_a_smooth_wrong_one_still_fails(x64):
    """f(θ) = Σ relu(θ) + Σ θ² at θ with exact zeros: central differences give ½ where relu'(0) = 0."""
    f = lambda p: jnp.sum(jax.nn.relu(p["t"])) + jnp.sum(p["t"] ** 2)
    params = {"t": jnp.array([0.0, 1.0, -2.0, 0.0])}
    right = jaxmlp.check_gradients(params, backward_fn=jax.value_and_grad(f), loss_fn=f)
    assert right.ok and right.rows[0].flagged == 2, str(right)

    def off_in_a_smooth_coordinate(p):
        loss, g = jax.value_and_grad(f)(p)
        return loss, {"t": g["t"].at[1].add(1e-3)}

    wrong = jaxmlp.check_gradients(params, backward_fn=off_in_a_smooth_coordinate, loss_fn=f)
    # error 1e-3 against the leaf's largest entry |∂f/∂t_2| = |2 (-2)| = 4, on autodiff and on the smooth coordinate
    assert wrong.failures == ("['t']: disagrees with jax.grad at 1 of 4 entries (max rel 2.50e-04 > 1e-09); disagrees "
                              "with finite differences along 1 smooth direction(s) (max rel 2.50e-04 > 1e-06); "
                              "worst entry (1,): 3.001 (jax.grad 3, finite differences 3)",)


def test_a_big_kink_does_not_loosen_the_other_directions_tolerance(x64):
    """f = 1000 relu(t_0) + t_1² at t = (0, ½): central differences give 500 across the kink, while the
    autodiff gradient is (0, 1). An error of 1e-4 in the smooth coordinate must fail against finite
    differences: judged relative to max |⟨g_ad, v⟩| = 1, not to the kink's inflated 500."""
    f = lambda p: 1000 * jax.nn.relu(p["t"][0]) + p["t"][1] ** 2
    params = {"t": jnp.array([0.0, 0.5])}

    def off(p):
        loss, g = jax.value_and_grad(f)(p)
        return loss, {"t": g["t"].at[1].add(1e-4)}

    report = jaxmlp.check_gradients(params, backward_fn=off, loss_fn=f)
    assert "disagrees with finite differences along 1 smooth direction(s) (max rel 1.00e-04" in report.failures[0]
    assert report.rows[0].flagged == 1


@pytest.mark.parametrize("distance", [0.0, 1 / 3, 0.2, 0.45, 0.9, -1 / 3])
def test_V5_sees_a_kink_within_the_step_wherever_it_lies(x64, distance):
    """g(t) = a t + J relu(t - d h): one kink at distance d h. One halving alone is blind at d = 1/3
    (c(h/2) = c(h)/2 exactly); two halvings are not."""
    h, a, J = 1e-6, 0.7, 0.5
    g = lambda t: a * t + J * max(t - distance * h, 0.0)
    c = lambda s: (g(s) - 2 * g(0.0) + g(-s)) / s
    smooth = verify.smooth_directions(1.0, np.array([c(h)]), np.array([c(h / 2)]), np.array([c(h / 4)]), h)
    assert not smooth[0]


def test_V5_calls_smooth_curvature_smooth(x64):
    h = 1e-6
    g = lambda t: np.exp(3 * t) + 2 * t ** 2
    c = lambda s: (g(s) - 2 * g(0.0) + g(-s)) / s
    assert verify.smooth_directions(1.0, np.array([c(h)]), np.array([c(h / 2)]), np.array([c(h / 4)]), h)[0]


def test_zero_loss_and_zero_gradient_pass(x64):
    params, x, _ = _problem(init="zeros")
    y = jnp.zeros((5, 2))  # the zero network fits zero targets: L = 0, ∇L = 0
    report = jaxmlp.check_gradients(params, x, y, activation="tanh")
    assert report.ok and report.loss == 0.0, str(report)


def test_a_leaf_the_loss_ignores_passes_with_rounding_noise_and_fails_with_a_real_gradient(x64):
    """jax.grad gives exactly 0 for an unused leaf; a backward that leaves 1e-30 there (rounding of some
    cancellation) is right, one that puts 1e-6 there is not (V2's floor is 64 ε of the largest entry)."""
    params, x, labels = _softmax_regression()
    params = {**params, "unused": jnp.ones(2)}

    def backward_fn(extra):
        def fn(params, x, labels):
            loss, g = softmax_regression_backward(params, x, labels)
            return loss, {**g, "unused": jnp.full(2, extra)}
        return fn

    loss_fn = lambda p, x, labels: softmax_regression_loss(p, x, labels) + 0.0 * jnp.sum(p["unused"])
    assert jaxmlp.check_gradients(params, x, labels, backward_fn=backward_fn(1e-30), loss_fn=loss_fn).ok
    bad = jaxmlp.check_gradients(params, x, labels, backward_fn=backward_fn(1e-6), loss_fn=loss_fn)
    assert [f.split(":")[0] for f in bad.failures] == ["['unused']"]


# ------------------------------------------------------------- what a first review found (red team)

def test_large_parameters_whose_steps_round_pass(x64):
    """At |θ| ≈ 1e5, θ ± 1e-6 rounds (ulp 1.5e-11): the step taken is not 2h, and (V3) must divide by it."""
    f = lambda p, c: jnp.sum((p["a"] - c) ** 2)
    c = 1e5 + jnp.arange(5.0)
    report = jaxmlp.check_gradients({"a": c + jnp.linspace(-0.3, 0.3, 5)}, c, backward_fn=jax.value_and_grad(f),
                                    loss_fn=f)
    assert report.ok and report.rows[0].flagged == 0, str(report)  # judged, not merely flagged as inconclusive


def test_a_right_gradient_at_a_least_squares_optimum_passes(x64):
    """At the optimum g is a cancellation: two right backwards that sum in different orders differ by its
    rounding, which the nudged-θ floor of (V2) measures; a real error there still fails."""
    k1, k2 = jax.random.split(jax.random.key(1))
    X = 10 * jax.random.normal(k1, (64, 8))
    w = jax.random.normal(k2, (8,))
    y = X @ w + 1e-9 * jnp.arange(64) / 64
    loss = lambda p, X, y: 0.5 * jnp.mean((X @ p["w"] - y) ** 2)

    def backward(error):
        def fn(p, X, y):
            r = jnp.einsum("nd,d->n", X[:, ::-1], p["w"][::-1]) - y  # the same sum in another order
            return 0.5 * jnp.mean(r ** 2), {"w": X.T @ r / 64 + error}
        return fn

    assert jaxmlp.check_gradients({"w": w}, X, y, backward_fn=backward(0.0), loss_fn=loss).ok
    assert not jaxmlp.check_gradients({"w": w}, X, y, backward_fn=backward(1e-6), loss_fn=loss).ok


def test_a_kink_the_nudge_crosses_does_not_excuse_the_rest_of_its_leaf(x64):
    """(V2)'s nudge of θ by 4 ε crosses the kinks the data put at θ (w[2r] - w[2r+1] = 0 for a constant w),
    where jax.grad jumps by 1: that jump is not rounding and must not widen τ for the leaf's other entries.
    A wrong smooth entry fails; a right backward passes, with jax's convention at the kinks or another. (The
    leaf is too large for coordinate directions, and every random one crosses a kink: only (V2) can fail it.)"""
    n, rows = 1000, 30
    X = np.zeros((rows, n))
    X[np.arange(rows), 2 * np.arange(rows)], X[np.arange(rows), 2 * np.arange(rows) + 1] = 1.0, -1.0
    w = jnp.full((n,), 0.3)
    loss = lambda w, X: jnp.sum(jax.nn.relu(X @ w)) + 0.5 * jnp.sum(w ** 2)

    def backward(error, relu_at_0):
        def fn(w, X):
            z = X @ w
            return loss(w, X), X.T @ jnp.where(z == 0, relu_at_0, (z > 0).astype(z.dtype)) + w + error
        return fn

    smooth_entry_off = jnp.zeros(n).at[500].set(1.0)  # entry 500 meets no kink: its right value is 0.3
    assert jaxmlp.check_gradients(w, X, backward_fn=backward(0.0, 0.0), loss_fn=loss).ok
    assert jaxmlp.check_gradients(w, X, backward_fn=backward(0.0, 1.0), loss_fn=loss).ok
    bad = jaxmlp.check_gradients(w, X, backward_fn=backward(smooth_entry_off, 0.0), loss_fn=loss)
    assert not bad.ok and bad.rows[0].worst_index == (500,), str(bad)
    assert bad.rows[0].reason.startswith("disagrees with jax.grad at 1 of 1000 entries"), str(bad)


def test_python_int_arguments_stay_static(x64):
    """An int argument used as a size (a slice, a range) is closed over, as jit's static_argnums would."""
    def loss(p, x, k):
        return sum(jnp.sum(p["w"][:k] * x[:k]) ** 2 for _ in range(k))

    def backward(p, x, k):
        s = jnp.sum(p["w"][:k] * x[:k])
        return k * s ** 2, {"w": jnp.zeros(4).at[:k].set(2 * k * s * x[:k])}

    params, x = {"w": jnp.array([0.5, -1.0, 2.0, 0.3])}, jnp.array([1.0, 2.0, -0.5, 4.0])
    assert jaxmlp.check_gradients(params, x, 3, backward_fn=backward, loss_fn=loss).ok
    assert jaxmlp.check_gradients(params, x, 2, backward_fn=backward, loss_fn=loss).ok  # another k: recompiled


def test_grads_jax_cannot_flatten_give_a_failing_report(x64):
    params, x, labels = _softmax_regression()
    report = jaxmlp.check_gradients(params, x, labels, loss_fn=softmax_regression_loss,
                                    backward_fn=lambda p, x, l: (softmax_regression_loss(p, x, l), {"W": 1, 0: 2}))
    assert not report.ok and "grads is not a pytree jax can flatten" in report.failures[0]


def test_a_bfloat16_gradient_is_called_imprecise_not_non_floating(x64):
    params, x, labels = _softmax_regression()

    def backward(p, x, labels):
        loss, g = softmax_regression_backward(p, x, labels)
        return loss, {**g, "W": g["W"].astype(jnp.bfloat16)}

    report = jaxmlp.check_gradients(params, x, labels, backward_fn=backward, loss_fn=softmax_regression_loss)
    assert report.failures == (report.failures[0],) and "came back as bfloat16" in report.failures[0]


def test_a_step_too_small_to_move_theta_fails_instead_of_checking_nothing(x64):
    params, x, labels = _softmax_regression()
    with pytest.warns(UserWarning, match="outside"):
        report = jaxmlp.check_gradients(params, x, labels, backward_fn=softmax_regression_backward,
                                        loss_fn=softmax_regression_loss, h=1e-300)
    assert not report.ok and all("does not move θ" in f for f in report.failures)


# -------------------------------------------------------------------------------- scale, compile

def test_the_budget_is_spread_over_leaves_by_size(x64):
    """√n shares, capped at a leaf's n coordinates, at least one direction per leaf; the report says where."""
    assert verify.allocate([400, 100, 4, 1], [True] * 4, 30) == [19, 9, 1, 1]  # t = 0.95: 0.95 √n, floored
    assert verify.allocate([400, 100, 4, 1], [True, False, True, True], 30) == [27, 0, 2, 1]
    assert verify.allocate([10, 10], [True, True], 1000) == [10, 10]  # a small model is checked whole
    params, x, y = _problem(sizes=(30, 20, 2))
    report = jaxmlp.check_gradients(params, x, y, activation="tanh", fd_budget=60)
    assert [r.fd_checked for r in report.rows] == ["21 dirs", "3 dirs", "5 dirs", "1 dir"]  # 600, 20, 40, 2 entries
    assert report.fd_spent == {"directions": 30, "evaluations": 60, "reruns": 0, "kink_evaluations": 0,
                               "off_kink": False}
    assert report.ok, str(report)
    bad = jaxmlp.check_gradients(params, x, y, backward_fn=_mlp_backward_with(_first_layer(_largest_entry_times(1.01))),
                                 loss_fn=MLP_REFERENCE, fd_budget=60)
    assert bad.rows[0].finite_diff.max_rel > 1e-6 and not bad.rows[0].ok  # a 1 % error shows along directions
    assert 0 < bad.fd_spent["reruns"] <= 4 * 21  # only the failing directions run again, at h/2 and h/4


def _compilations(fn):
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles():
            fn()
    finally:
        logging.getLogger("jax").removeHandler(handler)
    return [line for line in log.getvalue().splitlines() if line.startswith("Compiling")]


def test_a_repeat_call_with_the_same_shapes_does_not_recompile(x64):
    params, x, y = _problem(sizes=(3, 7, 4), batch=9)  # shapes no other test uses: the first call compiles
    first = _compilations(lambda: jaxmlp.check_gradients(params, x, y, activation="tanh"))
    params2, x2, y2 = _problem(sizes=(3, 7, 4), batch=9, seed=3)
    again = _compilations(lambda: jaxmlp.check_gradients(params2, x2, y2, activation="tanh"))
    assert first and not again, again
    p, xs, labels = _softmax_regression()
    xs, labels = jnp.concatenate([xs, xs[:3]]), jnp.concatenate([labels, labels[:3]])  # batch 9: new shapes
    fresh_partial = lambda: partial(softmax_regression_loss)  # a new partial object on every call
    assert _compilations(lambda: jaxmlp.check_gradients(p, xs, labels, backward_fn=softmax_regression_backward,
                                                        loss_fn=fresh_partial()))
    assert not _compilations(lambda: jaxmlp.check_gradients(p, xs, labels, backward_fn=softmax_regression_backward,
                                                            loss_fn=fresh_partial()))


@pytest.mark.slow
def test_784_512_512_10_checks_and_passes(x64):
    """Issue 10's scale case (670k parameters, batch 64, float64); time and memory are measured by
    ``python -m benchmarks.gradcheck_scale``, not here."""
    k_p, k_x, k_y = jax.random.split(jax.random.key(0), 3)
    params = jaxmlp.init_mlp(k_p, [784, 512, 512, 10], dtype=jnp.float64)
    x = jax.random.normal(k_x, (64, 784), jnp.float64)
    labels = jax.random.randint(k_y, (64,), 0, 10)
    report = jaxmlp.check_gradients(params, x, labels, activation="relu", loss="ce")
    assert report.ok, str(report)
    assert report.fd_spent["directions"] <= verify.FD_BUDGET // 2

    def slip(params, x, labels):  # one entry of the 512x512 layer off by 1e-5 relative
        loss, g = jaxmlp.backward(params, x, labels, activation="relu", loss="ce")
        return loss, (g[0], _largest_entry_times(1 + 1e-5)(g[1]), g[2])

    bad = jaxmlp.check_gradients(params, x, labels, backward_fn=slip,
                                 loss_fn=partial(jaxmlp.loss_fn, activation="relu", loss="ce"))
    assert [f.split(":")[0] for f in bad.failures] == ["[1].W"]


# ------------------------------------------------------------------------------------ bad input

def test_user_backward_needs_its_loss_fn(x64):
    params, x, y = _problem()
    with pytest.raises(TypeError, match="backward_fn and loss_fn together"):
        jaxmlp.check_gradients(params, x, y, backward_fn=partial(jaxmlp.backward, loss="mse"))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(h=0.0), ValueError, "h must be a finite number > 0"),
    (dict(rtol_fd=-1.0), ValueError, "rtol_fd must be a finite number > 0"),
    (dict(h=float("inf")), ValueError, "h must be a finite number > 0"),
    (dict(fd_budget=1), ValueError, r"fd_budget must be an int in \[2, 2\*\*31\)"),
    (dict(precision="float16"), ValueError, r"precision must be one of \('float64', 'float32'\)"),
    (dict(kinks="lenient"), ValueError, r"kinks must be one of \('allow', 'strict'\)"),
    (dict(seed=2 ** 40), ValueError, r"seed must be an int in \[0, 2\*\*31\)"),
    (dict(activaton="relu"), TypeError, r"unexpected keyword argument\(s\) \['activaton'\]"),
])
def test_bad_options_are_named(x64, kwargs, error, match):
    params, x, y = _problem()
    with pytest.raises(error, match=match):
        jaxmlp.check_gradients(params, x, y, **kwargs)


def test_mlp_options_on_a_dict_model_are_a_type_error(x64):
    params, x, labels = _softmax_regression()
    with pytest.raises(TypeError, match="needs a jaxmlp MLP"):
        jaxmlp.check_gradients(params, x, labels)
    with pytest.raises(TypeError, match=r"MLP options \['activation'\]"):
        jaxmlp.check_gradients(params, x, labels, backward_fn=softmax_regression_backward,
                               loss_fn=softmax_regression_loss, activation="relu")


def test_an_untraceable_loss_fn_is_a_type_error_saying_so(x64):
    def loss_fn(p, x):  # Python control flow on an array value: not traceable by jit
        return jnp.sum(p["w"] * x) if jnp.sum(p["w"]) > 0 else 0.0

    with pytest.raises(TypeError, match="loss_fn must be traceable by jax.jit"):
        jaxmlp.check_gradients({"w": jnp.ones(3)}, jnp.ones(3), backward_fn=jax.value_and_grad(loss_fn),
                               loss_fn=loss_fn)


def test_an_integer_parameter_leaf_is_a_type_error(x64):
    params, x, labels = _softmax_regression()
    with pytest.raises(TypeError, match=r"params leaf \['n'\] must be a floating array"):
        jaxmlp.check_gradients({**params, "n": jnp.array(3)}, x, labels, backward_fn=softmax_regression_backward,
                               loss_fn=softmax_regression_loss)


# ------------------------------------------------------------------------------ the MLP extras

def test_zero_init_passes_exactly(x64):
    """Every hidden pre-activation on relu's kink, but every delta above it 0: nothing moves, nothing to excuse."""
    params, x, y = _problem(init="zeros")
    report = jaxmlp.check_gradients(params, x, y, activation="relu")
    assert report.ok and report.max_rel_autodiff == 0.0 and all(r.kinks == 0 for r in report.rows), str(report)


def test_fd_across_a_kink_is_wrong_and_flagged_not_failed(x64):
    """First layer zero, later layers random: every z[1] sits on relu's kink while the deltas above are
    not zero, so central differences straddle the kink and disagree; (V5) flags them instead of failing."""
    params, x, y = _problem(init="he")
    params = (Layer(jnp.zeros_like(params[0].W), jnp.zeros_like(params[0].b)),) + params[1:]
    report = jaxmlp.check_gradients(params, x, y, activation="relu")
    first = report.rows[1]  # b[1]: every direction crosses the kink
    assert first.finite_diff.max_rel > 1e-2 and first.flagged > 0  # finite differences mean nothing there...
    assert first.autodiff.max_rel <= 1e-12 and first.ok and report.ok  # ...and are not judged


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


# ------------------------------------------------------------------------------ a researcher's models

@pytest.mark.parametrize("name", list(_models.MODELS))
def test_a_right_hand_written_backward_of_a_researchers_model_passes(x64, name):
    m = _models.MODELS[name]()
    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=m.backward, loss_fn=m.loss)
    assert report.ok, str(report)


CATALOGUE = [(name, bug) for name in _models.MODELS for bug in _models.GENERIC_BUGS] + [
    (name, bug) for name, make in _models.MODELS.items() for bug in make().bugs]


@pytest.mark.parametrize("name, bug", CATALOGUE, ids=[f"{n}-{b}" for n, b in CATALOGUE])
def test_a_planted_bug_in_a_researchers_model_fails_naming_the_leaf(x64, name, bug):
    m = _models.MODELS[name]()
    if bug in m.bugs:
        backward_fn, expected = m.bugs[bug]
    else:
        change, expected = _models.GENERIC_BUGS[bug]
        backward_fn, expected = _models.with_bug(m, change), _models.expected_path(m, expected)
    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=backward_fn, loss_fn=m.loss)
    assert not report.ok
    assert any(f.startswith(expected) for f in report.failures), (expected, report.failures)


# ------------------------------------------------------------------------------ kinks judged, not guessed

def test_jaxs_own_derivatives_at_kinks_are_what_the_readme_says(x64):
    assert jax.grad(jax.nn.relu)(0.0) == 0.0
    assert jax.grad(lambda z: jnp.maximum(z, 0.0))(0.0) == 0.5
    assert jax.grad(jnp.abs)(0.0) == 1.0


def _conv_at_kinks(convention, reference):
    m = _models.conv(zero_block=True)  # a block of exact zero inputs and zero bias: z = 0 there, on relu's kink
    relu = {"jax.nn.relu": jax.nn.relu, "maximum": lambda z: jnp.maximum(z, 0.0)}[reference]
    return (m, partial(_models.conv_backward, relu_at_zero=convention), partial(_models.conv_loss, relu=relu))


@pytest.mark.parametrize("convention, reference", [(1.0, "jax.nn.relu"), (0.5, "jax.nn.relu"), (0.0, "maximum"),
                                                   (1.0, "maximum")])
def test_a_right_convention_at_exact_kinks_passes_by_default_and_fails_strict(x64, convention, reference):
    """relu'(0) differs from the reference's (jax.nn.relu: 0, jnp.maximum: 0.5): every bias entry disagrees
    with jax.grad, lies between the one-sided slopes (V8), and agrees with jax.grad off the kink (V9)."""
    m, backward_fn, loss_fn = _conv_at_kinks(convention, reference)
    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=backward_fn, loss_fn=loss_fn)
    assert report.ok, str(report)
    bias = next(r for r in report.rows if r.path == "['bias']")
    assert bias.kinks == 6 and bias.reason == ("kink: convention differs from jax.grad at 6 entries, all within the "
                                               "one-sided slopes, and agrees off the kink")
    assert report.fd_spent["off_kink"] and report.fd_spent["kink_evaluations"] > 0
    strict = jaxmlp.check_gradients(m.params, *m.args, backward_fn=backward_fn, loss_fn=loss_fn, kinks="strict")
    assert strict.failures == (f"['bias']: disagrees with jax.grad at 6 of 6 entries (max rel "
                               f"{strict.rows[0].autodiff.max_rel:.2e} > 1e-09); of these, 6 at kinks of the loss, "
                               f"within the one-sided slopes (kinks='allow' judges those); worst entry "
                               f"{strict.rows[0].worst_index}: {strict.rows[0].worst_value:.6g} (jax.grad "
                               f"{strict.rows[0].worst_reference:.6g}, finite differences {strict.rows[0].worst_fd:.6g})",)


def test_a_wrong_value_at_a_kink_outside_the_one_sided_slopes_fails(x64):
    m, backward_fn, loss_fn = _conv_at_kinks(1.0, "jax.nn.relu")

    def planted(p, x, y):
        loss, g = backward_fn(p, x, y)
        return loss, {**g, "bias": g["bias"].at[2].add(30.0)}  # beyond both one-sided slopes (about -27 and -10)

    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=planted, loss_fn=loss_fn)
    assert report.failures[0].startswith("['bias']: disagrees with jax.grad at 1 of 6 entries")
    assert "1 at kinks of the loss but outside the one-sided slopes (V8)" in report.failures[0]
    assert report.rows[0].worst_index == (2,)


def test_a_gradient_scaled_by_0_9_inside_the_slopes_fails_off_the_kink(x64):
    """All inputs 0 and zero bias: every z = b = 0, so along a bias entry the one-sided slopes are 0 and s₊ and
    any value between is a right convention at θ. 0.9 × relu'(0) = 1's value is one; the same 0.9 off the
    kink, where z = b' ≠ 0, is not jax.grad's: (V9) fails it."""
    m = _models.conv(zero_block=True)
    x = jnp.zeros_like(m.args[0])
    args = (x, m.args[1])

    def scaled(p, x, y):
        loss, g = _models.conv_backward(p, x, y, relu_at_zero=1.0)
        return loss, {**g, "bias": 0.9 * g["bias"]}

    right = jaxmlp.check_gradients(m.params, *args, backward_fn=partial(_models.conv_backward, relu_at_zero=1.0),
                                   loss_fn=_models.conv_loss)
    assert right.ok and right.rows[0].kinks > 0, str(right)
    report = jaxmlp.check_gradients(m.params, *args, backward_fn=scaled, loss_fn=_models.conv_loss)
    assert not report.ok
    assert "but off the kink (θ moved by 0.0001(|θ| + 1)) still not jax.grad's (V9)" in report.failures[0]


def test_more_disagreements_than_the_kink_judgement_examines_fail_without_sampling(x64, monkeypatch):
    m, backward_fn, loss_fn = _conv_at_kinks(1.0, "jax.nn.relu")
    monkeypatch.setattr(verify, "KINK_ENTRIES", 5)  # 6 bias entries disagree: one more than it examines
    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=backward_fn, loss_fn=loss_fn)
    assert not report.ok and "more entries disagree in all than the 5 the kink judgement examines" in report.failures[0]


def test_a_disagreement_where_the_loss_is_smooth_is_not_excused(x64):
    m = _models.layer_norm()  # tanh: smooth everywhere
    change, _ = _models.GENERIC_BUGS["one-entry-off-by-1e-4"]
    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=_models.with_bug(m, change), loss_fn=m.loss)
    assert not report.ok and "kink" not in report.failures[0] and report.fd_spent["kink_evaluations"] > 0


# ------------------------------------------------------------------------------ where it fails, presets, hints

def test_a_failing_row_names_its_worst_entry_with_both_references(x64):
    params, x, y = _problem()
    reference = jax.grad(MLP_REFERENCE)(params, x, y)

    def off(loss, g):
        return loss, (g[0], Layer(g[1].W.at[3, 2].add(1e-3), g[1].b), g[2])

    report = jaxmlp.check_gradients(params, x, y, backward_fn=_mlp_backward_with(off), loss_fn=MLP_REFERENCE)
    row = next(r for r in report.rows if not r.ok)
    assert row.path == "[1].W" and row.worst_index == (3, 2)
    assert row.worst_value == pytest.approx(float(reference[1].W[3, 2]) + 1e-3, rel=1e-12)
    assert row.worst_reference == pytest.approx(float(reference[1].W[3, 2]), rel=1e-12)
    assert row.worst_fd == pytest.approx(row.worst_reference, rel=1e-6)  # the finite difference agrees with jax
    assert f"worst entry (3, 2): {row.worst_value:.6g} (jax.grad {row.worst_reference:.6g}" in row.reason
    assert report.to_dict()["rows"][2]["worst_index"] == [3, 2]


def test_float32_preset_passes_a_float32_backward_that_the_default_fails(x64):
    m = _models.attention()
    to32 = _models.with_bug(m, _models.GENERIC_BUGS["float32-backward"][0])
    default = jaxmlp.check_gradients(m.params, *m.args, backward_fn=to32, loss_fn=m.loss)
    assert not default.ok and all("(or precision='float32')" in f for f in default.failures), default.failures
    relaxed = jaxmlp.check_gradients(m.params, *m.args, backward_fn=to32, loss_fn=m.loss, precision="float32")
    assert relaxed.ok and (relaxed.rtol_autodiff, relaxed.rtol_fd) == (1e-5, 1e-4), str(relaxed)
    one_entry = _models.with_bug(m, _models.GENERIC_BUGS["one-entry-off-by-1e-4"][0])
    assert not jaxmlp.check_gradients(m.params, *m.args, backward_fn=one_entry, loss_fn=m.loss, precision="float32")


def test_a_swapped_pair_is_named_as_such(x64):
    m = _models.mixed()
    report = jaxmlp.check_gradients(m.params, *m.args, backward_fn=lambda *a: m.backward(*a)[::-1], loss_fn=m.loss)
    assert report.failures == ("loss: backward_fn returned (grads, loss), not (loss, grads): the pair is swapped (the "
                               "rows below check it swapped back)",)
    assert all(r.ok for r in report.rows)


@pytest.mark.perf
def test_a_failing_check_compiles_nothing_a_passing_one_did_not(x64):
    """The reruns at h/2 and h/4 and the kink judgement go through the same compiled programs."""
    m = _models.rnn(seed=3)
    jaxmlp.check_gradients(m.params, *m.args, backward_fn=m.backward, loss_fn=m.loss)
    bug, _ = m.bugs["bptt-truncated"]
    assert not _compilations(lambda: jaxmlp.check_gradients(m.params, *m.args, backward_fn=bug, loss_fn=m.loss))


def test_an_empty_leaf_is_checked_without_raising(x64):
    """A zero-size leaf (a layer of width 0, say) has no entry to compare and no worst entry: it passes."""
    f = lambda p, x: jnp.sum(p["w"] ** 2 * x) + jnp.sum(p["e"])
    params, x = {"w": jnp.array([1.0, -2.0, 0.5]), "e": jnp.zeros((0,))}, jnp.array([0.3, 1.0, 2.0])
    report = jaxmlp.check_gradients(params, x, backward_fn=jax.value_and_grad(f), loss_fn=f)
    assert report.ok, str(report)
    assert next(r for r in report.rows if r.path == "['e']").worst_index is None
