"""Verifying the gradient of any function of a pytree: against ``jax.grad`` and finite differences.

This module knows pytrees and nothing of MLPs; :mod:`jaxmlp.gradcheck` adds the MLP extras (kink
flags, layer-wise deltas, the symmetry diagnostic) on top of it.

A user brings a reference loss ``f(θ, *args) -> scalar`` and a backward ``(θ, *args) -> (L, g)`` to
check (a hand-derived one, or ``jax.value_and_grad`` of a function with a ``custom_vjp`` rule). Every
comparison runs in float64. With ε the float64 machine epsilon, λ the loss scale of (V4) and ``h``
the finite-difference step:

- **Structure.** ``g`` must have a floating leaf, of the same shape, at every path of θ, and no other
  leaf; every leaf must be finite. Anything else fails the leaf, with its path and the reason.
- **The loss value**::

      |L - f(θ)| <= rtol_autodiff |f(θ)| + 10 ε                                                  (V1)

- **Autodiff**, leaf by leaf, with ``g_ad = jax.grad(f)(θ, *args)``: relative to the leaf's own
  largest entry, or below a rounding floor: 64 ε of the largest entry of the whole gradient, or four
  times the change of the leaf's g_ad when θ is nudged by 4 ε relative (θ' = θ ± 4 ε |θ|), which is
  the scale of g's rounding where g_ad is a cancellation (at a least-squares optimum, say)::

      max |g - g_ad| <= rtol_autodiff max |g_ad|
                     or <= max(64 ε max_leaves max |g_ad|,  4 max |g_ad(θ') - g_ad(θ)|)          (V2)

- **Finite differences**, along directions v of one leaf at a time (a coordinate e_i for a leaf of
  at most ``fd_max_coords`` entries, else ``fd_directions`` random unit vectors ±1/√n, plus
  ``fd_samples`` random coordinates), compared with the directional derivative ⟨g, v⟩::

      D_v(h) = (f(θ + h v) - f(θ - h v)) / 2h,   error O(h²) + O(ε λ / h)                       (V3)

  compared with ⟨g, s⟩ / 2h, s = fl(θ + h v) - fl(θ - h v) the step actually taken (for |θ| ≥ 1e5,
  θ ± h rounds and s is not 2 h v). A leaf passes when, over its directions,
  ``max |⟨g, v⟩ - D_v| <= rtol_fd max |⟨g_ad, v⟩|``, or each error is below the rounding noise of (V3),
  with λ raised to f's own measured rounding where f is a cancellation of large terms (at the nudged
  θ' of (V2))::

      η(h) = 10 ε λ / h,   λ = max(|f(θ)|, 1, |f(θ') - f(θ) - ⟨g_ad, θ' - θ⟩| / ε)                (V4)

- **Non-smoothness**, detected from the finite differences themselves. The one-sided slopes differ
  by the curvature ``c_v(h) = (f(θ+hv) - 2 f(θ) + f(θ-hv)) / h``, which is ``h ∂²f/∂v² + O(h³)``
  where f is smooth, so it halves with h; across a kink it tends to the jump of the slope instead::

      smooth along v  ⇔  |c_v(h/2) - c_v(h)/2| <= 2 η(h/2)  and  |c_v(h/4) - c_v(h/2)/2| <= 2 η(h/4)   (V5)

  Two halvings, because one can be fooled: a kink at distance h/3 gives c(h/2) = c(h)/2. (The
  unequal steps of large |θ| add ⟨g_ad, fl(θ+hv) + fl(θ-hv) - 2θ⟩ to the numerator, taken off.)
  A bracket test (is ⟨g, v⟩ between the one-sided slopes?) is not used: a random direction through
  several units sitting on a kink is not bracketed by them.
- **Convergence.** A real error of g is the same at every step; an error made by rounding noise in f
  (a loss that is a cancellation of large terms) grows as h shrinks. With e(h) = D_v(h) - ⟨g, v⟩::

      conclusive along v  ⇔  |e(h/2) - e(h)| <= |e(h)|/4  and  |e(h/4) - e(h/2)| <= |e(h)|/4      (V6)

  (V5) and (V6) run only when (V3) fails somewhere (the same compiled program at h/2 and h/4). A
  failing direction that is not smooth (V5) or not conclusive (V6) is *flagged*, not failed: finite
  differences mean nothing there, while (V2) still judges every entry.

Finite differences cost 2 evaluations of f per direction, all of them in one compiled ``lax.map`` in
chunks whose perturbed copies of θ fit in ``FD_BUDGET`` numbers, so memory does not grow with the
number of directions. The program is ``jax.jit``'s, with the loss function and θ's structure as static
arguments: a repeat call with the same function and shapes does not recompile.
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

FD_BUDGET = 1 << 21  # directions per chunk × θ's size (each direction holds θ + hv and θ - hv: 2 of those)
FD_MAX_CHUNK = 16  # directions per chunk at most: wider vmaps ran slower on CPU (batched small matmuls)
_EPS = float(np.finfo(np.float64).eps)


# ------------------------------------------------------------------------------- finite differences

def finite_difference_grads(loss_of_params, params, h: float = 1e-6):
    """Central finite differences (V3) along every coordinate of ``params``, as a params pytree.

    All 2P evaluations run in one compiled ``lax.map``, in chunks of at most ``FD_BUDGET`` numbers of
    perturbed parameters, so that memory stays bounded however many parameters there are.
    """
    flat, unravel = ravel_pytree(params)
    f = lambda v: loss_of_params(unravel(v))
    one_direction = lambda i: (f(flat.at[i].add(h)) - f(flat.at[i].add(-h))) / (2 * h)  # (V3)
    chunk = _chunk(flat.size)
    fd = jax.jit(lambda idx: jax.lax.map(one_direction, idx, batch_size=chunk))(jnp.arange(flat.size))
    return unravel(fd)


def _chunk(P: int) -> int:
    return int(max(1, min(FD_MAX_CHUNK, FD_BUDGET // max(P, 1))))


@dataclass(frozen=True)
class Directions:
    """The finite-difference directions of every leaf, as arrays a compiled program takes.

    Direction d perturbs leaf ``leaf[d]`` only: along coordinate ``coord[d]``, or, where ``coord[d] < 0``,
    along a pseudo-random ±1/√n vector, :func:`signs` of direction d. ``offset``/``size`` locate each leaf in
    the flattened θ.
    """

    leaf: np.ndarray
    coord: np.ndarray
    offset: tuple[int, ...]
    size: tuple[int, ...]
    described: tuple[str, ...]  # per leaf, what is checked: "all 6", "16 dirs", "16 dirs + 8 coords", ...


def layout(shapes):
    """``(offsets, sizes)`` of leaves of ``shapes`` in the flattened θ."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    return [int(o) for o in np.cumsum([0] + sizes[:-1])] if sizes else [], sizes


