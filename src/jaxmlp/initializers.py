"""Weight initialization schemes for a layer with ``W`` of shape ``(n_out, n_in)``.

Each scheme draws ``W`` (and, for ``"pytorch"``, ``b``); biases are zero otherwise::

    zeros           W = 0                                       (I1)  every hidden unit identical
    xavier          W ~ N(0, 2 / (n_in + n_out))                (I2)  Glorot & Bengio 2010
    xavier_uniform  W ~ U(±√(6 / (n_in + n_out)))               (I3)  same variance as (I2)
    he              W ~ N(0, 2 / n_in)                          (I4)  He et al. 2015, for ReLU
    he_uniform      W ~ U(±√(6 / n_in))                         (I5)  same variance as (I4)
    lecun           W ~ N(0, 1 / n_in)                          (I6)  LeCun et al. 1998
    pytorch         W, b ~ U(±1/√n_in)                          (I7)  as torch.nn.Linear

Why zeros cannot break symmetry (I1): with W = 0 every hidden unit of a layer computes the same z, gets
the same δ from backprop and so the same update; the units stay identical forever, and the layer acts
as one unit. Random schemes give each unit a different start.

The normal schemes are **untruncated**, as the lesson writes them. ``jax.nn.initializers``'
``glorot_normal``, ``he_normal`` and ``lecun_normal`` draw from a *truncated* normal (rescaled to the
same variance), so their tails differ; the tests check that ours are not truncated.

A callable ``init(key, shape, dtype)`` is accepted too, and is called the way
``jax.nn.initializers`` expect a dense kernel: with ``shape = (n_in, n_out)`` (fan-in first), the result
transposed to ``(n_out, n_in)``. So ``jax.nn.initializers.glorot_uniform()`` sees the right fan axes.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, int], object], jax.Array]


def _normal(std):
    # The barrier keeps XLA from folding std into jax.random.normal's own constant √2 (std·(√2·erfinv u)
    # rounds otherwise as (std·√2)·erfinv u): compiled, as init_mlp runs, the draw is bit for bit the eager one.
    return lambda key, n_out, n_in, dtype: std(n_out, n_in) * jax.lax.optimization_barrier(
        jax.random.normal(key, (n_out, n_in), dtype))


def _uniform(limit):
    return lambda key, n_out, n_in, dtype: jax.random.uniform(
        key, (n_out, n_in), dtype, minval=-limit(n_out, n_in), maxval=limit(n_out, n_in)
    )


_W_SCHEMES = {
    "zeros": lambda key, n_out, n_in, dtype: jnp.zeros((n_out, n_in), dtype),  # (I1)
    "xavier": _normal(lambda n_out, n_in: math.sqrt(2.0 / (n_in + n_out))),  # (I2)
    "xavier_uniform": _uniform(lambda n_out, n_in: math.sqrt(6.0 / (n_in + n_out))),  # (I3)
    "he": _normal(lambda n_out, n_in: math.sqrt(2.0 / n_in)),  # (I4)
    "he_uniform": _uniform(lambda n_out, n_in: math.sqrt(6.0 / n_in)),  # (I5)
    "lecun": _normal(lambda n_out, n_in: math.sqrt(1.0 / n_in)),  # (I6)
    "pytorch": _uniform(lambda n_out, n_in: 1.0 / math.sqrt(n_in)),  # (I7)
}
NAMES: tuple[str, ...] = tuple(_W_SCHEMES)


def init_layer(key, n_in: int, n_out: int, init: str | Initializer, dtype):
    """Draw one layer's ``(W, b)`` with the scheme ``init`` (a name or a callable)."""
    key_W, key_b = jax.random.split(key)
    b = jnp.zeros((n_out,), dtype)
    if callable(init):
        W = jnp.asarray(init(key_W, (n_in, n_out), dtype), dtype)
        if W.shape != (n_in, n_out):
            raise ValueError(f"init callable returned shape {W.shape} for the kernel shape {(n_in, n_out)}")
        return W.T, b
    if not isinstance(init, str):
        raise TypeError(f"init must be a name or a callable (key, shape, dtype) -> array, got {init!r}")
    if init not in _W_SCHEMES:
        raise ValueError(f"unknown init {init!r}; valid names: {', '.join(NAMES)}, or a callable")
    W = _W_SCHEMES[init](key_W, n_out, n_in, dtype)
    if init == "pytorch":
        bound = 1.0 / math.sqrt(n_in)
        b = jax.random.uniform(key_b, (n_out,), dtype, minval=-bound, maxval=bound)  # (I7)
    return W, b
