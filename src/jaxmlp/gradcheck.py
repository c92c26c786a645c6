"""Verifying a hand-derived backward: against ``jax.grad``, finite differences, and layer by layer.

:func:`check_gradients` compares a backward (jaxmlp's :func:`~jaxmlp.backward`, or a user's own
``(params, x, y) -> (loss, grads)``) with two independent references, in float64:

- autodiff, ``jax.grad`` of the loss function;
- central finite differences, one parameter θ_i at a time::

      ∂L/∂θ_i ≈ (L(θ + h e_i) - L(θ - h e_i)) / 2h,   error O(h²) + O(ε_mach / h)          (G1)

  Its rounding part is about ε_mach |L| / h, so a gradient that is exactly 0 (a weight whose input
  is 0) comes back as noise of that size. A leaf's finite-difference comparison passes when its max
  rel error is within ``rtol_fd``, or its max abs error is below that noise floor::

      max |g - fd| <= 10 ε_mach max(|L|, 1) / h                                               (G3)

It reports, per layer and leaf, the max abs error, the max error relative to the reference's largest
entry, and the cosine similarity, and it flags the pre-activations that lie within reach of a kink of
the activation: a step h in one entry of W[l] or b[l] moves z[l] by at most h (1 + ‖a[l-1]‖_∞), so a
z[l] entry closer than that to a kink (0 for relu) makes (G1) straddle it, where it means nothing::

      flagged:  |z[l]_j - κ| < h (1 + ‖a[l-1]‖_∞)   for a kink κ of σ                          (G2)

Unlike ``jax.test_util.check_grads``, which checks a random direction and says pass or fail, the report
says which layer and which leaf went wrong. :func:`compare_deltas` goes one level deeper, to the
deltas δ[l] = ∂L/∂z[l] (autodiff gets them by differentiating the loss with respect to a zero
perturbation added to each z[l]); :func:`symmetry` is the zero-initialization diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxmlp import activations, backprop, mlp
from jaxmlp.report import Agreement, agreement, format_table

FD_CHUNK = 4096  # finite-difference directions evaluated per vmapped batch


def _to_float64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64)
                        if jnp.issubdtype(jnp.result_type(a), jnp.floating) else jnp.asarray(a), tree)


def finite_difference_grads(loss_of_params, params, h: float = 1e-6):
    """Central finite differences (G1) of ``loss_of_params`` in every parameter, as a params pytree.

    All 2P evaluations run in one compiled program (``vmap`` over the P directions, in chunks of
    ``FD_CHUNK``), which is several times faster than dispatching them op by op.
    """
    flat, unravel = ravel_pytree(params)
    f = lambda v: loss_of_params(unravel(v))
    one_direction = lambda i: (f(flat.at[i].add(h)) - f(flat.at[i].add(-h))) / (2 * h)  # (G1)
    fd = jax.jit(lambda idx: jax.lax.map(one_direction, idx, batch_size=FD_CHUNK))(jnp.arange(flat.size))
    return unravel(fd)


@dataclass(frozen=True)
class LeafCheck:
    """One row of the report: leaf ``W`` or ``b`` of layer ``l`` against both references."""

    layer: int
    leaf: str
    shape: tuple
    autodiff: Agreement
    finite_diff: Agreement
    near_kink: int  # pre-activations of this layer within the FD step of a kink (G2)
    ok: bool


@dataclass(frozen=True)
class GradientReport:
    """The result of :func:`check_gradients`; ``print(report)`` shows it as a table."""

    loss: float
    rows: tuple[LeafCheck, ...]
    rtol_autodiff: float
    rtol_fd: float
    h: float

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_rel_autodiff(self) -> float:
        return max(r.autodiff.max_rel for r in self.rows)

    @property
    def max_rel_fd(self) -> float:
        return max(r.finite_diff.max_rel for r in self.rows)

    def __str__(self) -> str:
        headers = ["layer", "leaf", "shape", "ad max abs", "ad max rel", "ad cos",
                   "fd max abs", "fd max rel", "fd cos", "near kink", "ok"]
        rows = [[r.layer, r.leaf, "x".join(map(str, r.shape)), *r.autodiff, *r.finite_diff, r.near_kink, r.ok]
                for r in self.rows]
        head = (f"gradient check in float64: loss = {self.loss:.10g}; pass if ad max rel <= "
                f"{self.rtol_autodiff:g} and fd max rel <= {self.rtol_fd:g} or fd max abs within rounding "
                f"noise (h = {self.h:g}; "
                f"fd not judged for a layer with pre-activations near a kink)")
        return head + "\n" + format_table(headers, rows)


def near_kinks(params, x, activation, h: float):
    """Per layer l = 1..L, how many hidden pre-activations z[l] lie within (G2) of a kink (an int array)."""
    sigma = activations.get(activation)
    cache = mlp.forward_batched(params, mlp.as_batch(x)[0], sigma, activations.identity)
    counts = []
    for l in range(1, len(params) + 1):
        if l == len(params) or not sigma.kinks:
            counts.append(jnp.zeros((), jnp.int32))
            continue
        window = h * (1 + jnp.max(jnp.abs(cache.a[l - 1])))  # (G2)
        dist = jnp.min(jnp.stack([jnp.abs(cache.z[l] - k) for k in sigma.kinks]), axis=0)
        counts.append(jnp.sum(dist < window).astype(jnp.int32))
    return jnp.stack(counts)


def gradient_references(params, x, y, *, loss_fn, activation, h: float):
    """What a backward is checked against (traceable, so a caller can compile it once and reuse it):
    ``(autodiff grads, finite-difference grads (G1), kink counts per layer (G2))``."""
    ref_autodiff = jax.grad(loss_fn)(params, x, y)
    ref_fd = finite_difference_grads(lambda p: loss_fn(p, x, y), params, h)
    return ref_autodiff, ref_fd, near_kinks(params, x, activation, h)


def make_report(value, grads, ref_autodiff, ref_fd, kinks, *, rtol_autodiff: float = 1e-9,
                rtol_fd: float = 1e-6, h: float = 1e-6) -> GradientReport:
    """Judge :func:`gradient_references`' arrays, leaf by leaf, into a :class:`GradientReport`."""
    kinks = [int(k) for k in kinks]
    fd_noise = 10 * float(jnp.finfo(jnp.float64).eps) * max(abs(float(value)), 1.0) / h  # (G3)
    rows = []
    for l, (g, r_ad, r_fd) in enumerate(zip(grads, ref_autodiff, ref_fd), start=1):
        for leaf in ("W", "b"):
            ad = agreement(getattr(g, leaf), getattr(r_ad, leaf))
            fd = agreement(getattr(g, leaf), getattr(r_fd, leaf))
            fd_ok = fd.max_rel <= rtol_fd or fd.max_abs <= fd_noise  # (G3)
            ok = ad.max_rel <= rtol_autodiff and (kinks[l - 1] > 0 or fd_ok)
            rows.append(LeafCheck(l, leaf, tuple(jnp.shape(getattr(g, leaf))), ad, fd, kinks[l - 1], ok))
    return GradientReport(float(value), tuple(rows), rtol_autodiff, rtol_fd, h)