def directions(shapes, checkable, *, fd_max_coords: int, fd_directions: int, fd_samples: int, seed: int = 0):
    """Build :class:`Directions` for leaves of ``shapes`` (only those marked ``checkable``)."""
    rng = np.random.default_rng(seed)
    leaf, coord, described = [], [], []
    offset, size = layout(shapes)
    for j, (n, ok) in enumerate(zip(size, checkable)):
        if not ok or n == 0:
            described.append("-")
            continue
        if n <= fd_max_coords:
            picks, n_rand = np.arange(n), 0
            described.append(f"all {n}")
        else:
            picks = np.sort(rng.choice(n, size=min(fd_samples, n), replace=False))
            n_rand = fd_directions
            described.append(f"{n_rand} dirs" + (f" + {len(picks)} coords" if len(picks) else ""))
        leaf += [j] * (n_rand + len(picks))
        coord += [-1] * n_rand + [int(i) for i in picks]
    return Directions(np.asarray(leaf, np.int32), np.asarray(coord, np.int32), tuple(offset), tuple(size),
                      tuple(described))


def signs(seed, d, P: int, dtype):
    """P pseudo-random signs ±1 for direction ``d``: the top bit of a murmur3 finalizer of a counter
    (a hash of (seed, d, i)), which compiles to a handful of integer ops where ``jax.random``'s
    threefry compiled for over a second inside the finite-difference loop."""
    u = jnp.uint32
    x = jnp.arange(P, dtype=u) * u(0x9E3779B1) + d.astype(u) * u(0x85EBCA77) + u(seed) * u(0xC2B2AE3D)
    x = (x ^ (x >> 16)) * u(0x85EBCA6B)
    x = (x ^ (x >> 13)) * u(0xC2B2AE35)
    x = x ^ (x >> 16)
    return jnp.where(x >> 31 == 1, 1, -1).astype(dtype)


