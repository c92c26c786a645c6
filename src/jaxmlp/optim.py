r"""Optimizers over pytrees: gradient descent, SGD with (Nesterov) momentum, Adam, NAdam and AdamW.

Every optimizer is a :class:`GradientTransformation`, optax's protocol: a NamedTuple of two pure
functions, ``init(params) -> state`` and ``update(grads, state, params=None, **extra_args) ->
(updates, state)``. The updates are *added* to the parameters by :func:`apply_updates`, so each
optimizer also works inside ``optax.chain(...)``, ``optax.MultiSteps`` and ``optax.inject_hyperparams``.
This module knows only pytrees (any nest of arrays, such as a tuple of ``Layer(W, b)``) and does not
import optax.

Notation: θ the parameters, g = ∂L/∂θ the gradient at step t = 1, 2, ..., η the learning rate,
u the update, |g|² = g ḡ with ḡ the complex conjugate (g² for real g), every operation elementwise::

    GD / SGD        u = -η g                          θ ← θ + u                        (O1)
    momentum        τ ← g + μ τ,   τ₀ = 0             u = -η τ                         (O2)
    Nesterov        τ ← g + μ τ                       u = -η (g + μ τ)                 (O3)
    Adam  moments   m ← β₁ m + (1 - β₁) g             v ← β₂ v + (1 - β₂) |g|²          (O4)
          step      t ← t + 1 (int32, saturating)                                      (O5)
          debias    m̂ = m / (1 - β₁ᵗ)                 v̂ = v / (1 - β₂ᵗ)                 (O6)
          update    u = -η m̂ / (√v̂ + ε)               ε outside the square root         (O7)
    NAdam           m̂ = β₁ m / (1 - β₁ᵗ⁺¹) + (1 - β₁) g / (1 - β₁ᵗ),  in place of (O6)'s m̂  (O8)
    AdamW           u = -η (m̂ / (√v̂ + ε) + λ θ),     λ θ only where mask is True       (O9)
    schedule        η = η(c),  c = t - 1 = the number of earlier updates (0 at first)  (O10)

GD and SGD are one update: GD's g is the gradient of the full batch, SGD's that of a minibatch.
(O2) is the trace form of PyTorch and optax (no dampening); it equals Sutskever et al.'s
w ← μ w - η g while η is constant. ``sgd`` with momentum 0 or None keeps no trace, as
``optax.sgd(lr)``. NAdam (O8) is Dozat's Nesterov-accelerated Adam: the next step's momentum,
debiased, replaces m̂; v̂ is Adam's. AdamW (O9) is Loshchilov & Hutter's *decoupled* weight decay:
λθ is added to Adam's direction after the moments, so it is scaled by η but not by 1/√v̂, unlike an
L2 term added to g. Each line is written in optax's order of operations (``optax.sgd``,
``optax.adam``, ``optax.adamw``, ``optax.apply_updates``), so in float32 and float64 compiled steps
agree with optax's bit for bit (1000 steps under ``jit`` on CPU, in ``tests/test_optim.py``). Op by
op, without ``jit``, the last bit may differ: eager float32 β₁ᵗ is computed by another algorithm than
compiled β₁ᵗ, and optax compiles its bias correction even then.

A learning rate is a number, a jax array (traced or not: ``jax.vmap`` over an array of learning
rates runs a whole sweep with one compilation), or a schedule: a callable ``learning_rate(count)``
such as ``optax.cosine_decay_schedule(...)``, called with the int32 step count kept in the state
(O10). Python-number hyperparameters are validated when the optimizer is built.

**Complex parameters.** Adam's v is built from |g|² = g ḡ (O4), real and non-negative, so √v̂ is
real and the step keeps m's phase; with g² instead, v would rotate and √v̂ pick a branch. v is stored
in the parameters' dtype (complex, with a zero imaginary part), as optax's, so complex trajectories
too equal optax's bit for bit. The gradient to pass is the conjugate of ``jax.grad``'s (for a real
loss of complex θ, that is the direction of steepest ascent), as in optax.

**State dtypes.** ``adam(mu_dtype=)`` and ``sgd(accumulator_dtype=)`` set the dtype of m or τ; with
None they take the parameters' dtype, as optax's. Adam's v, and all of Adam's arithmetic, are in at
least float32 (``promote_types(dtype, float32)``), and u is cast back to the gradient's dtype at the
end. In float16, ε = 1e-8 rounds to 0 and a small g² underflows to 0, so optax 0.2.8's Adam, whose v
and arithmetic are float16, gives 0/0 = NaN for a zero gradient and -inf for g = 1e-4; jaxmlp's
gives 0 and a finite step. For float32 and float64 parameters nothing is cast. A ``mu_dtype``
narrower than the parameters (bfloat16 m for float32 θ) only stores m narrower: its arithmetic stays
float32, where optax's computes β₁ m in bfloat16, so that case agrees with optax to rounding only.

References:
  Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015 (Algorithm 1).
  Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR 2016 workshop.
  Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019.
  Sutskever, Martens, Dahl & Hinton, *On the importance of initialization and momentum in deep
  learning*, ICML 2013.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class GradientTransformation(NamedTuple):
    """optax's protocol: ``init(params) -> state``, ``update(grads, state, params=None, **extra_args)
    -> (updates, state)``.

    jaxmlp's ``update`` functions take and ignore extra keyword arguments (optax's
    ``GradientTransformationExtraArgs`` convention: a chain passes, say, ``value=loss`` to every
    member, and only those that use it read it).
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class EmptyState(NamedTuple):
    """The state of plain gradient descent (O1) at a constant learning rate: nothing."""


