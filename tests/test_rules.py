"""check_vjp, check_jvp, check_hvp: rules of functions with vector outputs, and second-order code.

Each check gets a right rule (it must pass) and the bugs such rules have (each must fail, in the row of
the input and output leaf where it happens): a custom layer norm with two outputs and a custom attention,
as ``jax.custom_vjp`` / ``jax.custom_jvp`` functions and as plain ``vjp``/``jvp`` functions; for second order,
a Gauss-Newton product passed off as the Hessian's and an HVP missing σ''.
"""

from functools import partial

import jax
import jax.numpy as jnp
import pytest

import jaxmlp
from jaxmlp import activations

# ---------------------------------------------------------------------------------------- a layer norm, 2 outputs


def layer_norm(x, gamma, beta):
    """(x̂ γ + β, the row means): two outputs, so a rule can drop one's contribution."""
    mu = x.mean(-1, keepdims=True)
    xhat = (x - mu) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return xhat * gamma[None] + beta[None], mu[:, 0]


def layer_norm_vjp(primals, cotangent, *, bug=None):
    """By hand: dx = (1/σ)(dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂)) + dμ / d."""
    x, gamma, _ = primals
    dy, dmu = cotangent
    d = x.shape[-1]
    sigma = jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    xhat = (x - x.mean(-1, keepdims=True)) / sigma
    if bug == "float32":
        dy, xhat, sigma, gamma = (a.astype(jnp.float32) for a in (dy, xhat, sigma, gamma))
    dxhat = dy * gamma[None]
    dx = (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)) / sigma
    if bug != "drop-output":  # the row means' cotangent reaches every entry of its row
        dx = dx + dmu[:, None] / d
    dgamma = (dy * xhat).sum(0) * (2.0 if bug == "scale" else 1.0)
    if bug == "transposed":
        dx = dx.T
    return dx, dgamma, dy.sum(0)


def _custom_layer_norm(bug=None):
    f = jax.custom_vjp(layer_norm)
    f.defvjp(lambda x, g, b: (layer_norm(x, g, b), (x, g, b)), lambda res, ct: layer_norm_vjp(res, ct, bug=bug))
    return f


def _ln_primals():
    k = jax.random.split(jax.random.key(0), 3)
    return jax.random.normal(k[0], (4, 4)), 1 + 0.1 * jax.random.normal(k[1], (4,)), jax.random.normal(k[2], (4,))


# ---------------------------------------------------------------------------------------- attention

def attention(Q, K, V):
    return jax.nn.softmax(Q @ K.T / jnp.sqrt(Q.shape[-1]), axis=-1) @ V


def attention_jvp(primals, tangents, *, bug=None):
    """By hand: Ṡ = (Q̇ Kᵀ + Q K̇ᵀ)/√d, Ṗ = P ⊙ (Ṡ - rowsum(P ⊙ Ṡ)), Ȯ = Ṗ V + P V̇."""
    dtype = primals[0].dtype
    if bug == "float32":  # the whole rule computed in float32, its result handed back in float64
        primals, tangents = ([a.astype(jnp.float32) for a in t] for t in (primals, tangents))
    Q, K, V = primals
    dQ, dK, dV = tangents
    c = 1.0 if bug == "scale" else 1 / jnp.sqrt(Q.shape[-1])
    P = jax.nn.softmax(Q @ K.T / jnp.sqrt(Q.shape[-1]), axis=-1)
    dS = c * (dQ @ K.T + (0.0 if bug == "drop-input" else Q @ dK.T))
    dP = P * (dS - jnp.sum(P * dS, axis=-1, keepdims=True))
    out = dP @ V + P @ dV
    if bug == "transposed":
        out = out.T
    return (P @ V).astype(dtype), out.astype(dtype)


def attention_vjp(primals, dO, *, bug=None):
    Q, K, V = primals
    c = 1.0 if bug == "scale" else 1 / jnp.sqrt(Q.shape[-1])
    P = jax.nn.softmax(Q @ K.T / jnp.sqrt(Q.shape[-1]), axis=-1)
    dP = dO @ V.T
    dS = P * (dP - jnp.sum(dP * P, axis=-1, keepdims=True))
    dQ, dK = c * dS @ K, c * dS.T @ Q
    if bug == "transposed":
        dQ = dQ.T
    if bug == "float32":
        dQ, dK = dQ.astype(jnp.float32), dK.astype(jnp.float32)
    return dQ, dK, P.T @ dO


