"""Verifying a hand-derived backward of a jaxmlp MLP: the MLP extras on top of :mod:`jaxmlp.verify`.

:func:`check_gradients` checks any backward of any pytree model with :mod:`jaxmlp.verify`'s engine
(against ``jax.grad`` and finite differences, in float64, equations (V1)-(V6)). With neither
``backward_fn`` nor ``loss_fn`` it checks jaxmlp's own :func:`~jaxmlp.backward` on a jaxmlp MLP, and for
an MLP it adds what only an MLP's structure can tell: the pre-activations that lie within reach of a
kink of the activation. A step h along a unit direction in W[l] or b[l] moves z[l] by at most
h (1 + ‖a[l-1]‖_∞), so a z[l] entry closer than that to a kink κ (0 for relu) makes the central
difference (V3) straddle it, where it means nothing::

      flagged:  |z[l]_j - κ| < h (1 + ‖a[l-1]‖_∞)   for a kink κ of σ                          (G2)

Finite differences of a flagged layer are reported but not judged; ``jax.grad`` still judges every
entry. (For other models, (V5)-(V6) detect non-smoothness from the finite differences themselves.)

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

from jaxmlp import activations, backprop, mlp
from jaxmlp.report import Agreement, GradientReport, LeafCheck, agreement, format_table
from jaxmlp.types import Layer
from jaxmlp.verify import check, finite_difference_grads

__all__ = ["GradientReport", "LeafCheck", "check_gradients", "compare_deltas", "finite_difference_grads",
           "near_kinks", "symmetry"]

MLP_OPTIONS = ("activation", "output_activation", "loss")


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


_near_kinks = jax.jit(near_kinks, static_argnames="activation")


def kink_flags(counts):
    """``(fd_skip, near_kink)`` for :func:`jaxmlp.verify.check` from per-layer (G2) counts: the leaves
    ``[l].W`` and ``[l].b`` of a flagged layer get their finite differences reported but not judged."""
    layer_of = {f"[{l}].{leaf}": l for l in range(len(counts)) for leaf in ("W", "b")}
    near_kink = lambda path: int(counts[layer_of[path]]) if path in layer_of else None
    return (lambda path: bool(near_kink(path))), near_kink


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


def check_gradients(params, *args, backward_fn=None, loss_fn=None, h: float = 1e-6,
                    rtol_autodiff: float = 1e-9, rtol_fd: float = 1e-6, fd_max_coords: int = 256,
                    fd_directions: int = 16, fd_samples: int = 0, seed: int = 0,
                    **mlp_options) -> GradientReport:
    """Check a backward against ``jax.grad`` and central finite differences, in float64, leaf by leaf.

    Any model: pass ``loss_fn(params, *args) -> scalar``, the reference, and ``backward_fn(params, *args)
    -> (loss, grads)``, the backward to check; ``params`` is any pytree of floating leaves (dicts,
    lists, tuples, :class:`~jaxmlp.Layer`, scalars) and ``args`` any positional arguments (arrays; bind
    static options with ``functools.partial``). A ``jax.custom_vjp`` rule is checked with
    ``backward_fn=jax.value_and_grad(f_with_rule)`` and ``loss_fn=f_without_rule``.

    A jaxmlp MLP: with neither function, jaxmlp's own :func:`~jaxmlp.backward` is checked on
    ``check_gradients(params, x, y, activation=..., output_activation=..., loss=...)``, with the kink
    flags (G2). ``activation`` also gives a user's backward of a jaxmlp MLP the (G2) flags.

    Args:
      params, *args: θ and the remaining arguments; floating leaves are cast to float64.
      backward_fn, loss_fn: the backward to check and the loss it differentiates (both, or neither).
      h: the finite-difference step (V3).
      rtol_autodiff, rtol_fd: tolerances of (V1)-(V2) and of (V3), relative to each leaf's largest entry.
      fd_max_coords: leaves with at most this many entries are checked along every coordinate.
      fd_directions, fd_samples: larger leaves get this many random unit directions, and this many
        random coordinates.
      seed: chooses the random directions and coordinates.
      **mlp_options: ``activation``, ``output_activation``, ``loss``, as for :func:`jaxmlp.loss_fn`.
        With a user's ``backward_fn``/``loss_fn`` only ``activation`` matters (it gives the (G2) flags):
        the user's functions already fix the output and the loss.

    Returns:
      A :class:`~jaxmlp.verify.GradientReport`: ``.ok`` (also ``bool(report)``), ``.rows`` (one per
      leaf, with ``.path``, ``.ok``, ``.reason`` and the error figures), ``.loss_check``, ``.failures``
      and ``.raise_for_failure()``; ``print(report)`` shows the table. A wrong gradient (missing,
      extra, mis-shaped, non-floating or non-finite leaves, wrong numbers, a wrong loss value) gives a
      failing report, never an exception.

    Raises:
      TypeError: only one of ``backward_fn``/``loss_fn``; an unknown keyword; MLP options for a model
        that is not a jaxmlp MLP; a non-floating parameter leaf.
      ValueError: a non-positive ``h`` or tolerance.
    """
    unknown = sorted(set(mlp_options) - set(MLP_OPTIONS))
    if unknown:
        raise TypeError(f"check_gradients got unexpected keyword argument(s) {unknown}; the MLP options are "
                        f"{MLP_OPTIONS}")
    if (backward_fn is None) != (loss_fn is None):
        raise TypeError("pass backward_fn and loss_fn together (the user's backward and the loss it "
                        "differentiates), or neither to check jaxmlp.backward")
    own = backward_fn is None
    if own or mlp_options:
        if not is_mlp(params):
            raise TypeError(f"{'checking jaxmlp.backward' if own else 'the MLP options ' + str(sorted(mlp_options))}"
                            f" needs a jaxmlp MLP (a tuple of Layer(W, b)), got params of type "
                            f"{type(params).__name__}; pass your own backward_fn and loss_fn for other models")
        if len(args) < 1:
            raise TypeError("a jaxmlp MLP is checked on (params, x, y): x is missing")
    if own:
        if len(args) != 2:
            raise TypeError(f"checking jaxmlp.backward takes (params, x, y), got {1 + len(args)} positional "
                            f"arguments")
        kw = dict(activation="relu", output_activation=None, loss="mse") | mlp_options
        mlp.resolve(kw["activation"], kw["output_activation"], kw["loss"])
        mlp.check_target(params, *args, kw["loss"])
        backward_fn, loss_fn = partial(_jitted, of=_MLP(**kw, backward=True)), _MLP(**kw)
    fd_skip = near_kink = None
    if own or "activation" in mlp_options:
        with jax.enable_x64(True):
            x = jnp.asarray(args[0], jnp.float64)
            counts = np.asarray(_near_kinks(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params), x,
                                            activation=(mlp_options.get("activation", "relu")), h=h))
        fd_skip, near_kink = kink_flags(counts)
    return check(loss_fn, backward_fn, params, args, h=h, rtol_autodiff=rtol_autodiff, rtol_fd=rtol_fd,
                 fd_max_coords=fd_max_coords, fd_directions=fd_directions, fd_samples=fd_samples, seed=seed,
                 fd_skip=fd_skip, near_kink=near_kink)


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
