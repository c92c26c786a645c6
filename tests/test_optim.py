"""jaxmlp.optim: against optax step by step, bit for bit; optax's conventions; the protocol and the state;
optimizers compared by value; sweeps of traced hyperparameters; low precision; input checks; and an
optim module that knows only pytrees.

Trajectories are compared *bit for bit*, as the module docstring promises: a relative tolerance of even
2e-5 let through ε inside the square root (1.2e-7) and one SGD step dropped out of 1000 (1.2e-5).

The conventions every jaxmlp optimizer follows, as optax's own do, were written for jaxmlp from what optax's
alias tests check (not a copy of them): convergence on a parabola and on Rosenbrock's function in float32 and
complex64; extra keyword arguments to ``update``; ``optax.inject_hyperparams``; updates in the gradient's
dtype and a state whose dtypes do not change, float16 to complex128; ``optax.MultiSteps``; explicit state
dtypes. (One compilation for repeated jitted steps is ``test_perf.py``'s; optim inside fit and fit_ensemble
``test_train.py``'s and ``test_ensemble.py``'s; optim_check's report ``test_optim_check.py``'s.)
"""

import ast
import functools
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _optimizers import BY_ID, IDS, WEIGHTS_ONLY, build, complex_problem, make_grads, make_params, small_problem
from _trees import assert_trees_equal, max_rel

from jaxmlp import optim, optim_check
from jaxmlp.types import Layer

STEPS = 1000



def schedules():
    """optax schedules, built when called (under the test's float64 setting)."""
    return {
        "cosine": optax.cosine_decay_schedule(0.1, STEPS, alpha=0.1),
        "exponential": optax.exponential_decay(3e-2, transition_steps=100, decay_rate=0.5),
        "warmup-cosine": optax.warmup_cosine_decay_schedule(0.0, 1e-2, warmup_steps=100, decay_steps=STEPS),
    }


def cases():
    """``[(id, jaxmlp optimizer, optax optimizer)]``: each pair must give the same trajectory, bit for bit."""
    s = schedules()
    return [
        ("adam-default", optim.adam(), optax.adam(1e-3)),
        ("adam-custom", optim.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6), optax.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6)),
        ("sgd", optim.sgd(0.1), optax.sgd(0.1)),
        ("gd", optim.gd(0.05), optax.sgd(0.05)),
        ("gd-nesterov", optim.gd(0.05, momentum=0.8, nesterov=True), optax.sgd(0.05, momentum=0.8, nesterov=True)),
        ("momentum", optim.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
        ("momentum-custom", optim.sgd(0.01, momentum=0.5), optax.sgd(0.01, momentum=0.5)),
        ("nesterov", optim.sgd(0.1, momentum=0.9, nesterov=True), optax.sgd(0.1, momentum=0.9, nesterov=True)),
        ("nesterov-custom", optim.sgd(0.02, momentum=0.7, nesterov=True),
         optax.sgd(0.02, momentum=0.7, nesterov=True)),
        ("momentum-bf16-trace", optim.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16),
         optax.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16)),
        # NAdam (O8)
        ("nadam", optim.adam(1e-2, nesterov=True), optax.nadam(1e-2)),
        ("nadam-custom", optim.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6, nesterov=True),
         optax.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6, nesterov=True)),
        # AdamW (O9)
        ("adamw-default", optim.adamw(1e-3), optax.adamw(1e-3)),
        ("adamw-custom", optim.adamw(3e-2, 0.8, 0.99, 1e-6, 0.1, WEIGHTS_ONLY),
         optax.adamw(3e-2, 0.8, 0.99, 1e-6, weight_decay=0.1, mask=WEIGHTS_ONLY)),
        ("nadamw", optim.adamw(1e-2, weight_decay=1e-2, nesterov=True), optax.nadamw(1e-2, weight_decay=1e-2)),
        ("adamw-decay-schedule", optim.adamw(1e-2, weight_decay=s["exponential"]),
         optax.adamw(1e-2, weight_decay=s["exponential"])),
        # learning-rate schedules (O10)
        ("gd-cosine", optim.gd(s["cosine"]), optax.sgd(s["cosine"])),
        ("momentum-exponential", optim.sgd(s["exponential"], momentum=0.9), optax.sgd(s["exponential"], momentum=0.9)),
        ("nesterov-cosine", optim.sgd(s["cosine"], momentum=0.5, nesterov=True),
         optax.sgd(s["cosine"], momentum=0.5, nesterov=True)),
        ("adam-warmup-cosine", optim.adam(s["warmup-cosine"]), optax.adam(s["warmup-cosine"])),
        ("nadam-exponential", optim.adam(s["exponential"], nesterov=True), optax.nadam(s["exponential"])),
        ("adamw-cosine-masked", optim.adamw(s["cosine"], weight_decay=0.05, mask=lambda params: WEIGHTS_ONLY),
         optax.adamw(s["cosine"], weight_decay=0.05, mask=lambda params: WEIGHTS_ONLY)),
    ]