class TraceState(NamedTuple):
    """The state of SGD with momentum: the trace τ of (O2), a pytree like the parameters."""

    trace: Any


class ScheduleState(NamedTuple):
    """The state of GD / SGD with a learning-rate schedule (O10).

    Attributes:
      count: c, the number of updates made so far, an int32 scalar.
      inner: the state at a constant learning rate, :class:`EmptyState` or :class:`TraceState`.
    """

    count: jax.Array
    inner: Any


class AdamState(NamedTuple):
    """The state of Adam, NAdam and AdamW, laid out as optax's ``ScaleByAdamState``.

    Attributes:
      count: t, the number of updates made so far, an int32 scalar (O5); a schedule reads it (O10).
      mu: the first moment m (O4), a pytree like the parameters, in ``mu_dtype`` or theirs.
      nu: the second moment v (O4), in the parameters' dtype or float32 if that is narrower; real-valued
        (complex parameters: a zero imaginary part).
    """

    count: jax.Array
    mu: Any
    nu: Any


# ---------------------------------------------------------------- checks and helpers


def _check_learning_rate(learning_rate):
    _check_nonnegative("learning_rate", learning_rate,
                       "the update (O1) is -learning_rate * direction, so a negative rate climbs the loss")


def _check_decay(name, value):
    if isinstance(value, numbers.Real) and not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}; it is the decay rate of a moving "
                         f"average (Adam's defaults: b1=0.9, b2=0.999)")


def _check_nonnegative(name, value, why):
    if isinstance(value, numbers.Real) and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}; {why}")


def _check_dtype(name, dtype):
    if dtype is not None:
        try:
            jnp.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"{name} must be a dtype or None, got {name}={dtype!r}") from e


def _state_dtype(dtype, param):
    """The dtype of a state leaf: ``dtype`` when given (canonical: float64 is float32 without x64), else the param's."""
    return jnp.result_type(param) if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _wide(*dtypes):
    """At least float32: the dtype of Adam's arithmetic (float16, bfloat16 -> float32; complex stays complex)."""
    return jnp.promote_types(functools.reduce(jnp.promote_types, dtypes), jnp.float32)


def _abs_sq(g):
    """|g|² = g ḡ, real (O4); for real g the same program as g²."""
    return jnp.real(g * jnp.conj(g))


def _cast_like(tree, like, name="the state"):
    """Each leaf of ``tree`` in the dtype of its ``like`` leaf; refusing to drop an imaginary part."""

    def cast(x, y):
        if jnp.iscomplexobj(x) and not jnp.iscomplexobj(y):
            raise TypeError(f"{name} is {y.dtype}, a real dtype, but the parameters (or gradients) are {x.dtype}: "
                            f"the state would lose its imaginary part; give a complex {name} or None")
        return x.astype(y.dtype)

    return jax.tree.map(cast, tree, like)