def _custom_attention_jvp(bug=None):
    f = jax.custom_jvp(attention)
    f.defjvp(lambda primals, tangents: attention_jvp(primals, tangents, bug=bug))
    return f


def _qkv():
    k = jax.random.split(jax.random.key(1), 3)
    return tuple(jax.random.normal(key, (5, 5)) for key in k)


# ---------------------------------------------------------------------------------------- check_vjp

def test_a_right_custom_vjp_rule_passes_row_by_row(x64):
    report = jaxmlp.check_vjp(layer_norm, *_ln_primals(), rule=_custom_layer_norm())
    assert report.ok, str(report)
    assert [r.path for r in report.rows] == [f"[{i}] <- [{k}]" for i in range(3) for k in range(2)]
    assert report.value_check.ok and report.kind == "vjp"
    assert jaxmlp.check_vjp(attention, *_qkv(), vjp=attention_vjp).ok


@pytest.mark.parametrize("bug, rows", [
    ("transposed", {"[0] <- [0]", "[0] <- [1]"}),
    ("drop-output", {"[0] <- [1]"}),  # only the row means' contribution is lost
    ("scale", {"[1] <- [0]"}),
    ("float32", {"[0] <- [0]", "[1] <- [0]", "[2] <- [0]"}),  # all of dy's path: dμ's term stays float64
])
def test_a_wrong_custom_vjp_rule_fails_where_it_is_wrong(x64, bug, rows):
    report = jaxmlp.check_vjp(layer_norm, *_ln_primals(), rule=_custom_layer_norm(bug))
    assert {r.path for r in report.rows if not r.ok} == rows, str(report)
    if bug == "float32":
        assert "float32" in report.failures[0]


@pytest.mark.parametrize("bug, failing", [("transposed", "[0] <- (root)"), ("scale", "[0] <- (root)"),
                                          ("float32", "[1] <- (root)")])
def test_a_wrong_attention_vjp_fails(x64, bug, failing):
    report = jaxmlp.check_vjp(attention, *_qkv(), vjp=partial(attention_vjp, bug=bug))
    assert failing in {r.path for r in report.rows if not r.ok}, str(report)


def test_a_vjp_returning_the_wrong_structure_fails_instead_of_raising(x64):
    report = jaxmlp.check_vjp(attention, *_qkv(), vjp=lambda primals, ct: attention_vjp(primals, ct)[:2])
    assert not report.ok and "not a pytree of the inputs' structure" in report.failures[0]


@pytest.mark.parametrize("check", ["vjp", "jvp"])
def test_a_large_output_does_not_hide_an_error_in_a_small_one(x64, check):
    """One output leaf of size 1e12 beside one of size 1e-6: the finite differences' rounding noise of each
    row is its own output's, so a rule 25 % wrong on the small output fails (with the large output's noise,
    it passed)."""
    f = lambda x: {"big": 1e12 * x, "small": 1e-6 * x ** 2}
    x = jnp.array([0.7, -1.3, 2.1])

    def vjp(scale):
        return lambda primals, u: (1e12 * u["big"] + 1e-6 * scale * primals[0] * u["small"],)

    def jvp(scale):
        return lambda primals, tangents: (f(*primals), {"big": 1e12 * tangents[0],
                                                        "small": 1e-6 * scale * primals[0] * tangents[0]})

    run = (lambda rule: jaxmlp.check_vjp(f, x, vjp=rule)) if check == "vjp" else (
        lambda rule: jaxmlp.check_jvp(f, x, jvp=rule))
    make = vjp if check == "vjp" else jvp
    assert run(make(2.0)).ok
    bad = run(make(2.5))
    assert [r.path.endswith("['small']") for r in bad.rows if not r.ok] == [True], str(bad)


def test_exactly_one_of_vjp_and_rule(x64):
    with pytest.raises(TypeError, match="exactly one of vjp="):
        jaxmlp.check_vjp(attention, *_qkv())


# ---------------------------------------------------------------------------------------- check_jvp

def test_a_right_custom_jvp_rule_passes(x64):
    report = jaxmlp.check_jvp(attention, *_qkv(), rule=_custom_attention_jvp())
    assert report.ok, str(report)
    assert [r.path for r in report.rows] == ["[0] -> (root)", "[1] -> (root)", "[2] -> (root)"]
    assert jaxmlp.check_jvp(attention, *_qkv(), jvp=attention_jvp).ok


