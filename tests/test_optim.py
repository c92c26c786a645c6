"""jaxmlp.optim against optax, step by step, plus the protocol, low precision, sweeps and input checks."""

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

from _trees import max_rel
from jaxmlp import optim, optim_check
from jaxmlp.types import Layer

STEPS = 1000
# Relative tolerance of a trajectory: max |θ_ours - θ_optax| / max |θ_optax|, per leaf, over all steps.
TOL = {jnp.float64: 1e-10, jnp.float32: 2e-5}

# (id, jaxmlp optimizer, optax optimizer): each pair must give the same trajectory.
CASES = [
    ("adam-default", lambda: optim.adam(), lambda: optax.adam(1e-3)),
    ("adam-custom", lambda: optim.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6),
     lambda: optax.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6)),
    ("sgd", lambda: optim.sgd(0.1), lambda: optax.sgd(0.1)),
    ("gd", lambda: optim.gd(0.05), lambda: optax.sgd(0.05)),
    ("gd-nesterov", lambda: optim.gd(0.05, momentum=0.8, nesterov=True),
     lambda: optax.sgd(0.05, momentum=0.8, nesterov=True)),
    ("momentum", lambda: optim.sgd(0.1, momentum=0.9), lambda: optax.sgd(0.1, momentum=0.9)),
    ("momentum-custom", lambda: optim.sgd(0.01, momentum=0.5), lambda: optax.sgd(0.01, momentum=0.5)),
    ("nesterov", lambda: optim.sgd(0.1, momentum=0.9, nesterov=True),
     lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
    ("nesterov-custom", lambda: optim.sgd(0.02, momentum=0.7, nesterov=True),
     lambda: optax.sgd(0.02, momentum=0.7, nesterov=True)),
]
CASE_IDS = [c[0] for c in CASES]


def make_params(dtype, sizes=(3, 5, 2), seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        Layer(W=jnp.asarray(rng.standard_normal((n_out, n_in)), dtype),
              b=jnp.asarray(rng.standard_normal(n_out), dtype))
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    )


def make_grads(params, steps, seed=1):
    """Deterministic random gradients, a leading step axis on each leaf, magnitudes from 1e-3 to 10."""
    rng = np.random.default_rng(seed)
    scale = 10 ** rng.uniform(-3, 1, steps)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal((steps,) + p.shape) * scale.reshape((steps,) + (1,) * p.ndim),
                              p.dtype),
        params)


def run_all(params, grads, *optimizers):
    """``[(params_trajectory, state_trajectory)]`` for each ``(optimizer, apply_updates)``, in one compilation."""

    return jax.jit(lambda: [optim_check._scan(*o)(params, grads) for o in optimizers])()


# ---------------------------------------------------------------- equivalence with optax


@functools.cache
def optax_comparison(dtype):
    """Every case of ``CASES`` run by jaxmlp and by optax on the same 1000 gradients, in one compilation."""
    params = make_params(dtype)
    grads = make_grads(params, STEPS)
    pairs = [((ours(), optim.apply_updates), (reference(), optax.apply_updates)) for _, ours, reference in CASES]
    runs = run_all(params, grads, *[o for pair in pairs for o in pair])
    return {case_id: (runs[2 * i], runs[2 * i + 1]) for i, case_id in enumerate(CASE_IDS)}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_trajectory_equals_optax(case_id, float_dtype):
    (p_ours, _), (p_ref, _) = optax_comparison(float_dtype)[case_id]
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_ref)
    assert all(x.dtype == float_dtype and x.shape[0] == STEPS for x in jax.tree.leaves(p_ours))
    assert max_rel(p_ours, p_ref) <= TOL[float_dtype]


@pytest.mark.parametrize("case_id", ["adam-default", "adam-custom"])
def test_adam_state_equals_optax(case_id, float_dtype):
    (_, s_ours), (_, (s_ref, _)) = optax_comparison(float_dtype)[case_id]
    np.testing.assert_array_equal(s_ours.count, s_ref.count)
    assert (int(s_ours.count[0]), int(s_ours.count[-1])) == (1, STEPS)
    assert s_ours.count.dtype == jnp.int32
    assert max_rel(s_ours.mu, s_ref.mu) <= TOL[float_dtype]
    assert max_rel(s_ours.nu, s_ref.nu) <= TOL[float_dtype]


