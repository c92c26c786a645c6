"""Check an optimizer against optax, step by step: the optimizer counterpart of a gradient checker.

:func:`compare_with_optax` runs two optimizers on the same sequence of gradients and reports, after
every step, how far apart their parameters are and, for Adam, their bias-corrected moments m̂ and v̂
((O6) in :mod:`jaxmlp.optim`). :func:`adam_trace` and :func:`adamw_trace` build the two optimizers for you::

    trace = adam_trace(params, grads_sequence, learning_rate=1e-2)
    print(trace)             # a table: first steps, last step, worst step
    trace.max_param_diff     # 0.0 when the two agree to the last bit

Unlike :mod:`jaxmlp.optim`, this module imports optax: optax is the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
import optax

from jaxmlp import optim


def trajectory(optimizer, params, grads_sequence, apply_updates=optim.apply_updates):
    """Run ``optimizer`` over ``grads_sequence`` with one jitted ``lax.scan``.

    Args:
      optimizer: any GradientTransformation (``init``, ``update``), jaxmlp's or optax's.
      params: the initial parameters, a pytree.
      grads_sequence: the pytree of ``params`` with a leading step axis T on every leaf: step t uses
        ``grads_sequence[t]`` (leaf-wise), whatever the parameters are.
      apply_updates: how updates are added, :func:`jaxmlp.optim.apply_updates` or ``optax.apply_updates``.

    Returns:
      ``(params_after_each_step, state_after_each_step)``, every leaf stacked with leading axis T.
    """
    _check_sequence(params, grads_sequence)
    return jax.jit(_scan(optimizer, apply_updates))(params, grads_sequence)


def _scan(optimizer, apply_updates):
    def step(carry, grads):
        p, state = carry
        updates, state = optimizer.update(grads, state, p)
        p = apply_updates(p, updates)
        return (p, state), (p, state)

    return lambda params, grads_sequence: jax.lax.scan(step, (params, optimizer.init(params)), grads_sequence)[1]


class OptimizerTrace(NamedTuple):
    """Per-step differences between two optimizers (step t = 1..T is index t - 1).

    Attributes:
      param_diff: ``(T,)``, max |θ_ours - θ_ref| over all parameters after each step.
      param_scale: ``(T,)``, max |θ_ref|, the scale for relative differences.
      m_hat_diff: ``(T,)`` max |m̂_ours - m̂_ref|, or None when the moments were not compared.
      v_hat_diff: ``(T,)`` max |v̂_ours - v̂_ref|, or None.
    """

    param_diff: np.ndarray
    param_scale: np.ndarray
    m_hat_diff: np.ndarray | None = None
    v_hat_diff: np.ndarray | None = None

    @property
    def max_param_diff(self) -> float:
        """The largest parameter difference over all steps (NaN if any step produced NaN)."""
        return float(np.max(self.param_diff))

    @property
    def max_param_rel_diff(self) -> float:
        """max over steps of |θ_ours - θ_ref|_max / |θ_ref|_max."""
        return float(np.max(self.param_diff / np.maximum(self.param_scale, np.finfo(np.float64).tiny)))

    @property
    def worst_step(self) -> int:
        """The step t (1-based) with the largest parameter difference; a NaN step counts as the worst."""
        return int(np.argmax(np.nan_to_num(self.param_diff, nan=np.inf))) + 1

    def __str__(self) -> str:
        columns = [("|Δθ|max", self.param_diff), ("|Δm̂|max", self.m_hat_diff), ("|Δv̂|max", self.v_hat_diff)]
        columns = [(name, col) for name, col in columns if col is not None]
        T = len(self.param_diff)
        rows = [(f"{t}", t) for t in range(1, min(T, 3) + 1)]
        rows += [(f"{T} (last)", T), (f"{self.worst_step} (worst)", self.worst_step)]
        lines = [f"{'step':>12}" + "".join(f"{name:>12}" for name, _ in columns)]
        lines += [f"{label:>12}" + "".join(f"{col[t - 1]:>12.3e}" for _, col in columns) for label, t in rows]
        lines.append(f"max |Δθ| = {self.max_param_diff:.3e} at step {self.worst_step} of {T} "
                     f"(relative to max |θ_ref|: {self.max_param_rel_diff:.3e})")
        return "\n".join(lines)


def compare_with_optax(ours, reference, params, grads_sequence, *, b1=None, b2=None) -> OptimizerTrace:
    """Run ``ours`` and ``reference`` (an optax optimizer) on the same gradients and compare each step.

    The reference's parameters are updated by ``optax.apply_updates``, ours by
    :func:`jaxmlp.optim.apply_updates`. With ``b1`` and ``b2`` (Adam's decay rates), both states must
    hold an Adam state (``count``, ``mu``, ``nu``, possibly inside a chain), and the trace also
    compares the bias-corrected moments m̂ = mu / (1 - b1^count), v̂ = nu / (1 - b2^count), computed
    in float64 from each state with the same ``b1``, ``b2`` (for NAdam too: the stored moments, debiased
    by (O6), not (O8)'s look-ahead m̂). Complex parameters are compared by the modulus of the difference.
    """
    _check_sequence(params, grads_sequence)
    run_ours, run_ref = _scan(ours, optim.apply_updates), _scan(reference, optax.apply_updates)
    (p_ours, s_ours), (p_ref, s_ref) = jax.jit(lambda p, gs: (run_ours(p, gs), run_ref(p, gs)))(params, grads_sequence)
    m_hat_diff = v_hat_diff = None
    if b1 is not None or b2 is not None:
        if b1 is None or b2 is None:
            raise ValueError(f"give both Adam decay rates to compare moments, got b1={b1!r}, b2={b2!r}")
        a_ours, a_ref = _adam_state(s_ours, "ours"), _adam_state(s_ref, "reference")
        m_hat_diff = _max_abs_diff(_debias(a_ours.mu, b1, a_ours.count), _debias(a_ref.mu, b1, a_ref.count))
        v_hat_diff = _max_abs_diff(_debias(a_ours.nu, b2, a_ours.count), _debias(a_ref.nu, b2, a_ref.count))
    scale = np.max([np.max(np.abs(_f64(x)).reshape(len(x), -1), axis=1) for x in jax.tree.leaves(p_ref)], axis=0)
    return OptimizerTrace(_max_abs_diff(p_ours, p_ref), scale, m_hat_diff, v_hat_diff)


def adam_trace(params, grads_sequence, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, *,
               nesterov=False) -> OptimizerTrace:
    """:func:`compare_with_optax` for ``jaxmlp.optim.adam`` against ``optax.adam`` with the same hyperparameters
    (NAdam with ``nesterov=True``); ``learning_rate`` may be a schedule."""
    return compare_with_optax(optim.adam(learning_rate, b1, b2, eps, nesterov=nesterov),
                              optax.adam(learning_rate, b1, b2, eps, nesterov=nesterov),
                              params, grads_sequence, b1=b1, b2=b2)


def adamw_trace(params, grads_sequence, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                mask=None, *, nesterov=False) -> OptimizerTrace:
    """:func:`compare_with_optax` for ``jaxmlp.optim.adamw`` against ``optax.adamw`` with the same hyperparameters."""
    ours = optim.adamw(learning_rate, b1, b2, eps, weight_decay, mask, nesterov=nesterov)
    reference = optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask, nesterov=nesterov)
    return compare_with_optax(ours, reference, params, grads_sequence, b1=b1, b2=b2)


def _f64(x):
    """float64, or complex128 for complex arrays (their differences are then complex moduli)."""
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _max_abs_diff(a, b):
    """``(T,)``: per step, the max |a - b| over every element of every leaf."""
    per_leaf = [np.max(np.abs(_f64(x) - _f64(y)).reshape(len(x), -1), axis=1)
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return np.max(per_leaf, axis=0)


def _debias(moment, decay, count):
    """(O6) on stacked states: moment / (1 - decay^count), count of shape (T,)."""
    correction = 1 - float(decay) ** _f64(count)
    return [_f64(x) / correction.reshape((-1,) + (1,) * (np.ndim(x) - 1)) for x in jax.tree.leaves(moment)]


def _adam_state(state, which):
    """The first state with ``count``, ``mu`` and ``nu`` inside ``state`` (a chain's tuple of states)."""
    if all(hasattr(state, f) for f in ("count", "mu", "nu")):
        return state
    for s in state if isinstance(state, tuple) else ():
        if (found := _adam_state(s, None)) is not None:
            return found
    if which is not None:
        raise ValueError(f"b1 and b2 were given but the {which} optimizer's state holds no Adam state "
                         f"(count, mu, nu); its state is {type(state).__name__}")
    return None


def _check_sequence(params, grads_sequence):
    if jax.tree.structure(params) != jax.tree.structure(grads_sequence):
        raise ValueError(f"grads_sequence must have the pytree structure of params: params is "
                         f"{jax.tree.structure(params)}, grads_sequence is {jax.tree.structure(grads_sequence)}")
    shapes = [(np.shape(p), np.shape(g)) for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads_sequence))]
    steps = {g[:1] for _, g in shapes}
    if any(g[1:] != p for p, g in shapes) or len(steps) != 1 or steps == {()}:
        raise ValueError(f"every leaf of grads_sequence must have shape (T,) + the parameter's shape, with one T; "
                         f"got (param shape, grads shape) pairs {shapes}")