def check_gradients(params, x, y, *, activation="relu", output_activation=None, loss="mse",
                    backward_fn=None, loss_fn=None, h: float = 1e-6,
                    rtol_autodiff: float = 1e-9, rtol_fd: float = 1e-6) -> GradientReport:
    """Compare a backward with ``jax.grad`` and with central finite differences, in float64.

    Args:
      params, x, y: the network and data; floating leaves are cast to float64.
      activation, output_activation, loss: as for :func:`jaxmlp.loss_fn`.
      backward_fn: a user's own ``(params, x, y) -> (loss, grads)`` to check instead of
        :func:`jaxmlp.backward`; then ``loss_fn`` must be given too.
      loss_fn: the user's ``(params, x, y) -> scalar`` that ``backward_fn`` differentiates; the
        references differentiate it. ``activation`` is still used to flag kinks.
      h: the finite-difference step (G1).
      rtol_autodiff, rtol_fd: a leaf passes when its max rel error against autodiff is at most
        ``rtol_autodiff`` and against finite differences at most ``rtol_fd``, or within the rounding
        noise (G3) (the latter is not judged for a layer with pre-activations flagged by (G2)).
    """
    kw = dict(activation=activation, output_activation=output_activation, loss=loss)
    if not h > 0:
        raise ValueError(f"h (the finite-difference step) must be > 0, got h={h!r}")
    if (backward_fn is None) != (loss_fn is None):
        raise TypeError("pass backward_fn and loss_fn together (the user's backward and the loss it "
                        "differentiates), or neither to check jaxmlp.backward")
    if backward_fn is None:
        backward_fn, loss_fn = jax.jit(partial(backprop.backward, **kw)), partial(mlp.loss_fn, **kw)
    references = jax.jit(partial(gradient_references, loss_fn=loss_fn, activation=activation, h=h))
    with jax.enable_x64(True):
        params, x, y = _to_float64((params, x, y))
        value, grads = backward_fn(params, x, y)  # a user's backward runs as given: it may not be traceable
        return make_report(value, grads, *references(params, x, y),  # one program: faster than op by op
                           rtol_autodiff=rtol_autodiff, rtol_fd=rtol_fd, h=h)