CASE_IDS = [c[0] for c in cases()]
SCHEDULED = [i for i in CASE_IDS if any(k in i for k in ("cosine", "exponential"))]
ADAMS = [i for i in CASE_IDS if "adam" in i]
TRACES = [i for i in CASE_IDS if any(k in i for k in ("momentum", "nesterov"))]


def run_all(params, grads, *optimizers):
    """``[(params_trajectory, state_trajectory)]`` for each ``(optimizer, apply_updates)``, in one compilation."""

    return jax.jit(lambda: [optim_check._scan(*o)(params, grads) for o in optimizers])()


# ---------------------------------------------------------------- equivalence with optax


@functools.cache
def optax_comparison(dtype):
    """Every case of :func:`cases` run by jaxmlp and by optax on the same 1000 gradients, in one compilation."""
    params = make_params(dtype)
    grads = make_grads(params, STEPS)
    pairs = [((ours, optim.apply_updates), (reference, optax.apply_updates)) for _, ours, reference in cases()]
    runs = run_all(params, grads, *[o for pair in pairs for o in pair])
    return {case_id: (runs[2 * i], runs[2 * i + 1]) for i, case_id in enumerate(CASE_IDS)}


def adam_state(optax_state):
    """optax's ``ScaleByAdamState`` inside its chain's tuple of states."""
    return next(s for s in optax_state if isinstance(s, optax.ScaleByAdamState))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_trajectory_equals_optax_bit_for_bit(case_id, float_dtype):
    (p_ours, _), (p_ref, _) = optax_comparison(float_dtype)[case_id]
    assert all(x.dtype == float_dtype and x.shape[0] == STEPS for x in jax.tree.leaves(p_ours))
    assert_trees_equal(p_ours, p_ref)  # every parameter after every one of the 1000 steps


@pytest.mark.parametrize("case_id", ADAMS)
def test_adam_state_equals_optax(case_id, float_dtype):
    (_, s_ours), (_, s_ref) = optax_comparison(float_dtype)[case_id]
    s_ref = adam_state(s_ref)
    np.testing.assert_array_equal(s_ours.count, s_ref.count)
    assert (int(s_ours.count[0]), int(s_ours.count[-1])) == (1, STEPS)
    assert s_ours.count.dtype == jnp.int32
    assert_trees_equal(s_ours.mu, s_ref.mu)
    assert_trees_equal(s_ours.nu, s_ref.nu)


@pytest.mark.parametrize("case_id", TRACES)
def test_momentum_trace_equals_optax(case_id, float_dtype):
    (_, s_ours), (_, (s_ref, _)) = optax_comparison(float_dtype)[case_id]
    trace = s_ours.inner.trace if isinstance(s_ours, optim.ScheduleState) else s_ours.trace
    assert_trees_equal(trace, s_ref.trace)