def fd_evaluations(f, f0, flat, unravel, args, G, dirs, seed: int, h):
    """Traceable: ``(D_v(h) (V3), c_v(h) (V5), G v)`` along every direction v, given ``f0 = f(θ)`` and
    gradients ``G`` of shape (k, P) (the checked one and autodiff's) to take directional derivatives of.

    ``dirs = (leaf, coord, offset, size)`` as in :class:`Directions`, with the number of directions a
    multiple of ``_chunk(P)``. ``f(θ, *args)`` is evaluated at θ ± h v one chunk of directions at a time
    (a ``vmap`` inside a ``lax.map``), so that at most ``_chunk(P)`` perturbed copies of θ exist at once,
    however many directions there are.
    """
    leaf, coord, offset, size = dirs
    P = flat.size
    idx = jnp.arange(P)
    steps = jnp.stack([h, -h]).astype(flat.dtype)

    def one(d, j, i):
        start, n = offset[j], size[j]
        random_v = jnp.where((idx >= start) & (idx < start + n), signs(seed, d, P, flat.dtype), 0)
        v = jnp.where(i >= 0, (idx == start + i).astype(flat.dtype), random_v / jnp.sqrt(n.astype(flat.dtype)))
        theta = flat[None, :] + steps[:, None] * v[None, :]  # θ ± h v, rounded: large |θ| moves by less than h
        f_plus, f_minus = jax.vmap(lambda t: f(unravel(t), *args))(theta)  # one traced f, not two
        step, skew = theta[0] - theta[1], theta[0] + theta[1] - 2 * flat  # the steps actually taken
        D = (f_plus - f_minus) / (2 * h)  # (V3)
        c = (f_plus - 2 * f0 + f_minus - G[-1] @ skew) / h  # (V5), less the first-order part of unequal steps
        moved = jnp.any(step != 0).astype(flat.dtype)  # 0 where h is below the resolution of θ
        return D, c, jnp.concatenate([G @ step / (2 * h), moved[None]])  # ⟨g, v⟩ along the step taken

    n_dirs = leaf.shape[0]
    if n_dirs == 0:  # every leaf failed its structure check: nothing to perturb
        empty = jnp.zeros((0,), flat.dtype)
        return empty, empty, jnp.zeros((0, G.shape[0] + 1), flat.dtype)
    chunk = min(_chunk(P), n_dirs)
    batched = (t.reshape(n_dirs // chunk, chunk) for t in (jnp.arange(n_dirs), leaf, coord))
    D, c, Gv = jax.lax.map(lambda t: jax.vmap(one)(*t), tuple(batched))
    return D.ravel(), c.ravel(), Gv.reshape(n_dirs, G.shape[0] + 1)


def pad_directions(leaf, coord, P: int):
    """Repeat the last direction until their number is a multiple of ``_chunk(P)`` (so the compiled
    loop has no remainder to compile apart); the caller drops the extra results."""
    n = leaf.size
    chunk = min(_chunk(P), max(n, 1))
    extra = -n % chunk
    if n == 0 or extra == 0:
        return leaf, coord
    return np.concatenate([leaf, np.repeat(leaf[-1:], extra)]), np.concatenate([coord, np.repeat(coord[-1:], extra)])


def smooth_directions(lam, c_h, c_h2, c_h4, h):
    """(V5) per direction, from the curvatures at h, h/2 and h/4 (host arrays); ``lam`` is λ of (V4)."""
    eta = lambda s: 10 * _EPS * lam / s  # (V4)
    return (np.abs(c_h2 - c_h / 2) <= 2 * eta(h / 2)) & (np.abs(c_h4 - c_h2 / 2) <= 2 * eta(h / 4))  # (V5)


# ------------------------------------------------------------------------------------ the engine

def _reference_program(loss_fn, treedef, shapes, seed, flat, args, g_flat, leaf, coord, h):
    """``(jax.grad(f)(θ) flattened, f(θ), D_v (V3), c_v (V5), [⟨g, v⟩, ⟨g_ad, v⟩], |Δg_ad|)`` for the
    directions (leaf, coord); |Δg_ad| is how much jax.grad moves when θ is nudged by 4 ε relative (V2)."""
    offsets, sizes = layout(shapes)

    def unravel(v):
        return jax.tree_util.tree_unflatten(treedef, [v[o:o + n].reshape(s)
                                                      for o, n, s in zip(offsets, sizes, shapes)])

    def value_and_flat_grad(theta):
        value, grads = jax.value_and_grad(loss_fn)(unravel(theta), *args)
        return value, (jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(grads)]) if sizes else theta)

    nudged = flat + 4 * _EPS * jnp.abs(flat) * signs(seed + 1, jnp.zeros((), jnp.int32), flat.size, flat.dtype)
    values, grads = jax.vmap(value_and_flat_grad)(jnp.stack([flat, nudged]))  # θ and θ nudged by 4 ε: (V2)
    f0, g_ad, wobble = values[0], grads[0], jnp.abs(grads[1] - grads[0])
    jitter = jnp.abs(values[1] - f0 - g_ad @ (nudged - flat))  # f's rounding, first-order change taken off (V4)
    dirs = (leaf, coord, jnp.asarray(offsets, jnp.int32), jnp.asarray(sizes, jnp.int32))
    return (g_ad, f0, *fd_evaluations(loss_fn, f0, flat, unravel, args, jnp.stack([g_flat, g_ad]), dirs, seed, h),
            wobble, jitter)


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
    return (type(fn), fn)  # raises TypeError at hash() for what does not hash