def autodiff_deltas(params, x, y, *, activation="relu", output_activation=None, loss="mse"):
    """δ[l] = ∂L/∂z[l] by autodiff: the gradient of the loss with respect to a zero ``dZ[l]`` added to z[l]."""
    B = 1 if jnp.ndim(x) == 1 else jnp.shape(x)[0]
    dZ = (None,) + tuple(jnp.zeros((B, W.shape[0]), jnp.result_type(x, W)) for W, _ in params)

    def loss_of_dZ(dZ):
        return mlp.loss_and_output(params, x, y, activation, output_activation, loss, dZ=dZ)[0]

    return jax.grad(loss_of_dZ)(dZ)


@dataclass(frozen=True)
class DeltaReport:
    """Manual and autodiff deltas of every layer, side by side (``print`` shows the table)."""

    manual: tuple
    autodiff: tuple
    rows: tuple[Agreement, ...]

    def __str__(self) -> str:
        headers = ["layer", "shape", "max abs", "max rel", "cosine"]
        return format_table(headers, [[l, "x".join(map(str, self.manual[l].shape)), *r]
                                      for l, r in enumerate(self.rows, start=1)])


def compare_deltas(params, x, y, *, activation="relu", output_activation=None, loss="mse",
                   deltas_fn=None) -> DeltaReport:
    """Manual deltas (jaxmlp's, or a user's ``deltas_fn(params, x, y) -> (None, δ[1], ..., δ[L])``)
    against autodiff's, layer by layer, so a user sees in which layer a backward goes wrong."""
    kw = dict(activation=activation, output_activation=output_activation, loss=loss)
    manual = (deltas_fn or partial(backprop.deltas, **kw))(params, x, y)
    reference = autodiff_deltas(params, x, y, **kw)
    rows = tuple(agreement(manual[l], reference[l]) for l in range(1, len(params) + 1))
    return DeltaReport(tuple(manual), tuple(reference), rows)


@dataclass(frozen=True)
class SymmetryReport:
    """Hidden units that are exact copies of each other, per hidden layer l = 1..L-1.

    ``groups[i]`` lists the groups (of size >= 2) of unit indices of hidden layer ``i + 1`` whose incoming
    weights and bias, and (when grads were given) whose gradients, are identical. ``distinct[i]`` is
    how many different units that layer really has: 1 after zero initialization, its width after a
    random one.
    """

    widths: tuple[int, ...]
    distinct: tuple[int, ...]
    groups: tuple[tuple[tuple[int, ...], ...], ...]

    def __str__(self) -> str:
        rows = [[l, w, d, len(g)] for l, (w, d, g) in enumerate(zip(self.widths, self.distinct, self.groups), 1)]
        return format_table(["hidden layer", "units", "distinct units", "groups of copies"], rows)


def symmetry(params, grads=None) -> SymmetryReport:
    """Which hidden units have identical incoming weights (and gradients): the symmetry lesson.

    A unit j of hidden layer l is described by the row ``W[l][j]``, ``b[l][j]`` and, with ``grads``, by
    ``dW[l][j]``, ``db[l][j]``; units with equal descriptions are copies, and gradient descent keeps
    them copies, since equal units receive equal deltas.
    """
    widths, distinct, groups = [], [], []
    for l in range(len(params) - 1):
        parts = [params[l].W, params[l].b[:, None]]
        if grads is not None:
            parts += [grads[l].W, grads[l].b[:, None]]
        rows = np.concatenate([np.asarray(p, np.float64) for p in parts], axis=1)
        _, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.ravel()
        widths.append(rows.shape[0])
        distinct.append(len(counts))
        groups.append(tuple(tuple(int(j) for j in np.flatnonzero(inverse == u))
                            for u in np.flatnonzero(counts > 1)))
    return SymmetryReport(tuple(widths), tuple(distinct), tuple(groups))