def _safe_increment(count):
    """count + 1, staying at the dtype's maximum instead of overflowing (as ``optax.safe_increment``)."""
    top = jnp.array(jnp.iinfo(count.dtype).max, count.dtype)
    return jnp.where(count < top, count + jnp.array(1, count.dtype), top)


def _times_minus_lr(learning_rate, count, direction):
    """u = -η d leaf by leaf (O1), η = learning_rate(count) for a schedule (O10), cast to d's dtype as optax."""
    if callable(learning_rate):
        step = -learning_rate(count)  # (O10)
        return jax.tree.map(lambda d: jnp.asarray(step, d.dtype) * d, direction)  # (O1)
    return jax.tree.map(lambda d: -learning_rate * d, direction)  # (O1)


class _Bound:
    """A pure function of the hyperparameters ``hp`` and the call's arguments, ``fn(hp, *args)``, compared
    by value: two optimizers built from equal hyperparameters are equal and hash alike, so a program
    compiled with one as a static argument (``jit``'s cache, as :func:`jaxmlp.fit` uses it) serves the other.

    Hyperparameters compare by type and value (``0.1`` and ``np.float64(0.1)`` differ: jax types the
    second strongly), containers element by element; anything else (an array, a schedule, a mask
    callable) by identity, which is the only equality ``jit`` could rely on for it.
    """

    __slots__ = ("fn", "hp", "_key", "__weakref__")

    def __init__(self, fn, hp: dict):
        self.fn, self.hp = fn, hp
        self._key = (fn, _value_key(hp))

    def __call__(self, *args, **kwargs):
        return self.fn(self.hp, *args, **kwargs)

    def __eq__(self, other):
        return type(other) is _Bound and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"{self.fn.__name__}({', '.join(f'{k}={v!r}' for k, v in self.hp.items())})"


def _value_key(value):
    """What :class:`_Bound` compares a hyperparameter by (see there)."""
    if value is None or isinstance(value, (bool, int, float, complex, str, np.generic, np.dtype)):
        return type(value), value
    if isinstance(value, (tuple, list)):
        return type(value), tuple(_value_key(v) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return dict, tuple((k, _value_key(value[k])) for k in sorted(value))
    return "identity", id(value)  # the _Bound holds the object, so its id stays unique while compared


def _check_shapes(grads, like, what: str) -> None:
    """Each leaf of ``grads`` has the shape of its state leaf in ``like``: a gradient of another shape would
    broadcast into the state and corrupt it for every later step. (A tree of another structure is
    ``jax.tree.map``'s error.)"""
    leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
    refs = jax.tree.leaves(like)
    if len(leaves) != len(refs):
        return
    for (path, g), ref in zip(leaves, refs):
        if jnp.shape(g) != jnp.shape(ref):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"grads{where} has shape {jnp.shape(g)}, but {what}{where} has shape {jnp.shape(ref)}: "
                             f"pass gradients shaped like the params given to init")


# ---------------------------------------------------------------- GD and SGD
# ---------------------------------------------------------------- GD and SGD


def _sgd_init(hp, params):
    inner = EmptyState()
    if hp["keeps_trace"]:
        inner = TraceState(trace=jax.tree.map(
            lambda p: jnp.zeros(jnp.shape(p), _state_dtype(hp["accumulator_dtype"], p)), params))
    return ScheduleState(count=jnp.zeros([], jnp.int32), inner=inner) if callable(hp["learning_rate"]) else inner