def _program(loss_fn, treedef, shapes, seed, static=()):
    """:func:`_reference` compiled for ``loss_fn`` and θ's structure, by ``jax.jit`` with them as static
    arguments: jit's own cache serves a repeat call with the same function and shapes; ``h`` is traced, so
    h/2 and h/4 (V5) run the same program.

    ``static`` holds the positional arguments that are Python ints, bools, strings or None, as
    ``(position, value)``: they are closed over (a size or a flag stays a Python value, as under
    ``jit``'s ``static_argnums``). A ``loss_fn`` that does not hash gets a fresh (uncached) program;
equal ``functools.partial`` objects count as one function (:class:`_StaticFn`).
    """
    statics = dict(loss_fn=_StaticFn(loss_fn), treedef=treedef, shapes=shapes, seed=seed, static=static)
    try:
        hash(statics["loss_fn"])
    except TypeError:
        return jax.jit(functools.partial(_reference, **statics))
    return functools.partial(_compiled_reference, **statics)


def _reference(flat, args, g_flat, leaf, coord, h, *, loss_fn, treedef, shapes, seed, static):
    """:func:`_reference_program` with the ``static`` positional arguments of ``loss_fn`` closed over (see
    :func:`_program`): the function that is compiled."""
    if static:
        fixed, plain = dict(static), loss_fn

        def loss_fn(theta, *traced):
            it = iter(traced)
            return plain(theta, *(fixed[i] if i in fixed else next(it) for i in range(len(traced) + len(fixed))))

    return _reference_program(loss_fn, treedef, shapes, seed, flat, args, g_flat, leaf, coord, h)


_compiled_reference = jax.jit(_reference, static_argnames=("loss_fn", "treedef", "shapes", "seed", "static"))


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


def _leaves_with_paths(tree):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path(p): leaf for p, leaf in leaves}


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


