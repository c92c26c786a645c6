r"""Verifying the gradient of any function of a pytree: against ``jax.grad`` and finite differences.

This module knows pytrees and nothing of MLPs; :mod:`jaxmlp.gradcheck` is its public face,
:func:`jaxmlp.check_gradients`. A user brings a reference loss ``f(θ, *args) -> scalar`` and a backward
``(θ, *args) -> (L, g)`` to check. Everything runs in float64. With ε the float64 machine epsilon, λ the
loss scale of (V4), h the finite-difference step and ``g_ad = jax.grad(f)(θ)``:

- **Structure.** ``g`` must have a floating leaf, of the same shape, at every path of θ, and no other
  leaf; every leaf must be finite. A pair returned as ``(grads, loss)`` is recognised and named.
- **The loss value**::

      |L - f(θ)| <= rtol_autodiff |f(θ)| + 10 ε                                                  (V1)

- **Autodiff**, entry by entry: E is the set of entries with |gᵢ - g_adᵢ| > τ, with τ relative to the
  leaf's largest entry, or a rounding floor: 64 ε of the largest entry of the whole gradient, or four
  times the change of the leaf's g_ad when θ is nudged by 4 ε relative (θ' = θ ± 4 ε |θ|), the scale of
  g's rounding where g_ad is a cancellation (at a least-squares optimum, say)::

      τ = max(rtol_autodiff max |g_ad|,  64 ε max_leaves max |g_ad|,  4 max' |g_ad(θ') - g_ad(θ)|)   (V2)

  max' leaves out the changes more than ``KINK_JUMP`` = 10⁶ times the leaf's median change: there the
  nudge crossed a kink (a jump of g_ad, not its rounding), which would otherwise excuse every entry of
  the leaf; those entries, where they disagree, are judged as kinks below.

- **Finite differences** along directions v of one leaf at a time: the coordinates eᵢ of a leaf that the
  budget covers whole, else random unit vectors ±1/√n; compared with the directional derivative ⟨g, v⟩::

      D_v(h) = (f(θ + h v) - f(θ - h v)) / 2h,   error O(h²) + O(ε λ / h)                       (V3)

  compared with ⟨g, s⟩ / 2h, s = fl(θ + h v) - fl(θ - h v) the step actually taken. A direction passes
  when |⟨g, v⟩ - D_v| <= rtol_fd max |⟨g_ad, v⟩| over the leaf's directions, or is below the rounding
  noise of (V3), λ raised to f's own measured rounding where f is a cancellation of large terms::

      η(h) = 10 ε λ / h,   λ = max(|f(θ)|, 1, |f(θ') - f(θ) - ⟨g_ad, θ' - θ⟩| / ε)                (V4)

- **Non-smoothness.** The one-sided slopes differ by ``c_v(h) = (f(θ+hv) - 2 f(θ) + f(θ-hv)) / h``,
  ``h ∂²f/∂v² + O(h³)`` where f is smooth, so it halves with h; across a kink it tends to the jump::

      smooth along v  ⇔  |c_v(h/2) - c_v(h)/2| <= 2 η(h/2)  and  |c_v(h/4) - c_v(h/2)/2| <= 2 η(h/4)   (V5)

  and a real error of g is the same at every step, while one made by rounding grows as h shrinks::

      conclusive along v  ⇔  |e(h/2) - e(h)| <= |e(h)|/4  and  |e(h/4) - e(h/2)| <= |e(h)|/4,  e = D_v - ⟨g, v⟩  (V6)

  Only the directions that fail (V3) are rerun, at h/2 and h/4, through the same compiled program. A
  failing direction that is not smooth or not conclusive is *flagged*, not failed.

- **Kinks** (``kinks="allow"``, the default). Where f has a kink at θ (``relu`` at 0), a backward may use
  another convention than jax's (``jax.nn.relu``'s derivative is 0 at 0, ``jnp.maximum(z, 0)``'s 0.5,
  ``jnp.abs``'s 1) and still be right. So each entry of E (at most ``KINK_ENTRIES`` in all, else the check
  fails: it never passes on a sample) is judged along its coordinate, from the one-sided slopes::

      s₊(h) = (f(θ + h eᵢ) - f(θ)) / h,   s₋(h) = (f(θ) - f(θ - h eᵢ)) / h,   J(h) = s₊(h) - s₋(h)
      kink  ⇔  not smooth (V5)  and  |J(h/4)| > 2 η(h/4)  and  |J(h/4) - J(h/2)| <= |J(h/2)|/4 + 2 η(h/4)   (V7)

  An entry of E where f is smooth, or not smooth but without a jump that settles (a kink near θ, not at
  it, where jax.grad is right), fails. At a kink, gᵢ passes if it lies, within the finite-difference
  tolerance, between the values a right convention can give::

      P = {s₊*, s₋*, g_adᵢ, s₊* + s₋* - g_adᵢ},   s±* = 2 s±(h/4) - s±(h/2)   (extrapolated to h → 0)   (V8)

  The set of right values is symmetric about the midpoint of the one-sided slopes, so jax's own value
  reflected through it is one too: where one coordinate moves several kinks in opposite directions, a
  right convention can lie outside [s₋*, s₊*], and the reflection finds it when jax's convention is an
  end of the range (``jax.nn.relu``). (Where jax's convention is the midpoint and the kinks' slopes add
  up, the range is wider than P: such a right value fails; ``kinks="strict"`` says nothing else.)
  **Off the kink**: at θ' = θ + 1e-4 (|θ| + 1) ⊙ u (u random signs), where kinks made by θ move away, the
  same backward must agree with jax.grad on E by (V2); an entry that still disagrees is judged again by
  (V7)-(V8) at θ' (a kink made by the data alone). This catches a wrong gradient, scaled or missing a
  term, that happens to lie in P at θ itself (at θ alone no test can do better)::

      off-kink  ⇔  gᵢ(θ') within τ(θ') of g_adᵢ(θ'), or at a kink of θ' within P(θ')                (V9)

  ``kinks="strict"`` fails every entry of E, saying which of them sit at kinks.

**A budget.** Finite differences cost 2 loss evaluations per direction. ``fd_budget`` evaluations are
spread over the leaves in proportion to √n (at least one direction each; a leaf whose share covers its n
entries gets every coordinate), evaluated ``DIRECTIONS_PER_CALL`` per call of one compiled program, a few
at a time (so memory stays that of a few perturbed copies of θ). The report says where the budget went.

The compiled programs are ``jax.jit``'s, with the loss function and θ's structure as static arguments:
a repeat call with the same function and shapes does not recompile, and ``h`` is an argument.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxmlp.report import Agreement, GradientReport, LeafCheck, LossCheck, agreement

PRECISIONS = {"float64": (1e-9, 1e-6), "float32": (1e-5, 1e-4)}  # (rtol_autodiff, rtol_fd) of a backward in ...
KINKS = ("allow", "strict")
FD_BUDGET = 768  # loss evaluations of the finite differences, 2 per direction
KINK_ENTRIES = 64  # entries of E judged by (V7)-(V9) at most; more fail the check
DIRECTIONS_PER_CALL = 64  # directions per call of the compiled finite-difference program
BATCH_NUMBERS = 1 << 18  # directions vmapped together × θ's size: large θ one direction at a time
OFF_KINK = 1e-4  # the relative size of the off-kink perturbation (V9)
KINK_JUMP = 1e6  # a change of g_ad under (V2)'s nudge this many times the leaf's median is a kink, not rounding
_EPS = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------- the programs

class _StaticFn:
    """``loss_fn`` as a static argument of ``jit``, equal for equal ``functools.partial`` objects (which
    Python compares by identity), so that a fresh ``partial(f, a=1)`` per call finds the program an equal
    one compiled. Anything else compares as itself."""

    def __init__(self, fn):
        self.fn, self.key = fn, _fn_key(fn)

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return isinstance(other, _StaticFn) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


def _fn_key(fn):
    if isinstance(fn, functools.partial):
        return ("partial", _fn_key(fn.func), tuple(_fn_key(a) for a in fn.args),
                tuple((k, _fn_key(v)) for k, v in sorted(fn.keywords.items())))
    return (type(fn), fn)  # hash() raises TypeError for what does not hash


def signs(seed, d, P: int, dtype):
    """P pseudo-random signs ±1 for direction ``d``: the top bit of a murmur3 finalizer of a counter
    (a hash of (seed, d, i)), a handful of integer ops where ``jax.random`` compiled slowly in a loop."""
    u = jnp.uint32
    x = jnp.arange(P, dtype=u) * u(0x9E3779B1) + jnp.asarray(d).astype(u) * u(0x85EBCA77) + u(seed) * u(0xC2B2AE3D)
    x = (x ^ (x >> 16)) * u(0x85EBCA6B)
    x = (x ^ (x >> 13)) * u(0xC2B2AE35)
    x = x ^ (x >> 16)
    return jnp.where(x >> 31 == 1, 1, -1).astype(dtype)


def _loss_of_flat(loss_fn, layout, static):
    """``f(flat θ, *traced args)``, with θ rebuilt from ``layout`` = (treedef, shapes) and the ``static``
    positional arguments (Python ints, bools, strings, None) put back where they were."""
    treedef, shapes = layout
    sizes = [math.prod(s) for s in shapes]
    offsets = np.cumsum([0] + sizes[:-1]).tolist()

    def f(flat, traced):
        theta = jax.tree_util.tree_unflatten(treedef, [flat[o:o + n].reshape(s)
                                                       for o, n, s in zip(offsets, sizes, shapes)])
        it = iter(traced)
        args = [dict(static)[i] if i in dict(static) else next(it) for i in range(len(traced) + len(static))]
        return loss_fn(theta, *args)

    return f


@functools.partial(jax.jit, static_argnames=("loss_fn", "layout", "static", "seed"))
def _reference(flat, traced, *, loss_fn, layout, static, seed):
    """``(f(θ), g_ad, |g_ad(θ') - g_ad(θ)|, f's rounding)`` with θ' = θ nudged by 4 ε relative: (V2), (V4)."""
    f = _loss_of_flat(loss_fn, layout, static)
    nudged = flat + 4 * _EPS * jnp.abs(flat) * signs(seed + 1, 0, flat.size, flat.dtype)
    values, grads = jax.vmap(jax.value_and_grad(f), in_axes=(0, None))(jnp.stack([flat, nudged]), traced)
    f0, g_ad = values[0], grads[0]
    jitter = jnp.abs(values[1] - f0 - g_ad @ (nudged - flat))  # f's rounding, first-order change taken off (V4)
    return f0, g_ad, jnp.abs(grads[1] - g_ad), jitter


@functools.partial(jax.jit, static_argnames=("loss_fn", "layout", "static", "seed", "batch"))
def _differences(flat, traced, G, leaf, coord, direction, h, *, loss_fn, layout, static, seed, batch):
    """f(θ ± h v) along one chunk of directions, with what (V3)-(V8) need of each: ``(f₊, f₋, t₊, t₋, G s / 2h,
    ⟨g_ad, skew⟩)``, t± the steps actually taken along v, s the central step, ``G`` the (2, P) stack of the
    checked gradient and jax.grad's. Direction k perturbs leaf ``leaf[k]``: along coordinate ``coord[k]``, or,
    where that is -1, along the pseudo-random ±1/√n vector of ``direction[k]``. The directions run ``batch``
    at a time (a ``lax.map``): vmapped forward passes with different weights ran slower than one after the
    other on CPU for large θ, faster for small ones."""
    f = _loss_of_flat(loss_fn, layout, static)
    sizes = jnp.asarray([math.prod(s) for s in layout[1]], jnp.int32)
    offsets = jnp.cumsum(sizes) - sizes
    idx = jnp.arange(flat.size)

    def one(jid):
        j, i, d = jid
        start, n = offsets[j], sizes[j]
        random_v = jnp.where((idx >= start) & (idx < start + n), signs(seed, d, flat.size, flat.dtype), 0)
        v = jnp.where(i >= 0, (idx == start + i).astype(flat.dtype), random_v / jnp.sqrt(n.astype(flat.dtype)))
        plus, minus = flat + h * v, flat - h * v  # rounded: a large |θ| moves by less than h
        f_plus, f_minus = f(plus, traced), f(minus, traced)
        step, skew = plus - minus, plus + minus - 2 * flat
        return f_plus, f_minus, v @ (plus - flat), v @ (flat - minus), G @ step / (2 * h), G[1] @ skew

    return jax.lax.map(one, (leaf, coord, direction), batch_size=batch)


def _batch(P: int) -> int:
    """Directions evaluated side by side (vmapped) inside :func:`_differences`: ``BATCH_NUMBERS`` over θ's size."""
    return int(max(1, min(DIRECTIONS_PER_CALL, BATCH_NUMBERS // max(P, 1))))


# ----------------------------------------------------------------------------------------- the problem

def to_float64(tree):
    """Floating leaves (and Python floats) to float64 jax arrays, other NumPy arrays to jax arrays (an
    immutable copy: a backward that writes into its arguments cannot change the reference's); Python
    ints, bools, strings and other leaves as they are."""
    def cast(a):
        if isinstance(a, float) or (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)):
            return jnp.asarray(a, jnp.float64)
        return jnp.asarray(a) if isinstance(a, np.ndarray) else a

    return jax.tree.map(cast, tree)


def _path(keys) -> str:
    return jax.tree_util.keystr(keys) or "(root)"  # a bare array as params has the empty path


@dataclass
class _Problem:
    """θ flattened, with what the programs and the report need to find each leaf in it."""

    loss_fn: object
    args: tuple
    paths: list
    shapes: tuple
    offsets: list
    sizes: list
    flat: np.ndarray
    layout: tuple
    static: tuple
    traced: tuple
    seed: int

    @classmethod
    def make(cls, loss_fn, params, args, seed):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [_path(p) for p, _ in leaves]
        for path, (_, leaf) in zip(paths, leaves):
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.complexfloating):
                raise TypeError(f"params leaf {path} is complex ({leaf.dtype}); the checker takes real floating "
                                f"leaves: split a complex parameter into its real and imaginary parts")
            if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"params leaf {path} must be a floating array to take a gradient with respect "
                                f"to, got {type(leaf).__name__} {getattr(leaf, 'dtype', '')}; pass it in args "
                                f"or bind it with functools.partial instead")
        shapes = tuple(tuple(leaf.shape) for _, leaf in leaves)
        sizes = [math.prod(s) for s in shapes]
        static = tuple((i, a) for i, a in enumerate(args) if isinstance(a, (bool, int, str, type(None))))
        traced = tuple(a for i, a in enumerate(args) if i not in dict(static))
        flat = np.concatenate([np.ravel(np.asarray(leaf)) for _, leaf in leaves]) if leaves else np.zeros((0,))
        return cls(_StaticFn(loss_fn), args, paths, shapes, np.cumsum([0] + sizes[:-1]).tolist(), sizes, flat,
                   (treedef, shapes), static, traced, seed)

    def leaves_of(self, flat) -> list:
        flat = np.asarray(flat)
        return [flat[o:o + n].reshape(s) for o, n, s in zip(self.offsets, self.sizes, self.shapes)]

    def locate(self, index):
        """``(leaf, coord)`` (int32 arrays) of the flat indices ``index`` of θ: which leaf, and where in it."""
        leaf = (np.searchsorted(np.asarray(self.offsets), index, side="right") - 1).astype(np.int32)
        return leaf, (index - np.asarray(self.offsets)[leaf]).astype(np.int32)

    def unflatten(self, flat):
        return jax.tree_util.tree_unflatten(self.layout[0], [jnp.asarray(a) for a in self.leaves_of(flat)])

    def reference(self, flat):
        """``(f0, g_ad, wobble, jitter)`` at ``flat`` (host arrays), from the compiled :func:`_reference`."""
        try:
            out = _reference(flat, self.traced, loss_fn=self.loss_fn, layout=self.layout, static=self.static,
                             seed=self.seed)
        except jax.errors.ConcretizationTypeError as e:
            raise TypeError("loss_fn must be traceable by jax.jit (the reference and its finite differences are "
                            "compiled): no Python control flow on array values; bind static options with "
                            "functools.partial") from e
        return tuple(np.asarray(a) for a in out)

    def differences(self, flat, G, leaf, coord, direction, h):
        """:func:`_differences` along every given direction, one fixed-size chunk per call (host arrays)."""
        n = len(leaf)
        if n == 0:
            return tuple(np.zeros((0,) + s) for s in ((), (), (), (), (2,), ()))
        chunk = DIRECTIONS_PER_CALL
        pad = -n % chunk
        arrays = [np.concatenate([a, np.repeat(a[-1:], pad)]).astype(np.int32) for a in (leaf, coord, direction)]
        parts = [_differences(flat, self.traced, G, *(a[s:s + chunk] for a in arrays), h,
                              loss_fn=self.loss_fn, layout=self.layout, static=self.static, seed=self.seed,
                              batch=_batch(self.flat.size))
                 for s in range(0, n + pad, chunk)]
        return tuple(np.concatenate([np.asarray(p[k]) for p in parts])[:n] for k in range(6))


# ----------------------------------------------------------------------------------------- the budget

def allocate(sizes, checkable, directions: int) -> list[int]:
    """Directions per leaf: ``directions`` spread in proportion to √n (n a leaf's entries), capped at n (its
    coordinates), at least one per checkable leaf; 0 for the others."""
    n = np.array([s if ok else 0 for s, ok in zip(sizes, checkable)], float)
    active = n > 0
    if not active.any():
        return [0] * len(sizes)

    def share(t):
        return np.where(active, np.minimum(n, np.maximum(1, np.floor(t * np.sqrt(n)))), 0)

    lo, hi = 0.0, float(directions) + 1.0
    for _ in range(60):  # the largest t whose shares fit the budget
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share(mid).sum() <= directions else (lo, mid)
    return [int(k) for k in share(lo)]


def _plan(sizes, checkable, fd_budget: int, seed: int):
    """``(leaf, coord, described)``: per direction its leaf and coordinate (-1: a random direction); per leaf
    what is checked, ``"all 6"`` or ``"16 dirs"``."""
    leaf, coord, described = [], [], []
    for j, (n, k) in enumerate(zip(sizes, allocate(sizes, checkable, fd_budget // 2))):
        if k == 0:
            described.append("-")
            continue
        whole = k >= n
        leaf += [j] * k
        coord += list(range(n)) if whole else [-1] * k
        described.append(f"all {n}" if whole else f"{k} dir{'s' if k > 1 else ''}")
    return np.asarray(leaf, np.int32), np.asarray(coord, np.int32), described


# ----------------------------------------------------------------------------------------- the check

def tolerances(precision, rtol_autodiff, rtol_fd) -> tuple:
    """``(rtol_autodiff, rtol_fd)``: the ``precision`` preset's, where not given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got precision={precision!r}")
    return (PRECISIONS[precision][0] if rtol_autodiff is None else rtol_autodiff,
            PRECISIONS[precision][1] if rtol_fd is None else rtol_fd)


def check_options(h, rtol_autodiff, rtol_fd, fd_budget, seed, kinks):
    """ValueError for a bad option of :func:`check` (and a warning for an h out of its useful range)."""
    for name, value in (("h", h), ("rtol_autodiff", rtol_autodiff), ("rtol_fd", rtol_fd)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    for name, value, low in (("fd_budget", fd_budget, 2), ("seed", seed, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not low <= value < 2 ** 31:
            raise ValueError(f"{name} must be an int in [{low}, 2**31), got {name}={value!r}")
    if kinks not in KINKS:
        raise ValueError(f"kinks must be one of {KINKS}, got kinks={kinks!r}")
    if not 1e-10 <= h <= 1e-4:
        warnings.warn(f"h={h:g} is outside [1e-10, 1e-4]: in float64, rounding (small h) or the O(h³) term of "
                      f"(V5) (large h) can make finite differences flag every direction as not conclusive",
                      stacklevel=3)


def _is_scalar(x) -> bool:
    try:
        a = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        return False
    return a.size == 1


def _returned(out, treedef):
    """``(loss, grads, swapped)`` from what backward_fn returned; a ``(grads, loss)`` pair is swapped back."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"backward_fn must return a pair (loss, grads), got {type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    value, grads = out
    if not _is_scalar(value) and _is_scalar(grads):
        try:
            if jax.tree_util.tree_structure(value) == treedef:
                return grads, value, True
        except Exception:  # noqa: BLE001 - not a pytree: not a swapped pair either
            pass
    return value, grads, False


def _structure_problem(g, ref_shape, ref_dtype):
    """Why leaf ``g`` cannot be compared with a reference of ``ref_shape``, or '' if it can."""
    if not hasattr(g, "shape") and not isinstance(g, (int, float, complex)):
        return f"not an array: {type(g).__name__}"
    g = np.asarray(g)
    if g.shape != ref_shape:
        return f"shape {g.shape} != {ref_shape}"
    if not jnp.issubdtype(g.dtype, jnp.inexact):  # jnp: NumPy does not know bfloat16 is floating
        return f"dtype {g.dtype} is not floating"
    if jnp.issubdtype(g.dtype, jnp.complexfloating):
        return f"dtype {g.dtype} is complex, the parameter's is {ref_dtype}"
    bad = ~np.isfinite(g)
    if bad.any():
        return f"{int(np.isnan(g).sum())} NaN and {int(np.isinf(g).sum())} inf entries"
    return ""


def _aligned(pb: _Problem, grads):
    """``(problems, extra, given, g_flat)``: per path why the leaf cannot be compared ('' if it can), the
    unexpected extra paths, the given leaves by path, and the comparable ones flattened (zeros elsewhere)."""
    try:
        leaves, unflattenable = jax.tree_util.tree_flatten_with_path(grads)[0], ""
        given = {_path(p): leaf for p, leaf in leaves}
    except Exception as e:  # noqa: BLE001 - e.g. a dict with keys of mixed types: a failing report, not a crash
        given, unflattenable = {}, f": grads is not a pytree jax can flatten ({type(e).__name__}: {e})"
    problems = {p: ("missing" + unflattenable if p not in given else _structure_problem(given[p], s, np.float64))
                for p, s in zip(pb.paths, pb.shapes)}
    extra = [p for p in given if p not in problems]
    g_flat = np.concatenate([np.ravel(np.asarray(given[p], np.float64)) if not problems[p] else np.zeros(n)
                             for p, n in zip(pb.paths, pb.sizes)]) if pb.paths else np.zeros((0,))
    return problems, extra, given, g_flat


def _rounding(wobble):
    """The largest change of a leaf's g_ad under the 4 ε nudge that is rounding, for (V2): changes more than
    ``KINK_JUMP`` times the leaf's median (nonzero) change are kinks the nudge crossed, left out."""
    moved = wobble[wobble > 0]
    if moved.size == 0:
        return 0.0
    typical = np.quantile(moved, 0.5, method="lower")
    return float(np.max(moved[moved <= KINK_JUMP * typical]))


def _tolerance(g_ad_leaves, wobble_leaves, rtol):
    """τ of (V2) per leaf."""
    floor = 64 * _EPS * max((float(np.max(np.abs(r), initial=0.0)) for r in g_ad_leaves), default=0.0)
    return [max(rtol * float(np.max(np.abs(r), initial=0.0)), floor, 4 * _rounding(np.ravel(w)))  # (V2)
            for r, w in zip(g_ad_leaves, wobble_leaves)]


def _loss_scale(f0, jitter) -> float:
    """λ of (V4): |f(θ)|, at least 1, or f's measured rounding where f is a cancellation of large terms."""
    return max(abs(float(f0)), 1.0, float(jitter) / _EPS)  # (V4)


def smooth_directions(lam, c_h, c_h2, c_h4, h):
    """(V5) per direction, from the curvatures at h, h/2 and h/4 (host arrays); ``lam`` is λ of (V4)."""
    eta = lambda s: 10 * _EPS * lam / s  # (V4)
    return (np.abs(c_h2 - c_h / 2) <= 2 * eta(h / 2)) & (np.abs(c_h4 - c_h2 / 2) <= 2 * eta(h / 4))  # (V5)


def converged(e_h, e_h2, e_h4):
    """(V6) per direction: whether the discrepancy e = D_v - ⟨g, v⟩ is the same at h, h/2 and h/4, to a
    quarter of itself. A real error of g does not depend on h; rounding noise in f grows as h shrinks."""
    tol = np.abs(e_h) / 4
    return (np.abs(e_h2 - e_h) <= tol) & (np.abs(e_h4 - e_h2) <= tol)  # (V6)


@dataclass
class _Kinks:
    """The judgement (V7)-(V8) of some coordinates: per entry, kink or not, and inside P or not."""

    kink: np.ndarray
    inside: np.ndarray
    central: np.ndarray  # D at h, the finite-difference estimate reported for the entry
    evaluations: int


def _judge_kinks(pb: _Problem, flat, f0, lam, G, g, g_ad, scale, leaf, coord, h, rtol_fd) -> _Kinks:
    """(V7)-(V8) along the coordinates (leaf, coord) at ``flat``: one-sided slopes at h, h/2, h/4."""
    out = {}
    for step in (h, h / 2, h / 4):
        f_plus, f_minus, t_plus, t_minus, _, _ = pb.differences(flat, G, leaf, coord, np.zeros_like(leaf), step)
        out[step] = ((f_plus - f0) / t_plus, (f0 - f_minus) / t_minus, (f_plus - f_minus) / (t_plus + t_minus))
    eta = lambda s: 10 * _EPS * lam / s  # (V4)
    jump = {s: out[s][0] - out[s][1] for s in out}
    smooth = smooth_directions(lam, jump[h], jump[h / 2], jump[h / 4], h)  # J(h) is (V5)'s c(h)
    settles = np.abs(jump[h / 4] - jump[h / 2]) <= np.abs(jump[h / 2]) / 4 + 2 * eta(h / 4)
    kink = ~smooth & (np.abs(jump[h / 4]) > 2 * eta(h / 4)) & settles  # (V7)
    s_plus = 2 * out[h / 4][0] - out[h / 2][0]  # extrapolated to h → 0
    s_minus = 2 * out[h / 4][1] - out[h / 2][1]
    points = np.stack([s_plus, s_minus, g_ad, s_plus + s_minus - g_ad])  # P of (V8)
    tol = rtol_fd * np.maximum(scale, np.max(np.abs(points[:2]), axis=0)) + 2 * eta(h / 4)
    low, high = points.min(axis=0) - tol, points.max(axis=0) + tol
    inside = kink & (g >= low) & (g <= high)  # (V8)
    return _Kinks(kink, inside, out[h][2], 6 * len(leaf))


def check(loss_fn, backward_fn, params, args, *, h: float = 1e-6, rtol_autodiff: float | None = None,
          rtol_fd: float | None = None, precision: str = "float64", kinks: str = "allow",
          fd_budget: int = FD_BUDGET, seed: int = 0) -> GradientReport:
    """Check ``backward_fn`` against ``jax.grad(loss_fn)`` and finite differences; see the module docstring.

    Args:
      loss_fn: the reference ``(params, *args) -> scalar``, traceable.
      backward_fn: ``(params, *args) -> (loss, grads)``, run as given (it need not be traceable).
      params, args: θ (any pytree of floating leaves) and the remaining positional arguments, both cast
        to float64 before anything runs.
      precision: ``"float64"`` (rtol_autodiff 1e-9, rtol_fd 1e-6) or ``"float32"`` (1e-5, 1e-4): the
        tolerances for a backward that computes in that precision; ``rtol_autodiff``/``rtol_fd`` override.
      kinks: ``"allow"`` (judge disagreements at kinks, (V7)-(V9)) or ``"strict"`` (fail them).
      fd_budget: loss evaluations of the finite differences (reruns and kink judgements come on top).

    Returns:
      A :class:`~jaxmlp.report.GradientReport`.
    """
    rtol_autodiff, rtol_fd = tolerances(precision, rtol_autodiff, rtol_fd)
    check_options(h, rtol_autodiff, rtol_fd, fd_budget, seed, kinks)
    with jax.enable_x64(True):
        params, args = to_float64((params, tuple(args)))
        pb = _Problem.make(loss_fn, params, args, seed)
        value, grads, swapped = _returned(backward_fn(params, *args), pb.layout[0])
        problems, extra, given, g_flat = _aligned(pb, grads)
        f0, g_ad, wobble, jitter = pb.reference(pb.flat)
        lam = _loss_scale(f0, jitter)
        G = np.stack([g_flat, g_ad])  # NumPy on the host: an eager jnp op would compile a program per shape
        ad = _autodiff(pb, problems, g_flat, g_ad, wobble, rtol_autodiff)
        fd = _finite_differences(pb, problems, G, f0, lam, h, rtol_fd, fd_budget, seed)
        judged = _kink_judgement(pb, backward_fn, ad, G, g_flat, g_ad, f0, lam, h, rtol_autodiff, rtol_fd, kinks)
        _fd_at_worst(pb, ad, judged, G, h)
        rows = _rows(pb, problems, given, g_flat, g_ad, ad, fd, judged, h, rtol_autodiff, rtol_fd, precision,
                     f0.dtype)
    rows += [LeafCheck(p, False, "unexpected extra leaf (no such parameter)", tuple(np.shape(given[p])))
             for p in extra]
    spent = {"directions": int(fd["n"]), "evaluations": 2 * int(fd["n"]), "reruns": fd["reruns"],
             "kink_evaluations": judged["evaluations"], "off_kink": judged["off_kink"]}
    return GradientReport(float(f0), _check_loss(value, float(f0), rtol_autodiff, swapped), tuple(rows),
                          rtol_autodiff, rtol_fd, h, spent)


def _autodiff(pb, problems, g_flat, g_ad, wobble, rtol):
    """(V2): per leaf τ and the flat indices of E (the entries that disagree with jax.grad)."""
    tau = _tolerance(pb.leaves_of(g_ad), pb.leaves_of(wobble), rtol)
    err = np.abs(g_flat - g_ad)
    E = [np.flatnonzero(e > t) + o if not problems[p] else np.zeros(0, int)
         for p, e, t, o in zip(pb.paths, pb.leaves_of(err), tau, pb.offsets)]
    return {"tau": tau, "err": err, "E": E}


def _finite_differences(pb, problems, G, f0, lam, h, rtol_fd, fd_budget, seed):
    """(V3)-(V6) along the budget's directions: per direction D, ⟨g, v⟩, the failures and the flags."""
    leaf, coord, described = _plan(pb.sizes, [not problems[p] for p in pb.paths], fd_budget, seed)
    direction = np.arange(len(leaf), dtype=np.int32)
    f_plus, f_minus, t_plus, t_minus, Gv, skew = pb.differences(pb.flat, G, leaf, coord, direction, h)
    D = (f_plus - f_minus) / (2 * h)  # (V3)
    g_v, gad_v = Gv[:, 0], Gv[:, 1]
    moved = (t_plus + t_minus) > 0  # h is above the resolution of θ here
    scale = np.zeros(len(pb.sizes))
    np.maximum.at(scale, leaf, np.abs(gad_v))  # per leaf, max |⟨g_ad, v⟩| over its directions
    scale = scale[leaf]
    eta = 10 * _EPS * lam / h  # (V4)
    err = np.abs(g_v - D)
    failing = ~((err <= rtol_fd * scale) | (err <= eta)) | ~moved  # NaN fails here
    real, reruns = failing & moved, 0
    if failing.any():  # (V5)-(V6) for the failing directions only, through the same program
        rerun = np.flatnonzero(failing & moved)
        c = (f_plus - 2 * f0 + f_minus - skew) / h  # (V5), less the first-order part of unequal steps
        cs, es = [c[rerun]], [D[rerun] - g_v[rerun]]
        for step in (h / 2, h / 4):
            fp, fm, _, _, gv, sk = pb.differences(pb.flat, G, leaf[rerun], coord[rerun], direction[rerun], step)
            cs.append((fp - 2 * f0 + fm - sk) / step)
            es.append((fp - fm) / (2 * step) - gv[:, 0])
        reruns = 4 * len(rerun)
        real = np.zeros_like(failing)
        real[rerun] = smooth_directions(lam, *cs, h) & converged(*es)
    return {"leaf": leaf, "coord": coord, "described": described, "D": D, "g_v": g_v, "scale": scale,
            "failing": failing, "real": real, "moved": moved, "n": len(leaf), "reruns": reruns}


def _kink_judgement(pb, backward_fn, ad, G, g_flat, g_ad, f0, lam, h, rtol_autodiff, rtol_fd, kinks):
    """(V7)-(V9) for the entries of E: which are excused as kinks, and which fail off the kink."""
    E = np.concatenate(ad["E"]) if ad["E"] else np.zeros(0, int)
    none = np.zeros(0, int)
    result = {"excused": none, "at_kink": none, "inside": none, "off_kink_fail": none, "evaluations": 0,
              "off_kink": False, "too_many": len(E) > KINK_ENTRIES, "judged": {}}
    if len(E) == 0 or len(E) > KINK_ENTRIES:
        return result
    leaf, coord = pb.locate(E)
    scale = np.array([float(np.max(np.abs(r), initial=0.0)) for r in pb.leaves_of(g_ad)])[leaf]
    at = _judge_kinks(pb, pb.flat, f0, lam, G, g_flat[E], g_ad[E], scale, leaf, coord, h, rtol_fd)
    result.update(at_kink=E[at.kink], inside=E[at.inside], evaluations=at.evaluations,
                  judged=dict(zip(E.tolist(), at.central)))
    if kinks == "strict" or not at.inside.any():
        return result
    # (V9): the same backward at θ' = θ perturbed, against jax.grad there, on the entries excused at θ.
    inside = E[at.inside]
    u = np.random.default_rng(pb.seed + 2).choice([-1.0, 1.0], pb.flat.size)
    flat_off = pb.flat + OFF_KINK * (np.abs(pb.flat) + 1) * u
    value, grads, _ = _returned(backward_fn(pb.unflatten(flat_off), *pb.args), pb.layout[0])
    problems, _, _, g_off = _aligned(pb, grads)
    f0_off, gad_off, wobble_off, jitter_off = pb.reference(flat_off)
    tau = np.repeat(_tolerance(pb.leaves_of(gad_off), pb.leaves_of(wobble_off), rtol_autodiff), pb.sizes)
    agrees = np.abs(g_off[inside] - gad_off[inside]) <= tau[inside]
    agrees &= np.array([not problems[pb.paths[j]] for j in leaf[at.inside]], bool)
    result["off_kink"] = True
    if not agrees.all():  # still disagreeing at θ': a kink that the data alone makes, or a wrong gradient
        rest = ~agrees
        lam_off = _loss_scale(f0_off, jitter_off)
        G_off = np.stack([g_off, gad_off])
        again = _judge_kinks(pb, flat_off, f0_off, lam_off, G_off, g_off[inside][rest], gad_off[inside][rest],
                             scale[at.inside][rest], leaf[at.inside][rest], coord[at.inside][rest], h, rtol_fd)
        result["evaluations"] += again.evaluations
        agrees[rest] = again.inside
    result["excused"], result["off_kink_fail"] = inside[agrees], inside[~agrees]
    return result


def _fd_at_worst(pb, ad, judged, G, h):
    """A central difference along the worst failing entry of each leaf that has none yet, for the report."""
    excused = set(judged["excused"].tolist())
    need = []
    for E in ad["E"]:
        failing = [i for i in E.tolist() if i not in excused]
        if failing and (i := max(failing, key=lambda i: ad["err"][i])) not in judged["judged"]:
            need.append(i)
    if need:
        need = np.asarray(need)
        leaf, coord = pb.locate(need)
        f_plus, f_minus, t_plus, t_minus, _, _ = pb.differences(pb.flat, G, leaf, coord, np.zeros_like(leaf), h)
        judged["judged"].update(zip(need.tolist(), (f_plus - f_minus) / (t_plus + t_minus)))
        judged["evaluations"] += 2 * len(need)


def _rows(pb, problems, given, g_flat, g_ad, ad, fd, judged, h, rtol_autodiff, rtol_fd, precision, ref_dtype):
    rows = []
    for j, (path, shape, offset, n) in enumerate(zip(pb.paths, pb.shapes, pb.offsets, pb.sizes)):
        if problems[path]:
            rows.append(LeafCheck(path, False, problems[path], shape))
            continue
        here = slice(offset, offset + n)
        E = ad["E"][j]
        excused = np.intersect1d(judged["excused"], E)
        failing_E = np.setdiff1d(E, excused)
        reasons = []
        if not np.all(np.isfinite(g_ad[here])):
            reasons.append("the reference jax.grad(loss_fn) is not finite here")
        if len(failing_E):
            rel = float(np.max(ad["err"][failing_E])) / max(float(np.max(np.abs(g_ad[here]))), 1e-300)
            reason = f"disagrees with jax.grad at {len(failing_E)} of {n} entries (max rel {rel:.2e} > {rtol_autodiff:g})"
            dtype = np.asarray(given[path]).dtype
            if jnp.finfo(dtype).eps > _EPS and precision == "float64":
                reason += "; the gradient came back as " + f"{dtype}: the check needs the backward to compute in float64 " \
                          "(or precision='float32')"
            if ref_dtype != np.float64:
                reason += f"; the reference loss_fn computes in {ref_dtype}, not float64"
            reason += _kink_note(failing_E, judged)
            reasons.append(reason)
        mine = fd["leaf"] == j
        fd_agreement, flagged = None, 0
        if mine.any():
            err = np.abs(fd["g_v"][mine] - fd["D"][mine])
            scale = fd["scale"][mine][0]
            fd_agreement = Agreement(float(np.max(err)), _ratio(np.max(err), scale),
                                     agreement(fd["g_v"][mine], fd["D"][mine]).cosine)
            real = fd["real"][mine]
            flagged = int((fd["failing"][mine] & ~real).sum())
            if not fd["moved"][mine].all():
                reasons.append(f"h={h:g} does not move θ here (below its float64 resolution): finite differences "
                               f"check nothing; use a larger h")
            elif real.any():
                worst = _ratio(np.max(err[real]), scale)
                reasons.append(f"disagrees with finite differences along {int(real.sum())} smooth direction(s) "
                               f"(max rel {worst:.2e} > {rtol_fd:g})")
        worst = _worst(pb, j, here, failing_E, g_flat, g_ad, ad, fd, judged)
        ok = not reasons
        if not ok and worst[0] is not None:
            fd_text = "" if worst[3] is None else f", finite differences {worst[3]:.6g}"
            reasons.append(f"worst entry {worst[0]}: {worst[1]:.6g} (jax.grad {worst[2]:.6g}{fd_text})")
        if ok and len(excused):
            reasons.append(f"kink: convention differs from jax.grad at {len(excused)} entries, all within the "
                           f"one-sided slopes, and agrees off the kink")
        rows.append(LeafCheck(path, ok, "; ".join(reasons), shape, agreement(g_flat[here], g_ad[here]),
                              fd_agreement, fd["described"][j], flagged, len(excused), *worst))
    return rows


def _kink_note(failing_E, judged) -> str:
    """What the kink judgement found about the failing entries of a leaf, for its reason."""
    if judged["too_many"]:
        return (f"; more entries disagree in all than the {KINK_ENTRIES} the kink judgement examines (V7): "
                f"none is excused as a kink")
    kink, inside, off = (set(judged[k].tolist()) for k in ("at_kink", "inside", "off_kink_fail"))
    count = lambda test: sum(bool(test(i)) for i in failing_E.tolist())
    parts = []
    if n := count(lambda i: i in kink and i in inside and i not in off):
        parts.append(f"{n} at kinks of the loss, within the one-sided slopes (kinks='allow' judges those)")
    if n := count(lambda i: i in kink and i not in inside):
        parts.append(f"{n} at kinks of the loss but outside the one-sided slopes (V8)")
    if n := count(lambda i: i in off):
        parts.append(f"{n} within the one-sided slopes at a kink, but off the kink (θ moved by {OFF_KINK:g}(|θ| + 1)) "
                     f"still not jax.grad's (V9)")
    if parts and (n := count(lambda i: i not in kink)):
        parts.append(f"{n} where the loss has no kink at θ")
    return "; of these, " + ", ".join(parts) if parts else ""


def _worst(pb, j, here, failing_E, g_flat, g_ad, ad, fd, judged):
    """``(worst_index, worst_value, worst_reference, worst_fd)`` of leaf ``j``: its largest disagreement with
    jax.grad (among the failing entries, if any), and a finite difference there if one was taken."""
    if here.stop == here.start:  # an empty leaf has no entry
        return None, None, None, None
    err = ad["err"][here]
    flat_i = int(failing_E[np.argmax(ad["err"][failing_E])]) if len(failing_E) else here.start + int(np.argmax(err))
    i = flat_i - here.start
    fd_at = judged["judged"].get(flat_i)
    on_coord = (fd["leaf"] == j) & (fd["coord"] == i)
    if fd_at is None and on_coord.any():
        fd_at = float(fd["D"][on_coord][0])
    index = tuple(int(k) for k in np.unravel_index(i, pb.shapes[j])) if pb.shapes[j] else ()
    return index, float(g_flat[flat_i]), float(g_ad[flat_i]), None if fd_at is None else float(fd_at)


def _ratio(err, scale) -> float:
    return 0.0 if err == 0 else (float(err / scale) if scale > 0 else float("inf"))


def _check_loss(value, f0: float, rtol: float, swapped: bool) -> LossCheck:
    if swapped:
        v = float(np.asarray(value, np.float64).reshape(()))
        return LossCheck(v, f0, abs(v - f0), False, "backward_fn returned (grads, loss), not (loss, grads): the pair is "
                         "swapped (the rows below check it swapped back)")
    try:
        v = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return LossCheck(float("nan"), f0, float("inf"), False, f"not a number: {type(value).__name__}")
    if v.size != 1:
        return LossCheck(float("nan"), f0, float("inf"), False, f"shape {v.shape}, expected a scalar")
    v = float(v.reshape(()))
    err = abs(v - f0)
    ok = err <= rtol * abs(f0) + 10 * _EPS  # (V1)
    reason = "" if ok else f"{v:.10g} != loss_fn's {f0:.10g} (abs err {err:.2e})"
    return LossCheck(v, f0, err, ok, reason)


def finite_difference_grads(loss_of_params, params, h: float = 1e-6):
    """Central finite differences (V3) along every coordinate of ``params``, as a params pytree.

    All 2P evaluations run in one compiled ``lax.map``, at most ``BATCH_NUMBERS`` numbers of perturbed
    parameters at a time, so that memory stays bounded however many parameters there are.
    """
    flat, unravel = ravel_pytree(params)
    f = lambda v: loss_of_params(unravel(v))
    one_direction = lambda i: (f(flat.at[i].add(h)) - f(flat.at[i].add(-h))) / (2 * h)  # (V3)
    fd = jax.jit(lambda idx: jax.lax.map(one_direction, idx, batch_size=_batch(flat.size)))(jnp.arange(flat.size))
    return unravel(fd)