@pytest.mark.parametrize("case_id", ["momentum", "nesterov-custom"])
def test_momentum_trace_equals_optax(case_id, float_dtype):
    (_, s_ours), (_, (s_ref, _)) = optax_comparison(float_dtype)[case_id]
    assert max_rel(s_ours.trace, s_ref.trace) <= TOL[float_dtype]


@pytest.mark.parametrize("ours, reference", [
    (lambda: optim.adam(1e-2), lambda: optax.adam(1e-2)),
    (lambda: optim.sgd(0.1, momentum=0.9, nesterov=True), lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
], ids=["adam", "nesterov"])
def test_works_inside_optax_chain(ours, reference):
    params = make_params(jnp.float32)
    grads = jax.tree.map(lambda g: 100 * g, make_grads(params, 50))  # large, so the clip acts
    (p_chained, _), (p_expected, _), (p_unclipped, _) = run_all(
        params, grads,
        (optax.chain(optax.clip_by_global_norm(1.0), ours()), optax.apply_updates),
        (optax.chain(optax.clip_by_global_norm(1.0), reference()), optax.apply_updates),
        (ours(), optim.apply_updates),
    )
    assert max_rel(p_chained, p_expected) <= 2e-5
    assert max_rel(p_chained, p_unclipped) > 1e-3  # the clip changed something


# ---------------------------------------------------------------- protocol and state


def test_state_layout():
    params = make_params(jnp.float32)
    grads = jax.tree.map(jnp.ones_like, params)
    assert isinstance(optim.sgd(0.1).init(params), optim.EmptyState)
    trace = optim.sgd(0.1, momentum=0.9).init(params).trace
    assert jax.tree.structure(trace) == jax.tree.structure(params)

    adam = optim.adam()
    state = adam.init(params)
    assert isinstance(state, optim.AdamState) and state._fields == ("count", "mu", "nu")
    assert state.count.dtype == jnp.int32 and int(state.count) == 0
    assert jax.tree.structure(state.mu) == jax.tree.structure(params) == jax.tree.structure(state.nu)
    updates, state = adam.update(grads, state, params)
    updates, state = adam.update(grads, state)  # params is optional
    assert int(state.count) == 2
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_count_saturates_instead_of_overflowing():
    params = jnp.ones(2)
    adam = optim.adam()
    state = adam.init(params)._replace(count=jnp.array(jnp.iinfo(jnp.int32).max, jnp.int32))
    updates, state = adam.update(jnp.ones(2), state)
    assert int(state.count) == jnp.iinfo(jnp.int32).max
    assert np.all(np.isfinite(updates))


def test_apply_updates_keeps_param_dtype():
    params = (jnp.ones(3, jnp.bfloat16), jnp.ones(2, jnp.float32))
    updates = (jnp.full(3, 0.5, jnp.float32), jnp.full(2, 0.5, jnp.float32))
    new = optim.apply_updates(params, updates)
    assert [x.dtype for x in new] == [jnp.bfloat16, jnp.float32]
    np.testing.assert_array_equal(np.asarray(new[1]), 1.5)


def test_jitted_step_does_not_recompile():
    traces = []
    adam = optim.adam(1e-3)

    @jax.jit
    def step(params, state, grads):
        traces.append(1)  # runs once per trace, not per call
        updates, state = adam.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    params = make_params(jnp.float32)
    state = adam.init(params)
    grads = make_grads(params, 2)
    for t in range(2):
        params, state = step(params, state, jax.tree.map(lambda g: g[t], grads))
    assert len(traces) == 1
    assert step._cache_size() == 1


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


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_adam_low_precision_is_finite(dtype):
    """Zero and tiny gradients: eps = 1e-8 is 0 in float16 and 1e-4² underflows, yet no NaN nor inf."""
    adam = optim.adam()
    step = jax.jit(adam.update)
    for magnitude in (0.0, 1e-6, 1e-4, 1.0):
        params = jax.tree.map(lambda p: p.astype(dtype), make_params(jnp.float32))
        state = adam.init(params)
        assert all(m.dtype == jnp.float32 for m in jax.tree.leaves((state.mu, state.nu)))
        for t in range(5):
            grads = jax.tree.map(lambda p: jnp.full_like(p, magnitude * (-1) ** t), params)
            updates, state = step(grads, state, params)
            params = optim.apply_updates(params, updates)
            assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((updates, params, state)))
            # float32 Adam's step, rounded once: |u| <= lr (+ rounding), and 0 for a zero gradient.
            top = max(float(jnp.max(jnp.abs(u.astype(jnp.float32)))) for u in jax.tree.leaves(updates))
            assert top <= 1.01e-3 and (top > 0) == (magnitude > 0), (magnitude, t, top)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_adam_low_precision_is_float32_adam_rounded(dtype):
    params = make_params(jnp.float32)
    grads = jax.tree.map(lambda g: g.astype(dtype), make_grads(params, 10))  # exactly representable
    low, high = optim.adam(1e-2), optax.adam(1e-2)

    @jax.jit
    def both(g, s_low, s_high):
        u_low, s_low = low.update(g, s_low)
        u_high, s_high = high.update(jax.tree.map(lambda x: x.astype(jnp.float32), g), s_high)
        return u_low, jax.tree.map(lambda u: u.astype(dtype), u_high), s_low, s_high

    s_low, s_high = low.init(jax.tree.map(lambda p: p.astype(dtype), params)), high.init(params)
    for t in range(10):
        u_low, u_high, s_low, s_high = both(jax.tree.map(lambda x: x[t], grads), s_low, s_high)
        for a, b in zip(jax.tree.leaves(u_low), jax.tree.leaves(u_high)):
            assert a.dtype == dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
    with pytest.raises(ValueError, match=message):
        optim.adam(**kwargs)


