"""A network's loss and accuracy on a data set: :func:`evaluate`, and the same in chunks of bounded memory.

For ``bce`` the accuracy compares output > 0.5 with y > 0.5 over every output unit; for ``ce`` the argmax
of the output with the label. Every metric is a mean over examples of a per-example quantity, so the
means of equal chunks, weighted by their sizes, recombine exactly into the mean over the whole set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp import mlp

CHUNK_BUDGET = 1 << 22  # activations (numbers) of one chunk of an evaluation, all models together
MIN_CHUNK = 256  # ... but never fewer examples per chunk than this (a K = 4096 ensemble would get 8)


def metrics_of(value, A_L, Y, loss: str) -> dict:
    """The loss ``value`` and, for ``bce``/``ce``, the accuracy of the outputs ``A_L`` against ``Y``."""
    metrics = {"loss": value}
    if loss == "bce":
        metrics["accuracy"] = jnp.mean(((A_L > 0.5) == (Y > 0.5)).astype(jnp.float32))
    elif loss == "ce":
        labels = Y if jnp.issubdtype(Y.dtype, jnp.integer) else jnp.argmax(Y, axis=-1)
        metrics["accuracy"] = jnp.mean((jnp.argmax(A_L, axis=-1) == labels).astype(jnp.float32))
    return metrics


def evaluate(params, x, y, *, loss, activation="relu", output_activation=None):
    """The loss and, for ``bce``/``ce``, the accuracy of ``params`` on ``(x, y)``, as a dict of scalars.

    Args:
      params: a tuple of ``Layer(W, b)``.
      x: inputs ``(N, n_in)`` (or one example ``(n_in,)``).
      y: targets as :func:`jaxmlp.loss_fn` takes them: ``(N, n_out)`` for mse and bce, integer labels
        ``(N,)`` or one-hot ``(N, C)`` for ce.
      loss: ``"mse"``, ``"bce"`` or ``"ce"`` (required: it decides the metrics).
      activation, output_activation: as for :func:`jaxmlp.loss_fn` (``None``: the loss's natural output).

    Returns:
      ``{"loss": L}`` as (L1)-(L5) average it, plus ``"accuracy"`` for bce and ce, each a 0-d array.
      Works under ``jit``; on a NaN input the loss is NaN (nothing hides it).
    """
    value, (A_L, Y) = mlp.loss_and_output(params, x, y, activation, output_activation, loss)
    return metrics_of(value, A_L, Y, loss)


def evaluate_in_chunks(params, x, y, chunk: int, **kw):
    """:func:`evaluate` on the whole set, ``chunk`` examples at a time (a ``lax.map``), so that its
    temporary memory stays that of one chunk; the chunks' means recombine weighted by example count."""
    N = x.shape[0]
    n_full = (N // chunk) * chunk
    if n_full == 0:
        return evaluate(params, x, y, **kw)

    def one_chunk(start):  # a dynamic slice per chunk: x[:n_full] as one array would copy the data set
        return evaluate(params, *(jax.lax.dynamic_slice_in_dim(t, start, chunk) for t in (x, y)), **kw)

    per_chunk = jax.lax.map(one_chunk, jnp.arange(0, n_full, chunk))
    total = jax.tree.map(lambda m: jnp.sum(m) * chunk, per_chunk)
    if n_full < N:
        rest = evaluate(params, x[n_full:], y[n_full:], **kw)
        total = jax.tree.map(lambda t, r: t + r * (N - n_full), total, rest)
    return jax.tree.map(lambda t: t / N, total)


def width(params) -> int:
    """The activations of one example, all layers of one model: n_0 + n_1 + ... + n_L."""
    return params[0].W.shape[-1] + sum(layer.W.shape[-2] for layer in params)


def chunk_size(params, n_models: int = 1) -> int:
    """Examples per evaluation chunk: ``CHUNK_BUDGET`` over the activations of one example (all layers, all
    models), and at least ``MIN_CHUNK``."""
    return max(MIN_CHUNK, CHUNK_BUDGET // (n_models * width(params)))
