r"""The Hessian-vector product of the MLP's loss by hand: Pearlmutter's R-operator, no autodiff.

Second-order methods (Newton-CG, K-FAC's checks, influence functions) need H v, the Hessian of the loss
times a direction v, without forming H. Pearlmutter (1994) gets it by applying R{·} = ∂/∂r (·)(θ + r v) at
r = 0 to every equation of the forward and backward passes of :mod:`jaxmlp.backprop`: one more forward
pass (of R{Z}, R{A}) and one more backward pass (of R{Δ}), for about the cost of a second gradient.

The direction v is a pytree like the parameters, ``(V[l], c[l])`` for ``(W[l], b[l])``. Batch-first,
with Δ[l] = ∂L/∂Z[l] from (B1)-(B2) and σ'' the hand-written second derivatives of
:mod:`jaxmlp.activations` (A1'')-(A7'')::

    R{Z[l]} = R{A[l-1]} W[l]ᵀ + A[l-1] V[l]ᵀ + 1 c[l]ᵀ,     R{A[0]} = 0                       (H1)
    R{A[l]} = σ'(Z[l]) ⊙ R{Z[l]}     (softmax output: A ⊙ (R{Z} - Σⱼ Aⱼ R{Z}ⱼ), row by row)     (H2)
    R{Δ[L]} = (2/n) (R{A[L]} ⊙ σ_L'(Z[L]) + (A[L] - Y) ⊙ σ_L''(Z[L]) ⊙ R{Z[L]})    MSE          (H3-mse)
            = (1/n) R{A[L]}                                         BCE + sigmoid, CE + softmax    (H3-ce)
    R{Δ[l]} = (R{Δ[l+1]} W[l+1] + Δ[l+1] V[l+1]) ⊙ σ'(Z[l]) + (Δ[l+1] W[l+1]) ⊙ σ''(Z[l]) ⊙ R{Z[l]}   (H4)
    (H v)_W[l] = R{∂L/∂W[l]} = R{Δ[l]}ᵀ A[l-1] + Δ[l]ᵀ R{A[l-1]}                                 (H5)
    (H v)_b[l] = R{∂L/∂b[l]} = 1ᵀ R{Δ[l]}                                                          (H6)

The terms that carry a first derivative of the loss (Δ, or A[L] - Y) are where the Hessian differs from the
Gauss-Newton matrix G = Jᵀ (∂²ℓ/∂ŷ²) J: (H3-mse)'s σ_L'' term, (H4)'s Δ[l+1] V[l+1] and σ'' terms, and (H5)'s
Δ[l]ᵀ R{A[l-1]}. Dropping them all leaves G v (equal to H v only where the residuals vanish), which
:func:`jaxmlp.check_hvp` tells apart from H v. At a kink of relu σ'' is 0, as in jax's derivatives.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxmlp import backprop, checks
from jaxmlp.mlp import prepare
from jaxmlp.types import Layer


def _needs_grad2(sigma, role):
    if sigma.grad2 is None:
        raise ValueError(f"hvp needs the second derivative of the {role} activation {sigma.name!r}, and it has none: "
                         f"give it as Activation(..., grad2=lambda z: ...), written by hand like its grad")
    return sigma.grad2


def hvp(params, v, x, y, *, activation="relu", output_activation=None, loss="mse"):
    """H v: the Hessian of :func:`jaxmlp.loss_fn` at ``params`` times the direction ``v``, by (H1)-(H6).

    Args:
      params: a tuple of ``Layer(W, b)``.
      v: the direction, a pytree like ``params``.
      x, y, activation, output_activation, loss: as for :func:`jaxmlp.loss_fn`.

    Returns:
      A tuple of ``Layer`` like ``params``; equals ``jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]``.

    Raises:
      ValueError: for an activation without a hand-written second derivative (``Activation.grad2``), or a
        ``v`` not shaped like ``params``.
    """
    sigma, sigma_out, Y, fp = prepare(params, x, y, activation, output_activation, loss)
    checks.like_params(params, v, "v")
    L = len(params)
    d2sigma = _needs_grad2(sigma, "hidden") if L > 1 else None
    Z, A = fp.z, fp.a
    # R-forward (H1)-(H2); R{A[0]} = 0, so its products are left out rather than computed as zeros
    RZ, RA = [None] * (L + 1), [None] * (L + 1)
    for l in range(1, L + 1):
        (W, _), (V, c) = params[l - 1], v[l - 1]
        RZ[l] = A[l - 1] @ V.T + c[None, :]  # (H1)
        if l > 1:
            RZ[l] = RZ[l] + RA[l - 1] @ W.T  # (H1)
        if l < L:
            RA[l] = sigma.grad(Z[l]) * RZ[l]  # (H2)
        elif loss == "ce":
            RA[l] = A[l] * (RZ[l] - jnp.sum(A[l] * RZ[l], axis=-1, keepdims=True))  # (H2), softmax
        else:
            RA[l] = sigma_out.grad(Z[l]) * RZ[l]  # (H2)
    # Δ[L] (B1), as backward computes it, and R{Δ[L]} (H3) with the same n
    delta = backprop.output_delta(fp, Y, sigma_out, loss)  # (B1)
    n = backprop.mean_count(A[L], loss)
    if loss == "mse":
        d2out = _needs_grad2(sigma_out, "output")
        R_delta = (2.0 / n) * (RA[L] * sigma_out.grad(Z[L]) + (A[L] - Y) * d2out(Z[L]) * RZ[L])  # (H3-mse)
    else:
        R_delta = RA[L] / n  # (H3-ce)
    Hv = [None] * L
    for l in range(L, 0, -1):
        RW = R_delta.T @ A[l - 1]  # (H5)
        if l > 1:
            RW = RW + delta.T @ RA[l - 1]  # (H5)
        Hv[l - 1] = Layer(W=RW, b=jnp.sum(R_delta, axis=0))  # (H5), (H6)
        if l > 1:
            (W, _), (V, _) = params[l - 1], v[l - 1]
            back = delta @ W  # Δ[l] W[l], as in (B2)
            R_delta = ((R_delta @ W + delta @ V) * sigma.grad(Z[l - 1])
                       + back * d2sigma(Z[l - 1]) * RZ[l - 1])  # (H4)
            delta = back * sigma.grad(Z[l - 1])  # (B2)
    return type(params)(Hv)
