"""``check_gradients``: verifying a hand-derived backward of any model, and the MLP's layer-wise extras.

:func:`check_gradients` checks any backward of any pytree model with :mod:`jaxmlp.verify`'s engine
(against ``jax.grad`` and finite differences, in float64, equations (V1)-(V9)); with neither
``backward_fn`` nor ``loss_fn`` it checks jaxmlp's own :func:`~jaxmlp.backward` on a jaxmlp MLP.
:func:`compare_deltas` goes one level deeper, to the deltas δ[l] = ∂L/∂z[l] (autodiff gets them by
differentiating the loss with respect to a zero perturbation added to each z[l]); :func:`symmetry` is
the zero-initialization diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import backprop, mlp, verify
from jaxmlp.report import Agreement, GradientReport, LeafCheck, agreement, format_table
from jaxmlp.types import Layer
from jaxmlp.verify import finite_difference_grads

__all__ = ["GradientReport", "LeafCheck", "check_gradients", "compare_deltas", "finite_difference_grads",
           "symmetry"]

MLP_OPTIONS = ("activation", "output_activation", "loss")


def is_mlp(params) -> bool:
    """Whether ``params`` has jaxmlp's MLP layout: a non-empty tuple of :class:`~jaxmlp.Layer`."""
    return isinstance(params, tuple) and len(params) > 0 and all(isinstance(p, Layer) for p in params)


@dataclass(frozen=True)
class _MLP:
    """jaxmlp's own loss (the reference) or backward (what is checked) of an MLP configuration, compared by
    value, so that ``jit`` (the backward's and the checker's) finds what an equal earlier check compiled."""

    activation: object
    output_activation: object
    loss: str
    backward: bool = False

    def __call__(self, params, x, y):
        fn = backprop.backward if self.backward else mlp.loss_fn
        return fn(params, x, y, activation=self.activation, output_activation=self.output_activation, loss=self.loss)


@partial(jax.jit, static_argnames="of")
def _jitted(params, x, y, *, of):
    return of(params, x, y)


def check_gradients(params, *args, backward_fn=None, loss_fn=None, h: float = 1e-6, precision: str = "float64",
                    rtol_autodiff: float | None = None, rtol_fd: float | None = None, kinks: str = "allow",
                    fd_budget: int = verify.FD_BUDGET, seed: int = 0, **mlp_options) -> GradientReport:
    """Check a backward against ``jax.grad`` and central finite differences, in float64, leaf by leaf.

    Any model: pass ``loss_fn(params, *args) -> scalar``, the reference, and ``backward_fn(params, *args)
    -> (loss, grads)``, the backward to check; ``params`` is any pytree of floating leaves (dicts,
    lists, tuples, :class:`~jaxmlp.Layer`, scalars) and ``args`` any positional arguments (arrays; Python
    ints, bools and strings stay static). A ``jax.custom_vjp`` rule is checked with
    ``backward_fn=jax.value_and_grad(f_with_rule)`` and ``loss_fn=f_without_rule`` (or with
    :func:`jaxmlp.check_vjp`, which checks the rule of a function with vector outputs directly).

    A jaxmlp MLP: with neither function, jaxmlp's own :func:`~jaxmlp.backward` is checked on
    ``check_gradients(params, x, y, activation=..., output_activation=..., loss=...)``.

    Args:
      params, *args: θ and the remaining arguments; floating leaves are cast to float64.
      backward_fn, loss_fn: the backward to check and the loss it differentiates (both, or neither).
      h: the finite-difference step (V3).
      precision: ``"float64"`` (the default: ``rtol_autodiff=1e-9``, ``rtol_fd=1e-6``) or ``"float32"``
        (``1e-5``, ``1e-4``): tolerances for a backward that computes in float32, whose rounding
        (ε = 1.2e-7 per operation) accumulates over a layer's sums to about 1e-6 relative.
      rtol_autodiff, rtol_fd: override the preset: the tolerances of (V1)-(V2) and of (V3), relative to
        each leaf's largest entry.
      kinks: ``"allow"`` (default): an entry that disagrees with ``jax.grad`` where the loss has a kink passes
        if it lies between the one-sided slopes and agrees with ``jax.grad`` off the kink, (V7)-(V9);
        ``"strict"``: it fails. (jax's own derivatives at kinks: ``jax.nn.relu`` 0, ``jnp.maximum(z, 0)``
        0.5, ``jnp.abs`` 1.)
      fd_budget: loss evaluations of the finite differences, spread over the leaves by size (2 per
        direction; the report says where they went).
      seed: chooses the random directions.
      **mlp_options: ``activation``, ``output_activation``, ``loss``, as for :func:`jaxmlp.loss_fn`, when
        checking jaxmlp's own backward.

    Returns:
      A :class:`~jaxmlp.report.GradientReport`: ``.ok`` (also ``bool(report)``), ``.rows`` (one per leaf,
      with ``.path``, ``.ok``, ``.reason``, the error figures and the worst entry: ``.worst_index``,
      ``.worst_value``, ``.worst_reference``, ``.worst_fd``), ``.loss_check``, ``.failures``,
      ``.raise_for_failure()`` and ``.to_dict()``; ``print(report)`` shows the table. A wrong gradient
      (missing, extra, mis-shaped, non-floating or non-finite leaves, wrong numbers, a wrong loss value,
      a swapped ``(grads, loss)`` pair) gives a failing report, never an exception.

    Raises:
      TypeError: only one of ``backward_fn``/``loss_fn``; an unknown keyword; MLP options with a
        user's backward; a non-floating parameter leaf.
      ValueError: a non-positive ``h`` or tolerance, an unknown ``precision`` or ``kinks``.
    """
    unknown = sorted(set(mlp_options) - set(MLP_OPTIONS))
    if unknown:
        raise TypeError(f"check_gradients got unexpected keyword argument(s) {unknown}; the MLP options are "
                        f"{MLP_OPTIONS}")
    if (backward_fn is None) != (loss_fn is None):
        raise TypeError("pass backward_fn and loss_fn together (the user's backward and the loss it "
                        "differentiates), or neither to check jaxmlp.backward")
    if backward_fn is None:
        if not is_mlp(params):
            raise TypeError(f"checking jaxmlp.backward needs a jaxmlp MLP (a tuple of Layer(W, b)), got params of "
                            f"type {type(params).__name__}; pass your own backward_fn and loss_fn for other models")
        if len(args) != 2:
            raise TypeError(f"checking jaxmlp.backward takes (params, x, y), got {1 + len(args)} positional "
                            f"arguments")
        kw = dict(activation="relu", output_activation=None, loss="mse") | mlp_options
        mlp.resolve(kw["activation"], kw["output_activation"], kw["loss"])
        mlp.check_target(params, *args, kw["loss"])
        backward_fn, loss_fn = partial(_jitted, of=_MLP(**kw, backward=True)), _MLP(**kw)
    elif mlp_options:
        raise TypeError(f"the MLP options {sorted(mlp_options)} are for checking jaxmlp's own backward; your "
                        f"backward_fn and loss_fn already fix the activation, the output and the loss")
    return verify.check(loss_fn, backward_fn, params, args, h=h, rtol_autodiff=rtol_autodiff, rtol_fd=rtol_fd,
                        precision=precision, kinks=kinks, fd_budget=fd_budget, seed=seed)


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
