"""Every jaxmlp optimizer follows the conventions optax's own optimizers follow.

Written for jaxmlp from what optax's alias tests check (not a copy of them): convergence on a parabola
and on Rosenbrock's function in float32 and complex64; one compilation for repeated jitted steps;
extra keyword arguments to ``update``; ``optax.inject_hyperparams``; updates in the gradient's dtype
and a state whose dtypes do not change, float16 to complex128; ``optax.MultiSteps``; explicit state
dtypes. Plus: AdamW and schedules inside :func:`jaxmlp.fit` and :func:`jaxmlp.fit_ensemble`.

Each table row is one optimizer as ``(id, factory, kwargs)``, so that ``inject_hyperparams(factory)``
can rebuild it; the step sizes are ones at which each converges on both problems in 20000 steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_trees_equal, max_rel

import jaxmlp
from jaxmlp import optim

OPTIMIZERS = [
    ("gd", optim.gd, dict(learning_rate=1e-3)),
    ("momentum", optim.sgd, dict(learning_rate=1e-3, momentum=0.9)),
    # At 1e-3, Nesterov (optax's too) does not converge on complex Rosenbrock: the step is halved.
    ("nesterov", optim.sgd, dict(learning_rate=5e-4, momentum=0.9, nesterov=True)),
    ("adam", optim.adam, dict(learning_rate=3e-2)),
    ("nadam", optim.adam, dict(learning_rate=1e-2, nesterov=True)),
    ("adamw", optim.adamw, dict(learning_rate=3e-2)),
    ("nadamw", optim.adamw, dict(learning_rate=1e-2, weight_decay=1e-3, nesterov=True)),
    ("momentum-schedule", optim.sgd, dict(learning_rate=optax.exponential_decay(2e-3, 5000, 0.5), momentum=0.9)),
    ("adam-schedule", optim.adam, dict(learning_rate=optax.cosine_decay_schedule(1e-1, 20000, alpha=0.01))),
]
IDS = [o[0] for o in OPTIMIZERS]
BY_ID = {o[0]: o for o in OPTIMIZERS}


def build(opt_id):
    _, factory, kwargs = BY_ID[opt_id]
    return factory(**kwargs)


# ---------------------------------------------------------------- convergence


def parabola(dtype):
    """``(θ₀, θ*, f)``: f(θ) = Σ |θ - θ*|², θ* = (1, -1, 1), times (1 + i) for complex θ."""
    complex_ = jnp.issubdtype(dtype, jnp.complexfloating)
    target = jnp.array([1.0, -1.0, 1.0], dtype) * (1 + 1j if complex_ else 1)
    return jnp.array([-1.0, 10.0, 1.0], dtype), target, lambda p: jnp.sum(jnp.abs(p - target) ** 2)


def rosenbrock(dtype):
    """``(θ₀, θ*, f)``: f(θ) = |a - θ₀|² + 100 |θ₁ - θ₀²|², minimal at θ* = (a, a²), a = 1 (complex θ: 1 + i)."""
    a = 1 + 1j if jnp.issubdtype(dtype, jnp.complexfloating) else 1.0
    target = jnp.array([a, a * a], dtype)
    return jnp.zeros(2, dtype), target, lambda p: jnp.abs(a - p[0]) ** 2 + 100 * jnp.abs(p[1] - p[0] ** 2) ** 2


def descent_direction(f, p):
    """The gradient to give an optimizer: ``conj(jax.grad(f))``, for complex θ the direction of steepest ascent."""
    return jax.tree.map(jnp.conj, jax.grad(f)(p))


@functools.cache
def minimized(target_name, dtype_name):
    """``(θ₀, θ*, {id: θ after 20000 steps})`` for every optimizer, in one compilation."""
    p0, target, f = {"parabola": parabola, "rosenbrock": rosenbrock}[target_name](jnp.dtype(dtype_name))

    def run(opt):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(descent_direction(f, p), s, p)
            return (optim.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p0, opt.init(p0)), None, length=20000)[0][0]

    return p0, target, jax.jit(lambda: {i: run(build(i)) for i in IDS})()


@pytest.mark.parametrize("opt_id", IDS)
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
@pytest.mark.parametrize("target", ["parabola", "rosenbrock"])
def test_converges(target, dtype, opt_id):
    p0, target_params, results = minimized(target, dtype)
    found = results[opt_id]
    assert found.dtype == jnp.dtype(dtype)
    assert float(jnp.max(jnp.abs(p0 - target_params))) >= 1  # the start is far from the minimum
    error = float(jnp.max(jnp.abs(found - target_params)))
    assert error <= 3e-2, f"{opt_id} ended at {found}, {error:.2e} from {target_params}"


# ---------------------------------------------------------------- the protocol


def small_problem(dtype=jnp.float32):
    params = (jnp.array([[1.0, -2.0], [0.5, 3.0]], dtype), jnp.array([0.1, -0.2], dtype))
    grads = (jnp.array([[0.3, -0.1], [2.0, 0.7]], dtype), jnp.array([-1.0, 0.25], dtype))
    return params, grads


@pytest.mark.parametrize("opt_id", IDS)
def test_second_jitted_call_does_not_recompile(opt_id):
    opt = build(opt_id)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)  # runs once per trace, not per call
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    params, grads = small_problem()
    state = opt.init(params)
    for scale in (1.0, -0.5, 2.0):  # other values, same shapes and dtypes
        params, state = step(params, state, jax.tree.map(lambda g: scale * g, grads))
    assert len(traces) == 1 and step._cache_size() == 1


@pytest.mark.parametrize("opt_id", IDS)
def test_update_takes_and_ignores_extra_keyword_arguments(opt_id):
    opt = build(opt_id)
    params, grads = small_problem()
    state = opt.init(params)
    plain, extra = jax.jit(lambda g, s, p: (opt.update(g, s, p),
                                           opt.update(g, s, p, value=jnp.float32(3.0), unexpected_argument=1)))(
        grads, state, params)
    assert_trees_equal(extra, plain)


@pytest.mark.parametrize("opt_id", IDS)
def test_inject_hyperparams(opt_id, x64):
    """``optax.inject_hyperparams(factory)(**kwargs)``: the hyperparameters become arrays in the state, the
    steps stay ours. In float64 those arrays hold the same doubles as the Python numbers, so the steps are
    equal bit for bit (in float32, 1 - β₂ would be rounded from float32(β₂), a relative 1e-5 off)."""
    _, factory, kwargs = BY_ID[opt_id]
    opt, injected = factory(**kwargs), optax.inject_hyperparams(factory)(**kwargs)
    params, grads = small_problem(jnp.float64)
    state, injected_state = opt.init(params), injected.init(params)
    assert set(injected_state.hyperparams) >= {"learning_rate"}
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
        injected_updates, injected_state = injected.update(grads, injected_state, params)
        assert_trees_equal(injected_updates, updates)
        if isinstance(state, optim.ScheduleState):  # inject_hyperparams evaluates the schedule itself
            assert_trees_equal(injected_state.count, state.count)
            state_without_schedule = state.inner
        else:
            state_without_schedule = state
        assert_trees_equal(injected_state.inner_state, state_without_schedule)
        params = optim.apply_updates(params, updates)


# ---------------------------------------------------------------- dtypes

DTYPES = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_are_preserved_and_the_state_is_stable(dtype):
    """Updates in the gradient's dtype; the state's shapes and dtypes unchanged by an update, so that
    ``lax.cond(pred, update, keep)`` type-checks; the params' dtype unchanged by ``apply_updates``."""
    with jax.enable_x64(dtype in ("float64", "complex128")):
        dtype = jnp.dtype(dtype)
        p0, _, f = parabola(dtype)

        def two_steps(opt):
            def step(carry, pred):
                p, s = carry
                g = descent_direction(f, p)
                u, s = jax.lax.cond(pred, lambda: opt.update(g, s, p), lambda: (g, s))
                return (optim.apply_updates(p, u), s), (g, u)

            state0 = opt.init(p0)
            (p, state), (g, u) = jax.lax.scan(step, (p0, state0), jnp.array([True, True]))
            return state0, p, state, g, u

        results = jax.jit(lambda: {i: two_steps(build(i)) for i in IDS})()
        for opt_id, (state0, p, state, g, u) in results.items():
            assert g.dtype == u.dtype == p.dtype == dtype, opt_id
            assert jax.tree.structure(state) == jax.tree.structure(state0), opt_id
            assert [(x.shape, x.dtype) for x in jax.tree.leaves(state)] == \
                [(x.shape, x.dtype) for x in jax.tree.leaves(state0)], opt_id
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((p, state, u))), opt_id
            assert float(jnp.max(jnp.abs(u))) > 0, opt_id  # the two steps moved θ