def check(loss_fn, backward_fn, params, args, *, h: float = 1e-6, rtol_autodiff: float = 1e-9,
          rtol_fd: float = 1e-6, fd_max_coords: int = 256, fd_directions: int = 16, fd_samples: int = 0,
          seed: int = 0, fd_skip=None, near_kink=None) -> GradientReport:
    """Check ``backward_fn`` against ``jax.grad(loss_fn)`` and finite differences; see the module docstring.

    Args:
      loss_fn: the reference ``(params, *args) -> scalar``, traceable.
      backward_fn: ``(params, *args) -> (loss, grads)``, run as given (it need not be traceable).
      params, args: θ (any pytree of floating leaves) and the remaining positional arguments, both cast
        to float64 before anything runs.
      fd_skip: optional ``path -> bool``: leaves whose finite differences are not judged (the MLP's
        kink flags (G2)).
      near_kink: optional ``path -> int`` shown in the report.

    Returns:
      A :class:`GradientReport`.
    """
    check_options(h, rtol_autodiff, rtol_fd, fd_max_coords, fd_directions, fd_samples, seed)
    with jax.enable_x64(True):
        params, args = to_float64((params, tuple(args)))
        ref_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [_path(p) for p, _ in ref_leaves]
        leaves = [leaf for _, leaf in ref_leaves]
        for path, leaf in zip(paths, leaves):
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.complexfloating):
                raise TypeError(f"params leaf {path} is complex ({leaf.dtype}); the checker takes real floating "
                                f"leaves: split a complex parameter into its real and imaginary parts")
            if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"params leaf {path} must be a floating array to take a gradient with respect "
                                f"to, got {type(leaf).__name__} {getattr(leaf, 'dtype', '')}; pass it in args "
                                f"or bind it with functools.partial instead")
        shapes = tuple(tuple(leaf.shape) for leaf in leaves)

        out = backward_fn(params, *args)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"backward_fn must return a pair (loss, grads), got {type(out).__name__}"
                            + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        value, grads = out
        try:
            given, unflattenable = _leaves_with_paths(grads), ""
        except Exception as e:  # e.g. a dict with keys of mixed types: still a failing report, not a crash
            given, unflattenable = {}, f": grads is not a pytree jax can flatten ({type(e).__name__}: {e})"
        problems = {p: ("missing" + unflattenable if p not in given else _structure_problem(given[p], s, leaf.dtype))
                    for p, s, leaf in zip(paths, shapes, leaves)}
        extra = [p for p in given if p not in problems]
        aligned = [np.asarray(given[p], leaf.dtype) if not problems[p] else np.zeros(s, leaf.dtype)
                   for p, s, leaf in zip(paths, shapes, leaves)]

        dirs = directions(shapes, [not problems[p] for p in paths], fd_max_coords=fd_max_coords,
                          fd_directions=fd_directions, fd_samples=fd_samples, seed=seed)
        static = tuple((i, a) for i, a in enumerate(args) if isinstance(a, (bool, int, str, type(None))))
        traced = tuple(a for i, a in enumerate(args) if i not in dict(static))
        flat = jnp.concatenate([jnp.ravel(leaf) for leaf in leaves]) if leaves else jnp.zeros((0,))
        g_flat = jnp.concatenate([jnp.ravel(jnp.asarray(a)) for a in aligned]) if aligned else jnp.zeros((0,))
        leaf_ids, coords = pad_directions(dirs.leaf, dirs.coord, flat.size)
        n = dirs.leaf.size  # the results of the padding directions are dropped

        program = _program(loss_fn, jax.tree_util.tree_structure(params), shapes, seed, static)

        def run(step):
            try:
                return [np.asarray(a) for a in program(flat, traced, g_flat, jnp.asarray(leaf_ids),
                                                       jnp.asarray(coords), step)]
            except jax.errors.ConcretizationTypeError as e:
                raise TypeError("loss_fn must be traceable by jax.jit (the reference and its finite differences "
                                "are compiled): no Python control flow on array values; bind static options "
                                "with functools.partial") from e

        g_ad, f0, D, c, Gv, wobble, jitter = run(h)
        lam = max(abs(float(f0)), 1.0, float(jitter) / _EPS)  # λ of (V4): the loss, or f's measured rounding
        D, c, g_v, scale, moved = D[:n], c[:n], Gv[:n, 0], _leaf_scale(Gv[:n, 1], dirs), Gv[:n, 2] > 0
        judged = fd_fail = _fd_failures(D, g_v, scale, lam, h, rtol_fd) | ~moved
        skip = np.array([bool(fd_skip and fd_skip(p)) for p in paths], bool)[dirs.leaf]  # (G2) leaves
        if (fd_fail & ~skip).any():  # (V5)-(V6): the same program at h/2 and h/4
            (D2, c2, Gv2), (D4, c4, Gv4) = ([a[:n] for a in run(step)[2:5]] for step in (h / 2, h / 4))
            judged = fd_fail & moved & smooth_directions(lam, c, c2, c4, h) & converged(
                D - g_v, D2 - Gv2[:, 0], D4 - Gv4[:, 0])

    return _report(paths, shapes, problems, extra, given, value, f0, g_ad, wobble, D, g_v, scale, fd_fail, judged,
                   moved, dirs, h=h, rtol_autodiff=rtol_autodiff, rtol_fd=rtol_fd, fd_skip=fd_skip, near_kink=near_kink)