@pytest.mark.parametrize("case_id", [i for i in SCHEDULED if "adam" not in i])
def test_schedule_count_is_kept_in_the_state(case_id, float_dtype):
    (_, s_ours), (_, (_, s_ref)) = optax_comparison(float_dtype)[case_id]
    assert isinstance(s_ours, optim.ScheduleState) and s_ours.count.dtype == jnp.int32
    np.testing.assert_array_equal(s_ours.count, np.arange(1, STEPS + 1))  # c after each step
    np.testing.assert_array_equal(s_ours.count, s_ref.count)


def test_a_schedule_is_not_its_initial_value(float_dtype):
    """Guards the comparison itself: a schedule read once (at c = 0) gives another trajectory."""
    runs = optax_comparison(float_dtype)
    (p_scheduled, _), _ = runs["gd-cosine"]
    params = make_params(float_dtype)
    (p_constant, _), = run_all(params, make_grads(params, STEPS), (optim.gd(0.1), optim.apply_updates))
    assert max_rel(p_scheduled, p_constant) > 1e-3


COMPLEX_CASES = ["adam-custom", "nadam", "adamw-custom", "adam-warmup-cosine", "nesterov-custom"]


@pytest.mark.parametrize("complex_dtype", ["complex64", "complex128"])
def test_complex_trajectory_equals_optax_bit_for_bit(complex_dtype):
    """|g|² = g ḡ in (O4): a real second moment, m keeps its phase; optax's equal to the last bit."""
    with jax.enable_x64(complex_dtype == "complex128"):
        params, grads = complex_problem(jnp.dtype(complex_dtype), STEPS)
        chosen = [c for c in cases() if c[0] in COMPLEX_CASES]
        pairs = [((ours, optim.apply_updates), (ref, optax.apply_updates)) for _, ours, ref in chosen]
        runs = run_all(params, grads, *[o for pair in pairs for o in pair])
        for i, (case_id, _, _) in enumerate(chosen):
            (p_ours, s_ours), (p_ref, _) = runs[2 * i], runs[2 * i + 1]
            assert all(x.dtype == jnp.dtype(complex_dtype) for x in jax.tree.leaves(p_ours)), case_id
            assert_trees_equal(p_ours, p_ref)
            if isinstance(s_ours, optim.AdamState):
                assert all(float(jnp.max(jnp.abs(v.imag))) == 0 for v in jax.tree.leaves(s_ours.nu)), case_id
                assert all(float(jnp.min(v.real)) >= 0 for v in jax.tree.leaves(s_ours.nu)), case_id