@pytest.mark.parametrize("opt_id", IDS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_multisteps_accumulates_then_applies_one_step(opt_id, dtype):
    """``optax.MultiSteps(opt, 4)``: three zero updates, then ``opt``'s update for the mean gradient
    (the same gradient four times, so its mean is exact)."""
    dtype = jnp.dtype(dtype)
    opt = build(opt_id)
    params, grads = small_problem(dtype)
    multi = optax.MultiSteps(opt, every_k_schedule=4)

    @jax.jit  # one program for both, compiled as fit would run them
    def run():
        state, updates = multi.init(params), []
        for _ in range(4):
            u, state = multi.update(grads, state, params)
            updates.append(u)
        return updates, opt.update(grads, opt.init(params), params)[0]

    updates, expected = run()
    for u in updates[:3]:
        assert_trees_equal(u, jax.tree.map(jnp.zeros_like, grads))
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates[3]))
    assert_trees_equal(updates[3], expected)


STATE_DTYPES = ["bfloat16", "float32", "complex64", None]


@pytest.mark.parametrize("state_dtype", STATE_DTYPES, ids=str)
@pytest.mark.parametrize("params_dtype", STATE_DTYPES, ids=str)
@pytest.mark.parametrize("make, field", [
    (lambda d: optim.sgd(0.1, momentum=0.9, accumulator_dtype=d), "trace"),
    (lambda d: optim.adam(0.1, mu_dtype=d), "mu"),
    (lambda d: optim.adam(0.1, nesterov=True, mu_dtype=d), "mu"),
    (lambda d: optim.adamw(0.1, mu_dtype=d), "mu"),
], ids=["momentum", "adam", "nadam", "adamw"])
def test_explicit_state_dtype(make, field, params_dtype, state_dtype):
    """``accumulator_dtype`` / ``mu_dtype``: honoured when given, else the parameters' dtype (as optax).
    Adam's v is in the parameters' dtype, or float32 when that is narrower."""
    opt = make(state_dtype)
    params = jnp.zeros(2, params_dtype)  # None: the default float dtype
    state = opt.init(params)
    expected = params.dtype if state_dtype is None else jnp.dtype(state_dtype)
    assert getattr(state, field).dtype == expected
    if field == "mu":
        assert state.nu.dtype == jnp.promote_types(params.dtype, jnp.float32)
    grads = jnp.ones(2, params.dtype)
    if jnp.iscomplexobj(params) and not jnp.issubdtype(expected, jnp.complexfloating):
        name = "accumulator_dtype" if field == "trace" else "mu_dtype"
        with pytest.raises(TypeError, match=f"{name} is {expected}, a real dtype, but the parameters"):
            opt.update(grads, state, params)  # m or τ would lose its imaginary part
        return
    new_state = jax.eval_shape(lambda: opt.update(grads, state, params)[1])
    assert [x.dtype for x in jax.tree.leaves(new_state)] == [x.dtype for x in jax.tree.leaves(state)]


