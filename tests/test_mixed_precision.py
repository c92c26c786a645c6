"""Mixed precision (``compute_dtype``): low-precision matmuls, float32 loss, master weights and Adam state.

What ``compute_dtype=jnp.bfloat16`` (or ``jnp.float16``) promises, in :func:`jaxmlp.backward`,
:func:`jaxmlp.loss_fn` and :func:`jaxmlp.fit`:

- every matmul of the forward (F1) and backward (B2)-(B3) passes runs in the compute dtype (checked
  on the lowered StableHLO: each ``dot_general``'s operand types);
- the loss and Δ[L] (B1) are computed in the parameters' dtype, float32 here, and so are the grads;
- ``fit`` keeps float32 master parameters and optimizer state (checked inside the compiled step with
  an optimizer that records what it is given), and returns float32 parameters.

The matmuls' dtypes are read from the *lowered* StableHLO, what jaxmlp asks XLA for before any of XLA's own
choices: that is the contract of ``compute_dtype``, not a layout detail (``test_perf.py`` holds those).
"""

from __future__ import annotations

import functools
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import datasets, optim

SIZES = [64, 64, 32, 10]
LOW = [pytest.param(jnp.bfloat16, id="bfloat16"), pytest.param(jnp.float16, id="float16")]


def problem(batch=128):
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (batch, SIZES[0]))
    y = jax.random.randint(ky, (batch,), 0, SIZES[-1])
    return jaxmlp.init_mlp(jax.random.key(0), SIZES), x, y


def dot_operand_types(stablehlo: str) -> list[tuple[str, str]]:
    """The element types of the two operands of every ``stablehlo.dot_general``."""
    sig = re.compile(r"stablehlo\.dot_general .*: \(tensor<(?:\d+x)*(\w+)>, tensor<(?:\d+x)*(\w+)>\)")
    lines = [line for line in stablehlo.splitlines() if "stablehlo.dot_general" in line]
    types = [sig.search(line) for line in lines]
    assert all(types), f"unparsed dot_general lines: {[line for line, t in zip(lines, types) if not t]}"
    return [t.groups() for t in types]


@functools.cache  # one compilation per (grad, dtype) for the whole module
def value_and_grad(grad: str, compute_dtype):
    if grad == "manual":
        return jax.jit(partial(jaxmlp.backward, loss="ce", compute_dtype=compute_dtype))
    return jax.jit(jax.value_and_grad(partial(jaxmlp.loss_fn, loss="ce", compute_dtype=compute_dtype)))


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
@pytest.mark.parametrize("compute_dtype, element", [
    pytest.param(jnp.bfloat16, "bf16", id="bfloat16"),
    pytest.param(jnp.float16, "f16", id="float16"),
    pytest.param(None, "f32", id="none-float32"),
])
def test_every_matmul_runs_in_compute_dtype(grad, compute_dtype, element):
    params, x, y = problem()
    hlo = value_and_grad(grad, compute_dtype).lower(params, x, y).as_text()
    types = dot_operand_types(hlo)
    L = len(params)
    # L forward (F1), L weight gradients (B3), L - 1 backward deltas (B2); (B4) is a sum, not a dot.
    assert len(types) == 3 * L - 1, f"expected {3 * L - 1} dot_generals, found {len(types)}: {types}"
    assert all(t == (element, element) for t in types), f"dot_general operand types {types}, expected {element}"


@pytest.mark.parametrize("compute_dtype", LOW)
@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_loss_and_grads_in_float32(grad, compute_dtype):
    params, x, y = problem()
    loss, grads = value_and_grad(grad, compute_dtype)(params, x, y)
    loss32, _ = value_and_grad("manual", None)(params, x, y)
    assert loss.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    # The logits are rounded to the compute dtype, so the loss is near, not equal to, the float32 one.
    np.testing.assert_allclose(loss, loss32, rtol=1e-2)


@pytest.mark.parametrize("compute_dtype", LOW)
def test_manual_matches_autodiff_loosely(compute_dtype):
    """Tolerance: 2 ε of the compute dtype (bf16: 1.6e-2, f16: 2.0e-3) in each leaf's relative norm.

    Both run the same low-precision matmuls, and the weight gradients (B3) come out bit-identical; the
    bias gradients (B4) are batch sums rounded differently: backward's ``jnp.sum`` accumulates in
    float32 (and Δ[L] is float32), autodiff's transpose of the bias broadcast sums in the compute
    dtype, and every rounding to it moves a value by up to ε/2. Measured: ~4e-3 (bf16), ~6e-4 (f16);
    the bf16 grads differ from the float32 ones by ~3e-2, so the bound tells the two apart.
    """
    params, x, y = problem()
    tol = 2 * float(jnp.finfo(compute_dtype).eps)
    loss_m, manual = value_and_grad("manual", compute_dtype)(params, x, y)
    loss_a, auto = value_and_grad("autodiff", compute_dtype)(params, x, y)
    np.testing.assert_allclose(loss_m, loss_a, rtol=tol)
    for (path, m), a in zip(jax.tree_util.tree_leaves_with_path(manual), jax.tree.leaves(auto), strict=True):
        rel = float(jnp.linalg.norm(m - a) / jnp.linalg.norm(a))
        assert rel <= tol, f"{jax.tree_util.keystr(path)}: |manual - autodiff| / |autodiff| = {rel:.2e} > {tol:.2e}"


def recording(optimizer, seen: list):
    """``optimizer``, recording the dtypes of (grads, state, params) it is traced with."""
    def update(grads, state, params=None):
        seen.append({"grads": grads, "state": state, "params": params})
        return optimizer.update(grads, state, params)

    return optim.GradientTransformation(optimizer.init, update)


@pytest.mark.parametrize("compute_dtype", LOW)
def test_fit_keeps_float32_master_weights_and_adam_state(compute_dtype):
    params, x, y = problem(256)
    seen = []
    kw = dict(loss="ce", epochs=1, batch_size=64, key=jax.random.key(0))
    low, history = jaxmlp.fit(params, x, y, optimizer=recording(optim.adam(1e-2), seen), compute_dtype=compute_dtype,
                              **kw)
    assert seen, "fit never called the optimizer"
    for what, tree in seen[0].items():
        dtypes = {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}, f"the optimizer was given {what} in {dtypes}, expected float32"
    assert isinstance(seen[0]["state"], optim.AdamState)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(low)), "fit must return float32 params"
    assert history["loss"].dtype == np.float32

    full, _ = jaxmlp.fit(params, x, y, optimizer=optim.adam(1e-2), **kw)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(low), jax.tree.leaves(full)))
    assert 1e-6 < diff < 5e-2, f"max |low precision - float32| = {diff:.2e}: compute_dtype was ignored, or diverged"


@pytest.mark.slow
def test_digits_bfloat16_accuracy():
    """[64, 64, 32, 10] with bfloat16 matmuls, Adam 3e-3, 40 epochs of batch 64: >= 94 % held out."""
    x_tr, y_tr, x_te, y_te = datasets.load("digits")
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    params, history = jaxmlp.fit(params, x_tr, y_tr, optimizer=optim.adam(3e-3), loss="ce", epochs=40,
                                 batch_size=64, key=jax.random.key(0), compute_dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    accuracy = float(jaxmlp.evaluate(params, x_te, y_te, loss="ce")["accuracy"])
    assert accuracy >= 0.94, f"held-out accuracy {accuracy:.4f} < 0.94"