@pytest.mark.parametrize("ours, reference", [
    (lambda: optim.adam(1e-2), lambda: optax.adam(1e-2)),
    (lambda: optim.adamw(1e-2, weight_decay=0.1), lambda: optax.adamw(1e-2, weight_decay=0.1)),
    (lambda: optim.sgd(0.1, momentum=0.9, nesterov=True), lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
], ids=["adam", "adamw", "nesterov"])
def test_works_inside_optax_chain(ours, reference):
    params = make_params(jnp.float32)
    grads = jax.tree.map(lambda g: 100 * g, make_grads(params, 50))  # large, so the clip acts
    (p_chained, _), (p_expected, _), (p_unclipped, _) = run_all(
        params, grads,
        (optax.chain(optax.clip_by_global_norm(1.0), ours()), optax.apply_updates),
        (optax.chain(optax.clip_by_global_norm(1.0), reference()), optax.apply_updates),
        (ours(), optim.apply_updates),
    )
    assert_trees_equal(p_chained, p_expected)
    assert max_rel(p_chained, p_unclipped) > 1e-3  # the clip changed something


# ---------------------------------------------------------------- protocol and state


def test_state_layout():
    params = make_params(jnp.float32)
    grads = jax.tree.map(jnp.ones_like, params)
    assert isinstance(optim.sgd(0.1).init(params), optim.EmptyState)
    assert isinstance(optim.sgd(0.1, momentum=None).init(params), optim.EmptyState)  # optax's default
    trace = optim.sgd(0.1, momentum=0.9).init(params).trace
    assert jax.tree.structure(trace) == jax.tree.structure(params)
    scheduled = optim.sgd(lambda count: 0.1 / (1 + count), momentum=0.9).init(params)
    assert isinstance(scheduled, optim.ScheduleState) and isinstance(scheduled.inner, optim.TraceState)
    assert scheduled.count.dtype == jnp.int32 and int(scheduled.count) == 0

    adam = optim.adam()
    state = adam.init(params)
    assert isinstance(state, optim.AdamState) and state._fields == ("count", "mu", "nu")
    assert state.count.dtype == jnp.int32 and int(state.count) == 0
    assert jax.tree.structure(state.mu) == jax.tree.structure(params) == jax.tree.structure(state.nu)
    updates, state = adam.update(grads, state, params)
    updates, state = adam.update(grads, state)  # params is optional
    assert int(state.count) == 2
    assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize("make", [optim.adam, lambda: optim.adam(nesterov=True), lambda: optim.adamw(1e-3),
                                  lambda: optim.sgd(optax.cosine_decay_schedule(0.1, 10, alpha=0.5))],
                         ids=["adam", "nadam", "adamw", "sgd-schedule"])
def test_count_saturates_instead_of_overflowing(make):
    params = jnp.ones(2)
    opt = make()
    top = jnp.array(jnp.iinfo(jnp.int32).max, jnp.int32)
    state = opt.init(params)._replace(count=top)
    updates, state = opt.update(jnp.ones(2), state, params)
    assert int(state.count) == jnp.iinfo(jnp.int32).max
    assert np.all(np.isfinite(updates)) and np.all(np.asarray(updates) != 0)


def test_adamw_decays_only_where_the_mask_says():
    """Zero gradients: Adam's direction is 0, so u = -η (λ θ) (O9) where the mask is True, and 0 elsewhere."""
    params = make_params(jnp.float32)
    grads = jax.tree.map(jnp.zeros_like, params)
    everywhere = (Layer(W=True, b=True), Layer(W=True, b=True))
    first_layer = (Layer(W=True, b=True), Layer(W=False, b=False))
    for mask, decayed in [(None, everywhere), (WEIGHTS_ONLY, WEIGHTS_ONLY), (lambda p: WEIGHTS_ONLY, WEIGHTS_ONLY),
                          ((True, False), first_layer)]:  # a pytree, a callable, a prefix of the params
        opt = optim.adamw(0.5, weight_decay=0.1, mask=mask)
        updates, _ = opt.update(grads, opt.init(params), params)
        expected = jax.tree.map(lambda p, k: -0.5 * (0.1 * p) if k else jnp.zeros_like(p), params, decayed)
        assert_trees_equal(updates, expected)
    with pytest.raises(ValueError, match="needs params"):
        optim.adamw(0.5).update(grads, optim.adamw(0.5).init(params))


def test_apply_updates_keeps_param_dtype():
    params = (jnp.ones(3, jnp.bfloat16), jnp.ones(2, jnp.float32))
    updates = (jnp.full(3, 0.5, jnp.float32), jnp.full(2, 0.5, jnp.float32))
    new = optim.apply_updates(params, updates)
    assert [x.dtype for x in new] == [jnp.bfloat16, jnp.float32]
    np.testing.assert_array_equal(np.asarray(new[1]), 1.5)


def test_apply_updates_rejects_a_shape_mismatch_instead_of_broadcasting():
    with pytest.raises(ValueError, match=r"shape \(3, 3\) but its parameter has shape \(3,\)"):
        optim.apply_updates((jnp.ones(3),), (jnp.ones((3, 3)),))


@pytest.mark.parametrize("name, make", [("adam", lambda: optim.adam(0.1)), ("momentum", lambda: optim.sgd(0.1, 0.9)),
                                         ("sgd", lambda: optim.sgd(0.1))])
def test_update_rejects_gradients_shaped_unlike_the_state_under_jit(name, make):
    """A (3, 1) gradient for a (3,) parameter would broadcast Adam's moments or the trace to (3, 3) and
    corrupt every later step; the error names the leaf and both shapes, at trace time."""
    opt, params = make(), {"w": jnp.ones(3)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3, 1\), but .*\['w'\] has shape \(3,\)"):
        update({"w": jnp.ones((3, 1))}, state, params)
    if name != "sgd":  # without params, the state alone names the shape
        with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3, 1\)"):
            update({"w": jnp.ones((3, 1))}, state)


