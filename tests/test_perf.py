"""The layout and compile-count choices that make jaxmlp fast, not its contract: how many programs fit compiles
(jit's private cache size) and when it compiles none; the HLO of the ensemble's program (one matmul for all
models' layer 1, no batched product contracting the minibatch axis of both operands); backward's optimization
barriers, on CPU only; one compilation for repeated jitted optimizer steps; init_mlp as one program.

All marked ``perf`` (``pytest -m "not perf"`` leaves them out; CI runs them). A failure here means a change
made jaxmlp slower or recompile more, or that the pattern checked has gone stale with a new jax: read the
test's docstring for what it guards. (The all-reduce of every gradient in a data-parallel program, which
needs 8 devices, is ``test_sharding.py``'s ``test_gradients_are_all_reduced``, marked ``perf`` there.)
"""

import gc
import re
from functools import partial

import jax
import jax.numpy as jnp
import pytest
from _optimizers import IDS, build, small_problem
from _training import ACTIVATION, BATCH, LOSS, SEED, SGD, SIZES, Compilations, N, Unhashable, make_problem, run

import jaxmlp
from jaxmlp import backprop, ensemble, init_mlp, loop, optim, train

pytestmark = pytest.mark.perf


def fit_programs() -> int:
    """How many programs fit's jit holds (garbage collected first: entries of dead objects must not vanish
    mid-test)."""
    gc.collect()
    return train._compiled_epochs._cache_size()


# --- fit: one program per configuration, compiled once ------------------------------------------------------


def test_one_program_per_configuration_and_no_recompile(problem32):
    """A new configuration adds one compiled program (all epochs, all steps); repeating it adds none."""
    params, x, y = problem32
    # A fresh update function: a configuration compiled nowhere else.
    optimizer = optim.GradientTransformation(SGD.init, lambda grads, state, params=None: SGD.update(grads, state))
    before = fit_programs()
    run(params, x, y, optimizer=optimizer)
    assert fit_programs() == before + 1
    # Same shapes, configuration and optimizer; other values (params, data, key).
    shifted = jax.tree.map(lambda p: p + 1, params)
    run(shifted, x + 1, y, optimizer=optimizer, key=jax.random.key(SEED + 1))
    run(params, x, y, optimizer=optimizer)
    assert fit_programs() == before + 1


def test_an_equal_freshly_built_optimizer_reuses_the_program(problem32):
    """Optimizers compare by value: a second fit with ``optim.adam(1e-2)`` built again runs the program the first
    one compiled; ``optim.adam(0.0123)``, a learning rate no other test uses, compiles one more."""
    run(*problem32, optimizer=optim.adam(1e-2))  # compiled here, or by an earlier test
    compiled = fit_programs()
    run(*problem32, optimizer=optim.adam(1e-2))
    assert fit_programs() == compiled
    run(*problem32, optimizer=optim.adam(0.0123))
    assert fit_programs() == compiled + 1


def test_an_unhashable_optimizer_gets_an_uncached_program(problem32):
    """An optimizer that cannot be a static jit argument gets a fresh jit of its own, which fit's cache does not
    keep (test_train.py checks that it trains as the hashable one does)."""
    before = fit_programs()
    run(*problem32, optimizer=Unhashable(SGD))
    assert fit_programs() == before


# --- fit_ensemble's program -----------------------------------------------------------------------------------

K = 3  # models


def ensemble_hlo(shuffle, sizes=SIZES):
    """The optimized HLO of one epoch of the ensemble program (K = 3 models of the shared problem, batch 4, SGD)."""
    _, x, y = make_problem()
    stack = jax.vmap(lambda k: init_mlp(k, sizes, init="xavier"))(jax.random.split(jax.random.key(1), K))
    factory = ensemble._Same(optim.sgd(0.1))
    config = loop.Config(LOSS, ACTIVATION, None, "manual", BATCH, eval_chunk=N)
    key = jax.random.key(0) if shuffle == "shared" else jax.random.split(jax.random.key(0), K)
    carry = loop.Carry(stack, ensemble._init(stack, {}, factory=factory), key, stack, jnp.ones((K,), bool))
    lowered = ensemble._compiled_ensemble.lower(carry, x, y, {}, factory=factory, config=config, n_epochs=1,
                                                per_model=shuffle == "per_model", group=K)
    return lowered.compile().as_text()