# ---------------------------------------------------------------- in jaxmlp.fit and fit_ensemble


def fit_problem(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 3)), dtype)
    y = jnp.asarray(rng.standard_normal((16, 1)), dtype)
    return jaxmlp.init_mlp(jax.random.key(0), (3, 5, 1), init="xavier", dtype=dtype), x, y


FIT = dict(loss="mse", activation="tanh", epochs=3, batch_size=4, key=jax.random.key(7))


def test_fit_trains_with_adamw_and_a_schedule_as_with_optax(x64):
    params, x, y = fit_problem(jnp.float64)
    schedule = optax.cosine_decay_schedule(1e-2, 12)  # 3 epochs of 4 steps
    trained, history = jaxmlp.fit(params, x, y, optimizer=optim.adamw(schedule, weight_decay=0.1, nesterov=True), **FIT)
    expected, _ = jaxmlp.fit(params, x, y, optimizer=optax.adamw(schedule, weight_decay=0.1, nesterov=True), **FIT)
    assert history["loss"].shape == (3,)
    assert max_rel(trained, expected) <= 1e-12
    assert max_rel(trained, params) > 1e-3  # it trained


def test_fit_ensemble_with_adamw_per_model_hyperparameters(x64):
    """Traced hyperparameters: model i trains as ``fit`` does with ``adamw(lr_i, weight_decay=wd_i)``."""
    params, x, y = fit_problem(jnp.float64)
    stack = jax.tree.map(lambda p: jnp.stack([p, p]), params)
    hyper = {"learning_rate": jnp.array([1e-2, 3e-2]), "weight_decay": jnp.array([0.0, 0.5])}
    trained, _ = jaxmlp.fit_ensemble(stack, x, y, optimizer=lambda h: optim.adamw(**h), hyperparams=hyper, **FIT)
    alone, _ = jaxmlp.fit(params, x, y, optimizer=optim.adamw(3e-2, weight_decay=0.5), **FIT)  # model 1
    assert max_rel(jax.tree.map(lambda p: p[1], trained), alone) <= 1e-12
    assert max_rel(jax.tree.map(lambda p: p[0], trained), alone) > 1e-3  # the models differ


def test_cli_adamw_flags():
    """``jaxmlp train --optimizer adamw --lr --weight-decay``: optax's AdamW with those, bit for bit."""
    from jaxmlp import cli

    args = cli.parser().parse_args(["train", "--optimizer", "adamw", "--lr", "0.05", "--weight-decay", "0.01"])
    ours, reference = cli._optimizer(args), optax.adamw(0.05, weight_decay=0.01)
    params, grads = small_problem()
    # Compiled, as fit runs it (eagerly, float32 β^t is computed by another algorithm, optax's too).
    (updates, _), (expected, _) = jax.jit(ours.update)(grads, ours.init(params), params), \
        jax.jit(reference.update)(grads, reference.init(params), params)
    assert_trees_equal(updates, expected)
    assert cli.parser().parse_args(["train"]).weight_decay == 1e-4  # optax's default
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(["train", "--weight-decay", "-0.1"])
    assert exit_.value.code == 2