def test_optimizers_compare_by_value():
    """Two optimizers built from equal hyperparameters are two objects, equal and of one hash, so that jit's
    cache (fit's compiled program) serves both; other values, or another type of the same value, differ."""
    assert optim.adam(1e-3) is not optim.adam(1e-3)
    assert optim.adam(1e-3) == optim.adam(1e-3) and hash(optim.adam(1e-3)) == hash(optim.adam(1e-3))
    assert optim.adam(1e-3) != optim.adam(2e-3) and optim.adam(1e-3) != optim.adam(1e-3, nesterov=True)
    assert optim.sgd(0.1, momentum=0.9) == optim.sgd(0.1, momentum=0.9)
    mask = lambda: (Layer(W=True, b=False), Layer(W=True, b=False))  # equal tuples, two objects
    assert optim.adamw(1e-3, mask=mask()) == optim.adamw(1e-3, mask=mask())
    # jax types np.float64(0.1) strongly and 0.1 weakly: not interchangeable in a compiled program.
    assert optim.sgd(0.1) != optim.sgd(np.float64(0.1))
    # A schedule (any callable) compares by identity: equal values of a function cannot be told apart.
    schedule = optax.cosine_decay_schedule(0.1, 10)
    assert optim.sgd(schedule) == optim.sgd(schedule)
    assert optim.sgd(schedule) != optim.sgd(optax.cosine_decay_schedule(0.1, 10))


# ---------------------------------------------------------------- sweeps: traced hyperparameters under vmap

SWEEPS = [
    ("adam-lr", lambda h: optim.adam(h), [1e-4, 1e-2, 1e-1]),
    ("adam-b1", lambda h: optim.adam(1e-2, b1=h), [0.0, 0.5, 0.99]),
    ("sgd-lr", lambda h: optim.sgd(h), [1e-3, 1e-2, 1e-1]),
    ("momentum", lambda h: optim.sgd(1e-2, momentum=h, nesterov=True), [0.1, 0.5, 0.9]),
]


@pytest.mark.parametrize("make, values", [s[1:] for s in SWEEPS], ids=[s[0] for s in SWEEPS])
def test_hyperparameter_sweep_under_vmap(make, values):
    params = make_params(jnp.float32)
    grads = make_grads(params, 20)
    traces = []

    def final_params(h):
        opt = make(h)

        def step(carry, g):
            p, s = carry
            updates, s = opt.update(g, s, p)
            return (optim.apply_updates(p, updates), s), None

        return jax.lax.scan(step, (params, opt.init(params)), grads)[0][0]

    def traced_once(h):
        traces.append(1)
        return final_params(h)

    hs = jnp.array(values, jnp.float32)
    swept = jax.jit(jax.vmap(traced_once))(hs)
    assert len(traces) == 1  # one trace, one compilation, for the whole sweep
    # Separate runs with Python-number hyperparameters (compiled together, to save time).
    python_hs = [float(h) for h in np.asarray(hs)]
    alone = jax.jit(lambda: [final_params(h) for h in python_hs])()
    for i in range(len(values)):
        assert max_rel(jax.tree.map(lambda x: x[i], swept), alone[i]) <= 2e-6