@pytest.mark.parametrize("bug, rows", [
    ("transposed", {"[0] -> (root)", "[1] -> (root)", "[2] -> (root)"}),
    ("drop-input", {"[1] -> (root)"}),  # K's tangent dropped
    ("scale", {"[0] -> (root)", "[1] -> (root)"}),
    ("float32", {"[0] -> (root)", "[1] -> (root)", "[2] -> (root)"}),
])
def test_a_wrong_custom_jvp_rule_fails_where_it_is_wrong(x64, bug, rows):
    report = jaxmlp.check_jvp(attention, *_qkv(), rule=_custom_attention_jvp(bug))
    assert {r.path for r in report.rows if not r.ok} == rows, str(report)


def test_a_jvp_whose_primal_output_is_wrong_fails_the_value_row(x64):
    def wrong_out(primals, tangents):
        out, t = attention_jvp(primals, tangents)
        return 1.001 * out, t

    report = jaxmlp.check_jvp(attention, *_qkv(), jvp=wrong_out)
    assert not report.ok and report.failures[0].startswith("output: the rule's primal output differs")


# ---------------------------------------------------------------------------------------- check_hvp

def _mlp(activation="tanh", loss="mse", output_activation=None):
    k = jax.random.split(jax.random.key(2), 3)
    params = jaxmlp.init_mlp(k[0], [3, 5, 4, 2], init="xavier", dtype=jnp.float64)
    x = jax.random.normal(k[1], (6, 3))
    y = jax.random.normal(k[2], (6, 2)) if loss == "mse" else jax.random.randint(k[2], (6,), 0, 2)
    kw = dict(activation=activation, loss=loss, output_activation=output_activation)
    return params, x, y, kw


def test_jaxmlps_hvp_passes_check_hvp(x64):
    params, x, y, kw = _mlp()
    report = jaxmlp.check_hvp(params, x, y, hvp_fn=partial(jaxmlp.hvp, **kw), loss_fn=partial(jaxmlp.loss_fn, **kw))
    assert report.ok and report.kind == "hvp", str(report)
    assert [r.path for r in report.rows] == [f"[{l}].{leaf}" for l in range(3) for leaf in "Wb"]


def test_a_gauss_newton_product_is_not_the_hessians(x64):
    """G v = Jᵀ (∂²ℓ/∂ŷ²) J v, J the Jacobian of the network's output: it leaves out the curvature of the
    network itself (the σ'' and V[l] terms of (H4))."""
    params, x, y, kw = _mlp()

    def gauss_newton(params, v, x, y):
        out = lambda p: jaxmlp.forward(p, x, activation="tanh")
        Jv = jax.jvp(out, (params,), (v,))[1]
        return jax.vjp(out, params)[1](2 * Jv / Jv.size)[0]  # mse: ∂²ℓ/∂ŷ² = 2/n

    report = jaxmlp.check_hvp(params, x, y, hvp_fn=gauss_newton, loss_fn=partial(jaxmlp.loss_fn, **kw))
    assert not report.ok
    assert {r.path for r in report.rows if not r.ok} >= {"[0].W", "[1].W"}, str(report)


def test_an_hvp_missing_the_second_derivative_of_sigma_fails(x64):
    tanh = activations.tanh
    no_curvature = activations.Activation("tanh", tanh.fn, tanh.grad, grad2=lambda z: jnp.zeros_like(z))
    params, x, y, kw = _mlp()
    report = jaxmlp.check_hvp(params, x, y, hvp_fn=partial(jaxmlp.hvp, **{**kw, "activation": no_curvature}),
                              loss_fn=partial(jaxmlp.loss_fn, **kw))
    assert not report.ok and "[0].W" in {r.path for r in report.rows if not r.ok}, str(report)


def test_hvp_results_of_the_wrong_structure_fail_instead_of_raising(x64):
    params, x, y, kw = _mlp()
    report = jaxmlp.check_hvp(params, x, y, hvp_fn=lambda p, v, x, y: v[:2], loss_fn=partial(jaxmlp.loss_fn, **kw))
    assert not report.ok and all("not a pytree" in f for f in report.failures)
