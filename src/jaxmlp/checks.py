"""Input validation, run at trace time on static shapes, so bad input fails before any compute.

Every function here but the last two looks only at shapes, dtypes and Python values, which are static
under ``jit``, ``grad`` and ``vmap``: the errors are raised while tracing, with a message that names the
argument and shows the shapes, never as a deep XLA error or a silent broadcast.

The last two, :func:`finite_values` and :func:`labels_in_range`, read the *values* of data that a caller
holds concretely (``fit`` and ``fit_ensemble`` do), on the host with NumPy, so that they compile
nothing; on a tracer they do nothing (under ``jit`` a value cannot raise).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _shape(a):
    return tuple(a.shape) if hasattr(a, "shape") else tuple(np.shape(a))


def _ndim(a):
    return len(_shape(a))


def is_int(value) -> bool:
    """A Python or NumPy integer, and not a bool (``True`` is an ``int`` to Python, never a width or a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def sizes(sizes) -> tuple[int, ...]:
    """Validate layer widths like ``[5, 64, 32, 16, 1]``: at least two positive integers."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a sequence of ints like [5, 64, 1], got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least two entries (n_in and n_out), got {list(sizes)!r}")
    for i, n in enumerate(sizes):
        if not is_int(n):
            raise TypeError(f"sizes[{i}] must be an int, got {type(n).__name__}: {n!r} in {list(sizes)!r}")
        if n <= 0:
            raise ValueError(f"sizes[{i}] must be a positive width, got {n} in {list(sizes)!r}")
    return tuple(int(n) for n in sizes)


def params_chain(params) -> tuple[int, ...]:
    """Check that ``params`` is a sequence of ``(W, b)`` layers whose widths connect; return the widths."""
    if not isinstance(params, (tuple, list)) or len(params) == 0:
        raise TypeError(f"params must be a non-empty tuple of Layer(W, b), got {type(params).__name__}")
    widths = []
    for l, layer in enumerate(params, start=1):
        if not isinstance(layer, tuple) or len(layer) != 2:
            raise TypeError(f"params[{l - 1}] (layer {l}) must be a Layer(W, b), got {type(layer).__name__}")
        W, b = layer
        if _ndim(W) != 2:
            raise ValueError(f"layer {l}: W must have shape (n_out, n_in), got shape {_shape(W)}")
        if _shape(b) != (_shape(W)[0],):
            raise ValueError(
                f"layer {l}: b must have shape (n_out,) = ({_shape(W)[0]},) to match W of shape "
                f"{_shape(W)}, got shape {_shape(b)}"
            )
        n_out, n_in = _shape(W)
        if widths and n_in != widths[-1]:
            raise ValueError(
                f"params do not connect: layer {l - 1} outputs {widths[-1]} units but layer {l}'s W has "
                f"shape {_shape(W)}, expecting n_in = {widths[-1]}"
            )
        if not widths:
            widths.append(n_in)
        widths.append(n_out)
    return tuple(widths)


def like_params(params, tree, name: str) -> None:
    """``tree`` (a direction, an update) is layer by layer ``(W, b)`` of the shapes of ``params``."""
    if not isinstance(tree, (tuple, list)) or len(tree) != len(params):
        raise ValueError(f"{name} must be {len(params)} layers (W, b) like params, got "
                         f"{type(tree).__name__}{f' of {len(tree)}' if isinstance(tree, (tuple, list)) else ''}")
    for l, (layer, like) in enumerate(zip(tree, params), start=1):
        if not isinstance(layer, tuple) or len(layer) != 2:
            raise TypeError(f"{name}[{l - 1}] (layer {l}) must be a Layer(W, b), got {type(layer).__name__}")
        for leaf, a, ref in zip("Wb", layer, like):
            if _shape(a) != _shape(ref):
                raise ValueError(f"{name}[{l - 1}].{leaf} must have the shape of params[{l - 1}].{leaf}, "
                                 f"{_shape(ref)}, got {_shape(a)}")


def random_key(key):
    """``key`` is a ``jax.random`` key: a typed key of shape () (``jax.random.key(seed)``), or a legacy
    ``jax.random.PRNGKey(seed)``, uint32 of shape (2,). Returns it."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    if (typed and _shape(key) == ()) or (not typed and dtype == jnp.uint32 and _shape(key) == (2,)):
        return key
    raise TypeError(f"key must be a jax.random key, jax.random.key(seed) (or a legacy jax.random.PRNGKey(seed)), "
                    f"got {type(key).__name__}" + (f" of dtype {dtype} and shape {_shape(key)}" if dtype else
                                                   f": {key!r}"))


def as_array(a):
    """``a`` if it is an array (NumPy or jax), else ``jnp.asarray(a)``: data given as nested lists, as
    :func:`jaxmlp.loss_fn` accepts it."""
    return a if hasattr(a, "dtype") and hasattr(a, "shape") else jnp.asarray(a)


def finite_params(params) -> None:
    """:func:`finite_values` of every leaf of ``params`` (a stack of models too): training from a NaN has no
    last finite parameters to hand back."""
    for l, layer in enumerate(params):
        for leaf, a in zip("Wb", layer):
            finite_values(f"params[{l}].{leaf}", a, fix="Start from finite parameters (init_mlp, or a checkpoint "
                                                        "saved before the run diverged)")


def input_matches(widths, x) -> None:
    """``x`` is ``(n_in,)`` or ``(batch, n_in)`` with the first layer's ``n_in``."""
    if _ndim(x) not in (1, 2):
        raise ValueError(f"x must have shape (n_in,) or (batch, n_in), got {_ndim(x)} dims: shape {_shape(x)}")
    if _shape(x)[-1] != widths[0]:
        raise ValueError(
            f"x has width {_shape(x)[-1]} (shape {_shape(x)}) but the first layer expects n_in = {widths[0]}"
        )


def target_matches(y_hat, y) -> None:
    """``y`` has exactly the output's shape: no broadcast of ``(B,)`` against ``(B, 1)``."""
    if _shape(y) == _shape(y_hat):
        return
    if _ndim(y) == _ndim(y_hat) == 2 and _shape(y)[1] == _shape(y_hat)[1]:
        raise ValueError(
            f"y has batch {_shape(y)[0]} but the output has batch {_shape(y_hat)[0]} "
            f"(y shape {_shape(y)}, output shape {_shape(y_hat)})"
        )
    raise ValueError(
        f"y has shape {_shape(y)} but the output has shape {_shape(y_hat)}; they must match exactly "
        f"(no broadcasting: reshape y to {_shape(y_hat)})"
    )


def class_target_matches(y_hat, y) -> None:
    """Cross-entropy's ``y``: one-hot with the output's shape, or integer labels with its batch shape."""
    if jnp.issubdtype(jnp.result_type(y), jnp.integer):
        if _shape(y) != _shape(y_hat)[:-1]:
            raise ValueError(
                f"integer labels y must have shape {_shape(y_hat)[:-1]} for an output of shape "
                f"{_shape(y_hat)}, got shape {_shape(y)}"
            )
        return
    target_matches(y_hat, y)


def batch_matches(x, y) -> None:
    """``y`` carries the same batch as ``x`` (checked before the output shape, for a clearer message)."""
    if _ndim(x) == 2 and _ndim(y) >= 1 and _shape(y)[0] != _shape(x)[0]:
        raise ValueError(f"y has batch {_shape(y)[0]} but x has batch {_shape(x)[0]} "
                         f"(x shape {_shape(x)}, y shape {_shape(y)})")
    if _ndim(x) == 1 and _ndim(y) == 2:
        raise ValueError(f"x is one example of shape {_shape(x)} but y is batched with shape {_shape(y)}")


def _host_values(a):
    """``a`` as a NumPy array, or None for a tracer (values unknown while tracing)."""
    if isinstance(a, jax.core.Tracer):
        return None
    return np.asarray(a)


def finite_values(name: str, a, fix: str = "Drop or impute those rows before training") -> None:
    """Every value of the concrete array ``a`` is finite; else a ValueError naming ``name``, the count of
    NaN/inf values and the first row that holds one (a NaN in the data is bad input, not divergence)."""
    if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):  # jnp: NumPy does not count bfloat16 as inexact
        return
    values = _host_values(a)  # NumPy on the host: the check itself compiles nothing
    if values is None:
        return
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad
    first = int(np.argmax(rows))
    n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    raise ValueError(f"{name} holds {n_nan + n_inf} non-finite values ({n_nan} NaN, {n_inf} inf) in "
                     f"{int(rows.sum())} of its {len(rows)} rows; the first is row {first}: "
                     f"{name}[{first}] = {np.array2string(values[first], threshold=8, edgeitems=3)}. "
                     f"{fix}")


def labels_in_range(y, n_classes: int, name: str = "y") -> None:
    """Integer class labels of the concrete array ``y`` lie in [0, n_classes); else a ValueError naming the
    first offending label, its row and C. (Under ``jit`` nothing can raise: see :mod:`jaxmlp.losses`.)"""
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        return
    values = _host_values(y)
    if values is None:
        return
    bad = (values < 0) | (values >= n_classes)
    if not bad.any():
        return
    first = int(np.argmax(bad.ravel()))
    raise ValueError(f"{name} holds class label {int(values.ravel()[first])} (row {first}; {int(bad.sum())} "
                     f"labels in all) outside [0, C) = [0, {n_classes}): the output layer has C = {n_classes} "
                     f"units, one per class")