# ---------------------------------------------------------------- low precision


LOW = pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])


@LOW
@pytest.mark.parametrize("nesterov", [False, True], ids=["adam", "nadam"])
def test_adam_low_precision_is_finite(dtype, nesterov):
    """Zero and tiny gradients: eps = 1e-8 is 0 in float16 and 1e-4² underflows, yet no NaN nor inf."""
    lr, b1 = 1e-3, 0.9
    adam = optim.adam(lr, b1, nesterov=nesterov)
    step = jax.jit(adam.update)
    for magnitude in (0.0, 1e-6, 1e-4, 1.0):
        params = jax.tree.map(lambda p: p.astype(dtype), make_params(jnp.float32))
        state = adam.init(params)
        assert all(m.dtype == dtype for m in jax.tree.leaves(state.mu))  # mu_dtype=None: the params' dtype
        assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.nu))  # v: at least float32
        for t in range(5):
            grads = jax.tree.map(lambda p: jnp.full_like(p, magnitude * (-1) ** t), params)
            updates, state = step(grads, state, params)
            params = optim.apply_updates(params, updates)
            assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((updates, params, state)))
            # |g| constant, so v̂ = g² and |u| <= η |m̂| / |g|: <= η for Adam, <= η (1 + β₁) for NAdam
            # (O8), up to rounding; and 0 for a zero gradient.
            top = max(float(jnp.max(jnp.abs(u.astype(jnp.float32)))) for u in jax.tree.leaves(updates))
            bound = lr * (1 + b1 if nesterov else 1) * 1.01
            assert top <= bound and (top > 0) == (magnitude > 0), (magnitude, t, top)


@LOW
@pytest.mark.parametrize("ours, reference", [
    (lambda: optim.adam(1e-2, mu_dtype=jnp.float32), lambda: optax.adam(1e-2)),
    (lambda: optim.adam(1e-2, nesterov=True, mu_dtype=jnp.float32), lambda: optax.nadam(1e-2)),
    (lambda: optim.adamw(1e-2, weight_decay=0.1, mu_dtype=jnp.float32), lambda: optax.adamw(1e-2, weight_decay=0.1)),
], ids=["adam", "nadam", "adamw"])
def test_low_precision_is_float32_optax_rounded(dtype, ours, reference):
    """With float32 m, low-precision Adam is float32 optax's Adam, its update rounded once to the params' dtype."""
    params = make_params(jnp.float32)
    low_params = jax.tree.map(lambda p: p.astype(dtype), params)
    params = jax.tree.map(lambda p: p.astype(jnp.float32), low_params)  # the same values in float32
    grads = jax.tree.map(lambda g: g.astype(dtype), make_grads(params, 10))  # exactly representable
    low, high = ours(), reference()
    as32 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree)

    @jax.jit
    def both(g, s_low, s_high):
        u_low, s_low = low.update(g, s_low, low_params)
        u_high, s_high = high.update(as32(g), s_high, params)
        return u_low, jax.tree.map(lambda u: u.astype(dtype), u_high), s_low, s_high

    s_low, s_high = low.init(low_params), high.init(params)
    for t in range(10):
        u_low, u_high, s_low, s_high = both(jax.tree.map(lambda x: x[t], grads), s_low, s_high)
        assert all(a.dtype == dtype for a in jax.tree.leaves(u_low))
        assert_trees_equal(u_low, u_high)