def test_shared_minibatch_makes_layer_1_one_matmul_for_all_models():
    """shuffle="shared": X_b (B x n0) times the K stacked W[1] is one dot of shape (B, K n1), forward (F1),
    and the gradient of W[1], (X_bᵀ Δ[1])ᵀ, one of shape (n0, K n1) (B3); per-model minibatches are K
    batched products."""
    n0, n1 = SIZES[0], SIZES[1]
    one_dot = [rf"f32\[{BATCH},{K * n1}\]\{{[0-9,]*\}} dot\(", rf"f32\[{n0},{K * n1}\]\{{[0-9,]*\}} dot\("]
    shared, per_model = ensemble_hlo("shared"), ensemble_hlo("per_model")
    for pattern in one_dot:
        assert re.search(pattern, shared), pattern
        assert not re.search(pattern, per_model), pattern


@pytest.mark.parametrize("shuffle", ["shared", "per_model"])
def test_no_weight_gradient_contracts_the_batch_axis_of_both_operands(shuffle):
    """(B3) ∂L/∂W[l] = Δ[l]ᵀ A[l-1] under vmap: XLA:CPU runs a batched product that contracts axis 1 (the
    minibatch) of both operands one matrix at a time, at twice the cost of the "NN" product of Δ[l]ᵀ
    written out. None may be left but matrix-vector ones (a free dimension of 1: the output layer)."""
    text = ensemble_hlo(shuffle, sizes=(3, 5, 4, 1))  # layer 2 is a 4 x 5 matrix
    tn = re.findall(r"f32\[\d+,(\d+),(\d+)\]\{[0-9,]*\} dot\([^)]*\), lhs_batch_dims=\{0\}, "
                    r"lhs_contracting_dims=\{1\}, rhs_batch_dims=\{0\}, rhs_contracting_dims=\{1\}", text)
    assert tn, "the output layer's matrix-vector products are not found: the pattern is stale"
    assert all("1" in (rows, cols) for rows, cols in tn), tn


# --- backward's order of evaluation ---------------------------------------------------------------------------

# (loss, output activation, target): test_backprop.py's pairs, as abstract shapes (nothing is computed here).
PAIRS = [("mse", "identity", "real"), ("mse", "sigmoid", "real"), ("mse", "tanh", "real"), ("bce", "sigmoid", "real"),
         ("ce", "softmax", "one-hot"), ("ce", "softmax", "labels")]


@pytest.mark.parametrize("loss, output_activation, target", PAIRS, ids=[f"{p[0]}-{p[1]}-{p[2]}" for p in PAIRS])
def test_backward_orders_large_layers_with_a_barrier_on_cpu_only(loss, output_activation, target, float_dtype,
                                                                 monkeypatch):
    """Where A[l-1] holds at least IN_ORDER_MIN numbers, backward orders (B3) before (B2) with an optimization
    barrier on CPU (A[l-1] is freed before Δ[l-1] is made), for layers 2..L; small layers, and other
    platforms, are left to XLA's scheduler. (The gradients on that path: test_backprop.py.)"""
    sizes, B = (3, 5, 4, 3), 5
    params = jax.eval_shape(lambda: init_mlp(jax.random.key(0), sizes, dtype=float_dtype))
    x = jax.ShapeDtypeStruct((B, sizes[0]), float_dtype)
    y = jax.ShapeDtypeStruct((B,), jnp.int32) if target == "labels" else jax.ShapeDtypeStruct((B, sizes[-1]),
                                                                                                float_dtype)
    kw = dict(activation="tanh", output_activation=output_activation, loss=loss)

    def barriers(platform):
        traced = jax.jit(partial(jaxmlp.backward, **kw)).trace(params, x, y)
        return traced.lower(lowering_platforms=(platform,)).as_text().count("optimization_barrier")

    L = len(params)
    assert (barriers("cpu"), barriers("cuda")) == (0, 0)  # small layers: left to XLA's scheduler
    monkeypatch.setattr(backprop, "IN_ORDER_MIN", 1)
    assert (barriers("cpu"), barriers("cuda")) == (L - 1, 0)  # (B3) before (B2), layers 2..L, on CPU only


# --- optimizers and initializers --------------------------------------------------------------------------------


@pytest.mark.parametrize("opt_id", IDS)
def test_second_jitted_optimizer_step_does_not_recompile(opt_id):
    """As optax's own optimizers: a jitted step traces and compiles once, whatever the values (a Python number
    computed from the step count, say, would retrace every step)."""
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


def test_init_mlp_is_one_compiled_program():
    """Op by op it compiled about a dozen small programs (1 s of a cold ``jaxmlp train``); now one per
    (sizes, init, dtype), reused by the next call."""
    sizes = [7, 13, 11, 3]  # widths no other test uses: nothing of this is compiled yet
    keys = jax.block_until_ready([jax.random.key(0), jax.random.key(1)])  # made first: they may compile too
    with Compilations() as compiled:
        jax.block_until_ready(init_mlp(keys[0], sizes, init="lecun"))
        assert compiled.n == 1
        jax.block_until_ready(init_mlp(keys[1], sizes, init="lecun"))
        assert compiled.n == 1