def _sgd_update(hp, grads, state, params=None, **extra_args):
    scheduled = callable(hp["learning_rate"])
    inner = state.inner if scheduled else state
    if params is not None:
        _check_shapes(grads, params, "params")
    direction = grads  # (O1)
    if hp["keeps_trace"]:
        _check_shapes(grads, inner.trace, "the momentum trace")
        mu = hp["momentum"]
        trace = jax.tree.map(lambda g, tau: g + mu * tau, grads, inner.trace)  # (O2)
        direction = jax.tree.map(lambda g, tau: g + mu * tau, grads, trace) if hp["nesterov"] else trace  # (O3)
        inner = TraceState(trace=_cast_like(trace, inner.trace, "accumulator_dtype"))
    if not scheduled:
        return _times_minus_lr(hp["learning_rate"], None, direction), inner  # (O1)-(O3)
    updates = _times_minus_lr(hp["learning_rate"], state.count, direction)  # (O1)-(O3) with η(c) (O10)
    return updates, ScheduleState(count=_safe_increment(state.count), inner=inner)


def sgd(learning_rate, momentum=None, nesterov=False, accumulator_dtype=None) -> GradientTransformation:
    """Stochastic gradient descent (O1), with momentum (O2) or Nesterov momentum (O3).

    Equals ``optax.sgd(learning_rate, momentum, nesterov, accumulator_dtype)``. ``momentum`` None (the
    default, as optax's) or a Python 0 keeps no trace (:class:`EmptyState`); any other momentum, an
    array included, keeps the trace (:class:`TraceState`) in ``accumulator_dtype``, or the parameters'
    dtype when None. (A default of 0.0 would become an array under ``optax.inject_hyperparams``, and
    the state a trace.) A schedule ``learning_rate(count)`` adds the step count (:class:`ScheduleState`).

    Raises:
      ValueError: for a negative Python-number ``learning_rate``.
    """
    _check_learning_rate(learning_rate)
    _check_dtype("accumulator_dtype", accumulator_dtype)
    keeps_trace = not (momentum is None or (isinstance(momentum, numbers.Real) and momentum == 0))
    hp = dict(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
              accumulator_dtype=accumulator_dtype, keeps_trace=keeps_trace)
    return GradientTransformation(_Bound(_sgd_init, hp), _Bound(_sgd_update, hp))


def gd(learning_rate, momentum=None, nesterov=False, accumulator_dtype=None) -> GradientTransformation:
    """Gradient descent: :func:`sgd`'s update, named for the full-batch gradient."""
    return sgd(learning_rate, momentum, nesterov, accumulator_dtype)


# ---------------------------------------------------------------- Adam, NAdam, AdamW


def _adam_init(hp, params):
    # Two separate zero trees: sharing one buffer for m and v would stop XLA from donating the state.
    mu = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _state_dtype(hp["mu_dtype"], p)), params)
    nu = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _wide(jnp.result_type(p))), params)
    return AdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)


def _adam_update(hp, grads, state, params=None, **extra_args):
    b1, b2, eps, weight_decay = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    decays = weight_decay is not None and not (isinstance(weight_decay, numbers.Real) and weight_decay == 0)
    if decays and params is None:
        raise ValueError("adamw's update needs params: the decay λθ of (O9) is built from them; call "
                         "update(grads, state, params)")
    _check_shapes(grads, state.mu, "the first moment mu")
    # Arithmetic in at least float32 (a no-op cast unless a dtype is float16 or bfloat16).
    wide = jax.tree.map(lambda g, m: _wide(g.dtype, m.dtype), grads, state.mu)
    g_w = jax.tree.map(lambda g, w: g.astype(w), grads, wide)
    mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m.astype(g.dtype), g_w, state.mu)  # (O4) 1st moment
    nu = jax.tree.map(lambda g, v: (1 - b2) * _abs_sq(g) + b2 * v, g_w, state.nu)  # (O4) 2nd moment
    count = _safe_increment(state.count)  # (O5) step count
    c1, c2 = 1 - b1**count, 1 - b2**count  # (O6): 1 - β₁ᵗ, 1 - β₂ᵗ
    if hp["nesterov"]:
        c1_next = 1 - b1**_safe_increment(count)  # (O8): 1 - β₁ᵗ⁺¹
        mu_hat = jax.tree.map(  # (O8) Nesterov's look-ahead momentum
            lambda m, g: b1 * (m / c1_next.astype(m.dtype)) + (1 - b1) * (g / c1.astype(g.dtype)), mu, g_w)
    else:
        mu_hat = jax.tree.map(lambda m: m / c1.astype(m.dtype), mu)  # (O6) bias correction
    nu_hat = jax.tree.map(lambda v: v / c2.astype(v.dtype), nu)  # (O6) bias correction
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)  # (O7)
    if decays:
        lam = weight_decay(state.count) if callable(weight_decay) else weight_decay  # λ, or λ(c) (O10)
        mask = hp["mask"]
        keep = mask(params) if callable(mask) else mask
        add = lambda d, p: d + lam * p.astype(d.dtype)  # (O9) decoupled weight decay
        if keep is None:
            direction = jax.tree.map(add, direction, params)
        else:  # a pytree of bools like params (or a prefix of it): decay where True
            direction = jax.tree.map(lambda k, d, p: jax.tree.map(add, d, p) if k else d, keep, direction, params)
    updates = _times_minus_lr(hp["learning_rate"], state.count, direction)  # (O7), (O9); η(t - 1) (O10)
    # Back to g's dtype. A complex mu_dtype for real θ makes u complex, its imaginary part exactly 0.
    updates = jax.tree.map(lambda u, g: (u if jnp.iscomplexobj(g) else jnp.real(u)).astype(g.dtype), updates, grads)
    return updates, AdamState(count=count, mu=_cast_like(mu, state.mu, "mu_dtype"), nu=_cast_like(nu, state.nu))


