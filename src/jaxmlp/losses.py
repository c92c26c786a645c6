"""Losses: mean squared error, binary and multi-class cross-entropy, each returning a scalar mean.

With ŷ the network's output, y the target, B the batch size and C the number of outputs::

    mse                               L = 1/(B C) Σ_b Σ_c (ŷ_bc - y_bc)²                        (L1)
    binary_cross_entropy              L = -1/(B C) Σ_b Σ_c [y log ŷ + (1 - y) log(1 - ŷ)]       (L2)
    cross_entropy                     L = -1/B Σ_b Σ_c y_bc log ŷ_bc                            (L3)
    binary_cross_entropy_with_logits  L = 1/(B C) Σ_b Σ_c [softplus(z) - y z],  ŷ = σ(z)       (L4)
    softmax_cross_entropy_with_logits L = 1/B Σ_b [logsumexp(z_b) - Σ_c y_bc z_bc]              (L5)

Where the 1/n lives: MSE and BCE average over **every element** (batch and outputs), while CE averages
over the **batch** the per-example **sum** over classes. (Averaging CE over classes as well divides the
gradient by C; JAX's own MNIST example once did that by mistake.)

Cross-entropy's ``y`` is one-hot ``(B, C)`` or integer labels ``(B,)``. An unbatched output ``(C,)`` is
one example (B = 1). Shapes must match exactly: ``(B,)`` against ``(B, 1)`` is an error, never a silent
broadcast into a ``(B, B)`` matrix.

**Labels outside [0, C).** ``fit`` and ``fit_ensemble`` hold their data concretely and refuse such a
label with a ValueError (:func:`jaxmlp.checks.labels_in_range`). Under ``jit`` nothing can raise on a
value, and ``jax.nn.one_hot`` maps a label outside [0, C) (C, or -1) to an all-zero row. So that
example's target has no class: in (L5) its term is ``logsumexp(z_b)`` alone (no ``- z_b,y``; still
divided by the full B), in (L3) it contributes 0, and its gradient with respect to the logits is
``softmax(z_b) / B`` (backprop's a - y with y = 0), which pushes every class of that example down. A
NumPy-style negative index (-1 as the last class) is *not* what happens.

Stability: (L4) and (L5) are computed from the logits and are finite at logits of ±1e4. The
probability forms (L2), (L3) clamp each log at -100, as ``torch.nn.BCELoss`` does, so that an output
that rounds to exactly 0 or 1 gives a large finite loss, not inf, and a finite gradient, not NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp import checks

LOG_FLOOR = -100.0
NAMES = ("mse", "bce", "ce")


def _log(p):
    """log p clamped at -100, with a finite gradient at p = 0 too (the double-where: never log 0)."""
    positive = p > 0
    return jnp.maximum(jnp.where(positive, jnp.log(jnp.where(positive, p, 1)), LOG_FLOOR), LOG_FLOOR)


def mse(y_hat, y):
    """Mean squared error (L1), averaged over every element."""
    checks.target_matches(y_hat, y)
    return jnp.mean((y_hat - y) ** 2)  # (L1)


def binary_cross_entropy(y_hat, y):
    """Binary cross-entropy on probabilities ŷ ∈ [0, 1] (L2), averaged over every element."""
    checks.target_matches(y_hat, y)
    return -jnp.mean(y * _log(y_hat) + (1 - y) * _log(1 - y_hat))  # (L2)


def binary_cross_entropy_with_logits(z, y):
    """Binary cross-entropy on logits z, ŷ = σ(z) (L4), averaged over every element. Stable at any z."""
    checks.target_matches(z, y)
    return jnp.mean(jnp.logaddexp(z, 0) - y * z)  # (L4): softplus(z) = log(1 + e^z)


def one_hot_targets(y, y_hat):
    """The one-hot form of cross-entropy's target: integer labels become one-hot rows; one-hot passes."""
    checks.class_target_matches(y_hat, y)
    if jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, y_hat.shape[-1], dtype=y_hat.dtype)
    return y


def _batch_size(y_hat):
    return 1 if y_hat.ndim == 1 else y_hat.shape[0]


def cross_entropy(y_hat, y):
    """Cross-entropy on class probabilities ŷ (L3): the batch mean of the per-example sum over classes."""
    Y = one_hot_targets(y, y_hat)
    return -jnp.sum(Y * _log(y_hat)) / _batch_size(y_hat)  # (L3)


def softmax_cross_entropy_with_logits(z, y):
    """Cross-entropy on logits z, ŷ = softmax(z) (L5): batch mean of the per-example sum. Stable."""
    Y = one_hot_targets(y, z)
    lse = jax.nn.logsumexp(z, axis=-1)
    return jnp.sum(lse - jnp.sum(Y * z, axis=-1)) / _batch_size(z)  # (L5)
