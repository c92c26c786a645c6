r"""Optimizers over pytrees: gradient descent, SGD with (Nesterov) momentum, and Adam.

Every optimizer is a :class:`GradientTransformation`, optax's protocol: a NamedTuple of two pure
functions, ``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``.
The updates are *added* to the parameters by :func:`apply_updates`, so each optimizer also works
inside ``optax.chain(...)``. This module knows only pytrees (any nest of arrays, such as a tuple of
``Layer(W, b)``) and does not import optax.

Notation: θ the parameters, g = ∂L/∂θ the gradient at step t = 1, 2, ..., η the learning rate,
u the update, every operation elementwise::

    GD / SGD        u = -η g                          θ ← θ + u                        (O1)
    momentum        τ ← g + μ τ,   τ₀ = 0             u = -η τ                         (O2)
    Nesterov        τ ← g + μ τ                       u = -η (g + μ τ)                 (O3)
    Adam  moments   m ← β₁ m + (1 - β₁) g             v ← β₂ v + (1 - β₂) g²            (O4)
          step      t ← t + 1 (int32, saturating)                                      (O5)
          debias    m̂ = m / (1 - β₁ᵗ)                 v̂ = v / (1 - β₂ᵗ)                 (O6)
          update    u = -η m̂ / (√v̂ + ε)               ε outside the square root         (O7)

GD and SGD are one update: GD's g is the gradient of the full batch, SGD's that of a minibatch.
(O2) is the trace form of PyTorch and optax (no dampening); it equals Sutskever et al.'s
w ← μ w - η g while η is constant. ``sgd`` with momentum 0 (a Python number) keeps no trace, as
``optax.sgd(lr)``. Each line is written in optax's order of operations (``optax.sgd``,
``optax.adam``, ``optax.apply_updates``), so in float32 and float64 the results agree with optax's
to rounding (bit for bit over 1000 steps on CPU, in ``tests/test_optim.py``).

Hyperparameters may be jax arrays, traced or not: ``jax.vmap`` over an array of learning rates runs
a whole sweep with one compilation. Python-number ``b1``, ``b2`` and ``eps`` are validated when the
optimizer is built.

**Low precision.** Adam keeps m and v in at least float32 (``promote_types(dtype, float32)``) and
computes (O6)-(O7) there, then casts u to the gradient's dtype. In float16, ε = 1e-8 rounds to 0 and
a small g² underflows to 0, so the same arithmetic in float16 (optax 0.2.8's) gives 0/0 = NaN for
a zero gradient and -inf for g = 1e-4. For float32 and float64 parameters nothing is cast.

References:
  Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015 (Algorithm 1).
  Sutskever, Martens, Dahl & Hinton, *On the importance of initialization and momentum in deep
  learning*, ICML 2013.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class GradientTransformation(NamedTuple):
    """optax's protocol: ``init(params) -> state``, ``update(grads, state, params=None) -> (updates, state)``."""

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class EmptyState(NamedTuple):
    """The state of plain gradient descent (O1): nothing."""


class TraceState(NamedTuple):
    """The state of SGD with momentum: the trace τ of (O2), a pytree like the parameters."""

    trace: Any


class AdamState(NamedTuple):
    """Adam's state, laid out as optax's ``ScaleByAdamState``.

    Attributes:
      count: t, the number of updates made so far, an int32 scalar (O5).
      mu: the first moment m (O4), a pytree like the parameters, in at least float32.
      nu: the second moment v (O4), likewise.
    """

    count: jax.Array
    mu: Any
    nu: Any


def _check_decay(name, value):
    if isinstance(value, numbers.Real) and not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}; it is the decay rate of a moving "
                         f"average (Adam's defaults: b1=0.9, b2=0.999)")


def _cast_like(tree, like):
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def _safe_increment(count):
    """count + 1, staying at the dtype's maximum instead of overflowing (as ``optax.safe_increment``)."""
    top = jnp.array(jnp.iinfo(count.dtype).max, count.dtype)
    return jnp.where(count < top, count + jnp.array(1, count.dtype), top)


def _memoized(constructor):
    """Return the same (immutable) optimizer for the same hashable hyperparameters.

    Compiled programs that take the optimizer as a static argument (:func:`jaxmlp.fit`) are cached on
    it, so ``fit(..., optimizer=adam(1e-3))`` twice compiles once. Array hyperparameters are not
    hashable and get a fresh optimizer each call.
    """
    cached = functools.lru_cache(maxsize=256)(constructor)

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        try:
            return cached(*args, **kwargs)
        except TypeError as e:
            if "unhashable" not in str(e):
                raise
            return constructor(*args, **kwargs)

    return build


