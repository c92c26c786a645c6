"""The data types every other module speaks: a layer's parameters and what a forward pass computed.

Parameters are pytrees: a ``tuple`` of :class:`Layer`, one per affine map, so every
``jax.tree_util`` function (and optax, and ``jax.vmap`` over stacked ensembles) works on them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

Array = jax.Array


class Layer(NamedTuple):
    """One affine layer, z = W a + b.

    Attributes:
      W: weights of shape ``(n_out, n_in)``, so that ``W @ a`` maps an ``n_in`` activation to ``n_out``
        pre-activations, exactly as the lesson writes it.
      b: biases of shape ``(n_out,)``.
    """

    W: Any
    b: Any


Params = tuple[Layer, ...]


class ForwardPass(NamedTuple):
    """Everything a forward pass computed, indexed as the lesson indexes it: what backprop reads.

    Attributes:
      z: ``(None, z[1], ..., z[L])``: the pre-activations; ``z[0]`` does not exist, so slot 0 is ``None``
        (an empty pytree node) and ``fp.z[l]`` is the lesson's z[l].
      a: ``(a[0], a[1], ..., a[L])``: the activations, with ``a[0] = x``.
    """

    z: tuple
    a: tuple