def check_options(h, rtol_autodiff, rtol_fd, fd_max_coords, fd_directions, fd_samples, seed):
    """ValueError for a bad option of :func:`check` (and a warning for an h out of its useful range)."""
    for name, value in (("h", h), ("rtol_autodiff", rtol_autodiff), ("rtol_fd", rtol_fd)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    for name, value in (("fd_max_coords", fd_max_coords), ("fd_directions", fd_directions),
                        ("fd_samples", fd_samples), ("seed", seed)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= value < 2 ** 31:
            raise ValueError(f"{name} must be an int in [0, 2**31), got {name}={value!r}")
    if fd_directions == 0 and fd_samples == 0:
        raise ValueError("fd_directions and fd_samples are both 0: large leaves would get no finite-difference "
                         "check at all")
    if not 1e-10 <= h <= 1e-4:
        warnings.warn(f"h={h:g} is outside [1e-10, 1e-4]: in float64, rounding (small h) or the O(h³) term of "
                      f"(V5) (large h) can make finite differences flag every direction as not conclusive",
                      stacklevel=3)


def converged(e_h, e_h2, e_h4):
    """(V6) per direction: whether the discrepancy e = D_v - ⟨g, v⟩ is the same at h, h/2 and h/4, to a
    quarter of itself. A real error of g does not depend on h; rounding noise in f grows as h shrinks."""
    tol = np.abs(e_h) / 4
    return (np.abs(e_h2 - e_h) <= tol) & (np.abs(e_h4 - e_h2) <= tol)  # (V6)


def _leaf_scale(gad_v, dirs: Directions):
    """Per direction, the scale its (V3) error is relative to: the largest autodiff directional derivative
    |⟨g_ad, v⟩| over its leaf's directions. (Not the largest D_v: across a kink D_v is off by the jump,
    and would loosen the other directions' tolerance.)"""
    scale = np.zeros(len(dirs.size))
    np.maximum.at(scale, dirs.leaf, np.abs(gad_v))
    return scale[dirs.leaf]


def _fd_failures(D, g_v, scale, lam, h, rtol_fd):
    """Per direction, whether ⟨g, v⟩ misses D_v by more than (V3)-(V4) allow."""
    eta = 10 * _EPS * lam / h  # (V4)
    err = np.abs(g_v - D)
    return ~((err <= rtol_fd * scale) | (err <= eta))  # NaN fails here; (V5)-(V6) then flag it: not conclusive


def _report(paths, shapes, problems, extra, given, value, f0, g_ad, wobble, D, g_v, scale, fd_fail, judged, moved,
            dirs, *, h, rtol_autodiff, rtol_fd, fd_skip, near_kink):
    loss_check = _check_loss(value, float(f0), rtol_autodiff)
    leaf_of = lambda flat: [flat[o:o + n].reshape(s) for o, n, s in zip(dirs.offset, dirs.size, shapes)]
    ref, wobble = leaf_of(g_ad), leaf_of(wobble)
    floor = 64 * _EPS * max((float(np.max(np.abs(r), initial=0.0)) for r in ref), default=0.0)  # (V2)
    low_reference = f0.dtype != np.float64  # loss_fn cast to float32 itself
    rows = []
    for j, (path, shape) in enumerate(zip(paths, shapes)):
        kink = near_kink(path) if near_kink else None
        if problems[path]:
            rows.append(LeafCheck(path, False, problems[path], shape, near_kink=kink))
            continue
        g = np.asarray(given[path], np.float64)
        reasons = []
        if not np.all(np.isfinite(ref[j])):
            reasons.append("the reference jax.grad(loss_fn) is not finite here")
        ad = agreement(g, ref[j])
        within_rounding = ad.max_abs <= max(floor, 4 * float(np.max(wobble[j], initial=0.0)))  # (V2)
        if not (ad.max_rel <= rtol_autodiff or within_rounding):  # (V2)
            dtype = np.asarray(given[path]).dtype
            reasons.append(f"disagrees with jax.grad (max rel {ad.max_rel:.2e} > {rtol_autodiff:g})"
                           + (f"; the gradient came back as {dtype}: the check needs the backward to compute "
                              f"in float64" if jnp.finfo(dtype).eps > _EPS else "")
                           + (f"; the reference loss_fn computes in {f0.dtype}, not float64" if low_reference
                              else ""))
        mine = dirs.leaf == j
        skipped = bool(fd_skip and fd_skip(path))  # the MLP's (G2): finite differences not judged
        fd, flagged = None, 0
        if mine.any():
            err = np.abs(g_v[mine] - D[mine])
            fd = Agreement(float(np.max(err)), _ratio(np.max(err), scale[mine][0]),
                           agreement(g_v[mine], D[mine]).cosine)
            failing = fd_fail[mine]
            real = np.zeros_like(failing) if skipped else judged[mine]  # smooth (V5) and converged (V6)
            flagged = int((failing & ~real).sum())
            if not moved[mine].all():
                reasons.append(f"h={h:g} does not move θ here (below its float64 resolution): finite differences "
                               f"check nothing; use a larger h")
            elif real.any():
                worst = _ratio(np.max(err[real]), scale[mine][0])
                reasons.append(f"disagrees with finite differences along {int(real.sum())} smooth "
                               f"direction(s) (max rel {worst:.2e} > {rtol_fd:g})")
        checked = dirs.described[j] + (", near a kink: not judged" if skipped else "")
        rows.append(LeafCheck(path, not reasons, "; ".join(reasons), shape, ad, fd, checked, flagged, kink))
    rows += [LeafCheck(p, False, "unexpected extra leaf (no such parameter)", tuple(np.shape(given[p])))
             for p in extra]
    return GradientReport(float(f0), loss_check, tuple(rows), rtol_autodiff, rtol_fd, h)


def _ratio(err, scale) -> float:
    return 0.0 if err == 0 else (float(err / scale) if scale > 0 else float("inf"))


def _check_loss(value, f0: float, rtol: float) -> LossCheck:
    try:
        v = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return LossCheck(float("nan"), f0, float("inf"), False, f"not a number: {type(value).__name__}")
    if v.size != 1:
        return LossCheck(float("nan"), f0, float("inf"), False, f"shape {v.shape}, expected a scalar (does "
                         f"backward_fn return (grads, loss) instead of (loss, grads)?)")
    v = float(v.reshape(()))
    err = abs(v - f0)
    ok = err <= rtol * abs(f0) + 10 * _EPS  # (V1)
    reason = "" if ok else f"{v:.10g} != loss_fn's {f0:.10g} (abs err {err:.2e})"
    return LossCheck(v, f0, err, ok, reason)