def test_array_hyperparameters_are_not_checked():
    optim.adam(jnp.array(1e-3), b1=jnp.array(0.9), b2=jnp.array(0.999), eps=jnp.array(1e-8))
    optim.adam(b1=0.0, eps=0.0)  # the closed ends are allowed


# ---------------------------------------------------------------- optim knows only pytrees

OPTIM_PY = pathlib.Path(optim.__file__)


def test_optim_source_does_not_import_optax():
    imported = set()
    for node in ast.walk(ast.parse(OPTIM_PY.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "functools", "numbers", "typing", "jax"}, imported


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


# ---------------------------------------------------------------- optim_check


def test_adam_trace_reports_agreement():
    params = make_params(jnp.float32)
    grads = make_grads(params, 100)
    trace = optim_check.adam_trace(params, grads, learning_rate=1e-2, b1=0.8)
    assert trace.param_diff.shape == trace.m_hat_diff.shape == trace.v_hat_diff.shape == (100,)
    assert trace.max_param_diff <= 1e-6 and trace.max_param_rel_diff <= 2e-5
    assert np.max(trace.m_hat_diff) <= 1e-5 and np.max(trace.v_hat_diff) <= 1e-4
    text = str(trace)
    assert "(last)" in text and "(worst)" in text and "|Δm̂|max" in text


def test_compare_with_optax_detects_a_difference():
    params = make_params(jnp.float32)
    grads = make_grads(params, 100)
    trace = optim_check.compare_with_optax(optim.adam(1e-2), optax.adam(1e-2, b1=0.5), params, grads,
                                           b1=0.9, b2=0.999)
    assert trace.max_param_diff > 1e-3
    assert np.max(trace.m_hat_diff) > 1e-2
    assert 1 <= trace.worst_step <= 100
    assert f"{trace.worst_step} (worst)" in str(trace)


def test_compare_with_optax_sgd_has_no_moments():
    params = make_params(jnp.float32)
    grads = make_grads(params, 30)
    trace = optim_check.compare_with_optax(optim.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9), params, grads)
    assert trace.max_param_diff == 0.0 and trace.m_hat_diff is None
    assert "|Δm̂|max" not in str(trace)
    with pytest.raises(ValueError, match="holds no Adam state"):
        optim_check.compare_with_optax(optim.sgd(0.1), optax.sgd(0.1), params, grads, b1=0.9, b2=0.999)


def test_compare_with_optax_checks_the_gradient_sequence():
    params = make_params(jnp.float32)
    with pytest.raises(ValueError, match="leading|shape"):
        optim_check.compare_with_optax(optim.sgd(0.1), optax.sgd(0.1), params, params)  # no step axis


def test_apply_updates_rejects_a_shape_mismatch_instead_of_broadcasting():
    with pytest.raises(ValueError, match=r"shape \(3, 3\) but its parameter has shape \(3,\)"):
        optim.apply_updates((jnp.ones(3),), (jnp.ones((3, 3)),))