@_memoized
def sgd(learning_rate, momentum=0.0, nesterov=False) -> GradientTransformation:
    """Stochastic gradient descent (O1), with momentum (O2) or Nesterov momentum (O3).

    Equals ``optax.sgd(learning_rate, momentum, nesterov)``. ``momentum=0`` (a Python number) keeps no
    state (:class:`EmptyState`), as ``optax.sgd(learning_rate)``; any other momentum, an array
    included, keeps the trace (:class:`TraceState`) in the parameters' dtype.
    """
    if isinstance(momentum, numbers.Real) and momentum == 0:

        def update_gd(grads, state, params=None):
            return jax.tree.map(lambda g: -learning_rate * g, grads), state  # (O1)

        return GradientTransformation(lambda params: EmptyState(), update_gd)

    def init(params):
        return TraceState(trace=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        trace = jax.tree.map(lambda g, tau: g + momentum * tau, grads, state.trace)  # (O2)
        if nesterov:
            direction = jax.tree.map(lambda g, tau: g + momentum * tau, grads, trace)  # (O3)
        else:
            direction = trace  # (O2)
        updates = jax.tree.map(lambda d: -learning_rate * d, direction)  # (O2), (O3)
        return updates, TraceState(trace=_cast_like(trace, state.trace))

    return GradientTransformation(init, update)


def gd(learning_rate, momentum=0.0, nesterov=False) -> GradientTransformation:
    """Gradient descent: :func:`sgd`'s update, named for the full-batch gradient."""
    return sgd(learning_rate, momentum, nesterov)


@_memoized
def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8) -> GradientTransformation:
    """Adam (O4)-(O7), equal to ``optax.adam(learning_rate, b1, b2, eps)`` in float32 and float64.

    Raises:
      ValueError: for a Python-number ``b1`` or ``b2`` outside [0, 1), or ``eps`` < 0.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    if isinstance(eps, numbers.Real) and not eps >= 0:
        raise ValueError(f"eps must be >= 0, got eps={eps!r}; it keeps (O7)'s denominator away from 0 "
                         f"(default 1e-8)")

    def init(params):
        # Moments in at least float32: float16 / bfloat16 parameters get float32 moments.
        # Two separate zero trees: sharing one buffer for m and v would stop XLA from donating the state.
        zeros = lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32))
        return AdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(zeros, params),
                         nu=jax.tree.map(zeros, params))

    def update(grads, state, params=None):
        # g joins its moment's dtype (a no-op unless the parameters are float16 or bfloat16).
        mu = jax.tree.map(lambda g, m: (1 - b1) * g.astype(m.dtype) + b1 * m, grads, state.mu)  # (O4) 1st moment
        nu = jax.tree.map(lambda g, v: (1 - b2) * g.astype(v.dtype) ** 2 + b2 * v, grads, state.nu)  # (O4) 2nd moment
        count = _safe_increment(state.count)  # (O5) step count
        c1, c2 = 1 - b1**count, 1 - b2**count  # (O6): 1 - β₁ᵗ, 1 - β₂ᵗ
        mu_hat = jax.tree.map(lambda m: m / c1.astype(m.dtype), mu)  # (O6) bias correction
        nu_hat = jax.tree.map(lambda v: v / c2.astype(v.dtype), nu)  # (O6) bias correction
        updates = jax.tree.map(
            lambda g, m, v: (-learning_rate * (m / (jnp.sqrt(v) + eps))).astype(g.dtype),  # (O7), back to g's dtype
            grads, mu_hat, nu_hat)
        return updates, AdamState(count=count, mu=_cast_like(mu, state.mu), nu=_cast_like(nu, state.nu))

    return GradientTransformation(init, update)


def apply_updates(params, updates):
    """θ ← θ + u leaf by leaf, each result in its parameter's dtype (as ``optax.apply_updates``).

    Raises:
      ValueError: when an update's shape differs from its parameter's (no silent broadcast).
    """

    def add(path, p, u):
        if jnp.shape(p) != jnp.shape(u):
            raise ValueError(f"update {jax.tree_util.keystr(path)} has shape {jnp.shape(u)} but its parameter "
                             f"has shape {jnp.shape(p)}")
        return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)  # (O1): θ ← θ + u

    return jax.tree_util.tree_map_with_path(add, params, updates)
