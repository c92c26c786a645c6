r"""Backpropagation written by hand from the chain rule: one forward pass, one backward pass, no autodiff.

Notation: layers l = 1..L, a[0] = x, σ the hidden activation and σ_L the output activation, ⊙ the
elementwise product, L the scalar loss. For one example (column vectors)::

    z[l] = W[l] a[l-1] + b[l]                                                     (F1)
    a[l] = σ_l(z[l])                                                              (F2)

    δ[L] = ∂L/∂a[L] ⊙ σ_L'(z[L])                                                  (B1)
    δ[l] = (W[l+1])ᵀ δ[l+1] ⊙ σ'(z[l])          for l = L-1, ..., 1                (B2)
    ∂L/∂W[l] = δ[l] a[l-1]ᵀ                                                        (B3)
    ∂L/∂b[l] = δ[l]                                                                (B4)

where δ[l] = ∂L/∂z[l]. (B2) is the chain rule through (F1) and (F2): z[l+1] depends on z[l] through
a[l] = σ(z[l]) and W[l+1]. The weight update of gradient descent then reads
W[l] ← W[l] - η ∂L/∂W[l], b[l] ← b[l] - η ∂L/∂b[l] (:mod:`jaxmlp.optim` implements it).

**Batched form.** Code is batch-first: the rows of A[l] (B × n_l) are the examples, Δ[l] = ∂L/∂Z[l]::

    Z[l] = A[l-1] W[l]ᵀ + 1 b[l]ᵀ                                                  (F1)
    Δ[l] = (Δ[l+1] W[l+1]) ⊙ σ'(Z[l])                                              (B2)
    ∂L/∂W[l] = Δ[l]ᵀ A[l-1]          (a sum over the batch of the per-example (B3))  (B3)
    ∂L/∂b[l] = 1ᵀ Δ[l]               (a sum over the batch of Δ[l]'s rows)           (B4)

**Where the 1/n lives.** The loss is a mean, L = (1/n) Σ ℓ, with n = B·C elements for MSE and BCE and
n = B examples for CE (:mod:`jaxmlp.losses`). The factor 1/n enters **once, in Δ[L]** (B1); (B2)-(B4)
only multiply and *sum*, so the batch sums of (B3)-(B4) are already the gradient of the mean::

    MSE, any elementwise σ_L:  Δ[L] = (2/n) (A[L] - Y) ⊙ σ_L'(Z[L])                 (B1-mse)
    BCE with sigmoid output:   Δ[L] = (1/n) (A[L] - Y)                              (B1-bce)
    CE with softmax output:    Δ[L] = (1/n) (A[L] - Y),  Y one-hot                  (B1-ce)

The fused forms (B1-bce), (B1-ce) are where the sigmoid's σ(1-σ) and the softmax Jacobian cancel
against the log of the cross-entropy; they avoid ever forming ∂L/∂a = -y/a, which overflows.

**Order of evaluation.** Where A[l-1] is large (at least ``IN_ORDER_MIN`` numbers), :func:`backward` makes
(B3)-(B4) of layer l before (B2) makes Δ[l-1] (:func:`_in_order`), so that A[l-1], last read by (B3),
is freed in time for Δ[l-1] to take its buffer; XLA:CPU's scheduler otherwise keeps one more
activation-sized buffer alive. Small layers are left to the scheduler.

**Layout of (B3).** ``grads_from_forward`` takes the product of (B3) as an argument, ``weight_grad(l, Δ[l],
A[l-1])``, default Δ[l]ᵀ A[l-1]: training code that runs many steps of one shape may lay it out
otherwise for its compiler (:mod:`jaxmlp.loop`, :mod:`jaxmlp.ensemble`); the values are the same sums.

**Per-example gradients.** With the per-example loss ℓ_b (n = C for MSE/BCE, n = 1 for CE), the same
recursion gives every example's δ at once, and (B3) becomes the outer product per row,
∂ℓ_b/∂W[l] = Δ[l]_b ⊗ A[l-1]_b, with no loop over examples; their batch mean is the gradient of L.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp import losses
from jaxmlp.mlp import loss_from_forward, prepare
from jaxmlp.types import ForwardPass, Layer


def mean_count(A_L, loss: str, per_example: bool = False) -> int:
    """n, what the loss averages over: B examples for CE, B·C entries otherwise (per example: 1, C)."""
    B, C = A_L.shape
    if loss == "ce":
        return 1 if per_example else B
    return C if per_example else B * C


def output_delta(fp: ForwardPass, Y, sigma_out, loss: str, per_example: bool = False):
    """Δ[L] = ∂L/∂Z[L] (B1), with the 1/n of the mean written here and nowhere else."""
    Z_L, A_L = fp.z[-1], fp.a[-1]
    n = mean_count(A_L, loss, per_example)
    if loss == "ce":
        return (A_L - losses.one_hot_targets(Y, A_L)) / n  # (B1-ce)
    if loss == "bce":
        return (A_L - Y) / n  # (B1-bce)
    return (2.0 / n) * (A_L - Y) * sigma_out.grad(Z_L)  # (B1-mse)


def _delta_below(params, fp: ForwardPass, delta_above, l: int, sigma):
    """(B2): Δ[l] from Δ[l+1]."""
    dtype = fp.a[l].dtype  # the compute dtype (differs from W's only in mixed precision)
    W_next = params[l].W.astype(dtype)  # W[l+1] (params is 0-indexed)
    return (delta_above.astype(dtype) @ W_next) * sigma.grad(fp.z[l])  # (B2)


def _deltas(params, fp: ForwardPass, Y, sigma, sigma_out, loss: str, per_example: bool = False):
    """Every Δ[l] = ∂L/∂Z[l], from the output back: ``(None, Δ[1], ..., Δ[L])``."""
    L = len(params)
    delta = [None] * (L + 1)
    delta[L] = output_delta(fp, Y, sigma_out, loss, per_example)  # (B1)
    for l in range(L - 1, 0, -1):
        delta[l] = _delta_below(params, fp, delta[l + 1], l, sigma)  # (B2)
    return tuple(delta)


IN_ORDER_MIN = 1 << 14  # A[l-1] of at least this many numbers: (B3) is ordered before (B2), see above


def _in_order(dW, delta):
    """``(dW, Δ)`` unchanged, but on CPU nothing computed from the returned Δ can run before dW exists, so
    that A[l-1] is freed before Δ[l-1] is made (see "Order of evaluation"). Other platforms: as is."""
    return jax.lax.platform_dependent(dW, delta, cpu=lambda *t: jax.lax.optimization_barrier(t),
                                      default=lambda *t: t)


def deltas(params, x, y, *, activation="relu", output_activation=None, loss="mse"):
    """The manual δ[l] = ∂L/∂z[l] of every layer, ``(None, δ[1], ..., δ[L])``, batch-first ``(B, n_l)``."""
    sigma, sigma_out, Y, fp = prepare(params, x, y, activation, output_activation, loss)
    return _deltas(params, fp, Y, sigma, sigma_out, loss)


def grads_from_forward(params, fp: ForwardPass, Y, sigma, sigma_out, loss: str, weight_grad=None):
    """(B1)-(B4) from a finished forward pass ``fp``: the gradient, a tuple of ``Layer(dW, db)`` like ``params``.

    ``weight_grad(l, Δ[l], A[l-1]) -> ∂L/∂W[l]`` makes (B3); None for Δ[l]ᵀ A[l-1] (see "Layout of (B3)").
    """
    L = len(params)
    grads = [None] * L
    delta = output_delta(fp, Y, sigma_out, loss, False)  # (B1): Δ[L]
    for l in range(L, 0, -1):
        W, b = params[l - 1]
        A_prev = fp.a[l - 1]
        D = delta.astype(A_prev.dtype)
        dW = D.T @ A_prev if weight_grad is None else weight_grad(l, D, A_prev)  # (B3): ∂L/∂W[l] = Δ[l]ᵀ A[l-1]
        db = jnp.sum(delta, axis=0)  # (B4): ∂L/∂b[l] = 1ᵀ Δ[l]
        if l > 1:
            if A_prev.size >= IN_ORDER_MIN:
                dW, delta = _in_order(dW, delta)
            delta = _delta_below(params, fp, delta, l - 1, sigma)  # (B2): Δ[l-1]
        grads[l - 1] = Layer(W=dW.astype(W.dtype), b=db.astype(b.dtype))
    return type(params)(grads)


def backward(params, x, y, *, activation="relu", output_activation=None, loss="mse", compute_dtype=None):
    """The loss and its gradient with respect to ``params``, by the hand-derived chain rule.

    Same keywords as :func:`jaxmlp.loss_fn`. Equals ``jax.value_and_grad(loss_fn)`` for every hidden
    activation paired with: identity, sigmoid or tanh output and MSE; sigmoid and BCE; softmax and CE
    (one-hot or integer labels), exact kinks included.

    ``compute_dtype`` (mixed precision, e.g. ``jnp.bfloat16``): the matmuls of the forward and
    backward passes run in that dtype, the loss and Δ[L] in the parameters' dtype, and the grads are
    returned in the parameters' dtype.

    Returns:
      ``(loss, grads)``, ``grads`` the same pytree as ``params`` (a tuple of ``Layer(dW, db)``).
    """
    sigma, sigma_out, Y, fp = prepare(params, x, y, activation, output_activation, loss, compute_dtype)
    return loss_from_forward(fp, Y, loss), grads_from_forward(params, fp, Y, sigma, sigma_out, loss)


def per_example_grads(params, x, y, *, activation="relu", output_activation=None, loss="mse"):
    """Each example's gradient, with a leading batch axis, from the manual deltas (no loop over examples).

    ``x`` must be a batch ``(B, n_in)``. Leaf shapes are ``(B, n_out, n_in)`` and ``(B, n_out)``; the
    mean over the batch axis equals :func:`backward`'s grads.
    """
    if jnp.ndim(x) != 2:
        raise ValueError(f"per_example_grads needs a batch x of shape (batch, n_in), got shape {jnp.shape(x)}")
    sigma, sigma_out, Y, fp = prepare(params, x, y, activation, output_activation, loss)
    delta = _deltas(params, fp, Y, sigma, sigma_out, loss, per_example=True)
    grads = tuple(
        Layer(W=jnp.einsum("bo,bi->boi", delta[l], fp.a[l - 1]),  # (B3) per example
              b=delta[l])  # (B4) per example
        for l in range(1, len(params) + 1)
    )
    return type(params)(grads)