def _adam(learning_rate, b1, b2, eps, weight_decay, mask, nesterov, mu_dtype) -> GradientTransformation:
    """Adam (O4)-(O7), NAdam (O8) with ``nesterov``, AdamW (O9) when ``weight_decay`` is not None."""
    _check_learning_rate(learning_rate)
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    _check_nonnegative("eps", eps, "it keeps (O7)'s denominator away from 0 (default 1e-8)")
    _check_nonnegative("weight_decay", weight_decay, "it is λ of (O9), pulling θ towards 0 (default 1e-4)")
    _check_dtype("mu_dtype", mu_dtype)
    hp = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask,
              nesterov=nesterov, mu_dtype=mu_dtype)
    return GradientTransformation(_Bound(_adam_init, hp), _Bound(_adam_update, hp))


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, *, mu_dtype=None, nesterov=False) -> GradientTransformation:
    """Adam (O4)-(O7), or NAdam (O8) with ``nesterov=True``.

    Equals ``optax.adam(learning_rate, b1, b2, eps, mu_dtype=mu_dtype, nesterov=nesterov)`` in float32
    and float64 (optax's ``eps_root`` is 0 here, which is why ``mu_dtype``, optax's sixth positional
    argument, is keyword-only). ``mu_dtype`` is m's dtype, the parameters' when None;
    v and the arithmetic are in at least float32 (see the module docstring, *State dtypes*).

    Raises:
      ValueError: for a negative Python-number ``learning_rate`` or ``eps``, or ``b1`` or ``b2``
        outside [0, 1).
    """
    return _adam(learning_rate, b1, b2, eps, None, None, nesterov, mu_dtype)


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, mask=None, *, nesterov=False,
          mu_dtype=None) -> GradientTransformation:
    """AdamW (O9): Adam with decoupled weight decay λ = ``weight_decay``; NAdamW with ``nesterov=True``.

    Equals ``optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask,
    nesterov=nesterov, mu_dtype=mu_dtype)`` in float32 and float64. ``mask`` is None (decay every
    leaf), a pytree of Python bools like the parameters (or a prefix of it), or a callable
    ``mask(params)`` returning one: λθ is added only where True, as optax's ``masked``. A common
    choice decays weights but not biases: ``mask=lambda params: tuple(Layer(W=True, b=False) for _ in
    params)``. ``weight_decay`` may also be a schedule ``weight_decay(count)``. ``update`` needs
    ``params``.

    Raises:
      ValueError: for a negative Python-number ``learning_rate``, ``eps`` or ``weight_decay``, or
        ``b1`` or ``b2`` outside [0, 1); at update, when ``params`` is None.
    """
    return _adam(learning_rate, b1, b2, eps, weight_decay, mask, nesterov, mu_dtype)


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