@pytest.mark.skipif(optax.__version__ != "0.2.8", reason="documents optax 0.2.8's float16 Adam")
def test_float16_adam_is_finite_where_optax_0_2_8_is_not():
    """The module docstring's claim: optax 0.2.8 gives NaN (g = 0) and -inf (g = 1e-4) in float16; jaxmlp does not."""
    params = jnp.ones(3, jnp.float16)
    for g, optax_bad in [(0.0, np.isnan), (1e-4, np.isneginf)]:
        grads = jnp.full(3, g, jnp.float16)
        theirs, _ = optax.adam(1e-3).update(grads, optax.adam(1e-3).init(params))
        ours, _ = optim.adam(1e-3).update(grads, optim.adam(1e-3).init(params))
        assert np.all(optax_bad(np.asarray(theirs)))
        assert np.all(np.isfinite(np.asarray(ours))) and ours.dtype == jnp.float16
        grads32 = grads.astype(jnp.float32)
        float32_adam, _ = optax.adam(1e-3).update(grads32, optax.adam(1e-3).init(grads32))
        np.testing.assert_array_equal(ours, float32_adam.astype(jnp.float16))  # float32 Adam, rounded once


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize("kwargs, message", [
    ({"b1": 1.0}, "b1=1.0"),
    ({"b1": -0.1}, "b1=-0.1"),
    ({"b1": float("nan")}, "b1=nan"),
    ({"b2": 1.0}, "b2=1.0"),
    ({"b2": 1.5}, "b2=1.5"),
    ({"eps": -1e-8}, "eps=-1e-08"),
], ids=["b1=1", "b1<0", "b1=nan", "b2=1", "b2>1", "eps<0"])
def test_adam_rejects_bad_hyperparameters(kwargs, message):
    for make in (optim.adam, functools.partial(optim.adamw, 1e-3)):
        with pytest.raises(ValueError, match=message):
            make(**kwargs)


@pytest.mark.parametrize("make", [optim.gd, optim.sgd, optim.adam, optim.adamw], ids=["gd", "sgd", "adam", "adamw"])
@pytest.mark.parametrize("learning_rate", [-1e-3, -0.1, float("nan")], ids=["-1e-3", "-0.1", "nan"])
def test_negative_learning_rate_is_rejected(make, learning_rate):
    with pytest.raises(ValueError, match=f"learning_rate must be >= 0, got learning_rate={learning_rate!r}"):
        make(learning_rate)


def test_adamw_rejects_a_negative_weight_decay_and_a_bad_dtype():
    with pytest.raises(ValueError, match="weight_decay=-0.1"):
        optim.adamw(1e-3, weight_decay=-0.1)
    with pytest.raises(TypeError, match="mu_dtype must be a dtype or None, got mu_dtype='float33'"):
        optim.adam(mu_dtype="float33")
    with pytest.raises(TypeError, match="accumulator_dtype"):
        optim.sgd(0.1, momentum=0.9, accumulator_dtype="no-such-dtype")


def test_array_hyperparameters_are_not_checked():
    optim.adam(jnp.array(1e-3), b1=jnp.array(0.9), b2=jnp.array(0.999), eps=jnp.array(1e-8))
    optim.adam(b1=0.0, eps=0.0)  # the closed ends are allowed
    optim.adamw(jnp.array(-1e-3), weight_decay=jnp.array(-1.0))  # possibly traced: not checked
    optim.sgd(0.0), optim.adamw(0.0, weight_decay=0.0)


# ---------------------------------------------------------------- optim knows only pytrees

OPTIM_PY = pathlib.Path(optim.__file__)


def test_optim_source_does_not_import_optax():
    imported = set()
    for node in ast.walk(ast.parse(OPTIM_PY.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "functools", "numbers", "typing", "jax", "numpy"}, imported


@pytest.mark.slow
def test_importing_optim_alone_does_not_load_optax():
    """Load optim.py by path, without the package __init__, in a fresh interpreter."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('optim_alone', {str(OPTIM_PY)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert 'optax' not in sys.modules, 'optax was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- optax's conventions: convergence


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


# ---------------------------------------------------------------- optax's conventions: the protocol


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


# ---------------------------------------------------------------- optax's conventions: dtypes

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


# ---------------------------------------------------------------- jaxmlp train's optimizer flags
