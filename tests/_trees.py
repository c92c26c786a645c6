"""Pytree comparisons shared by the test modules (``import _trees``: pytest puts ``tests/`` on the path)."""

import chex
import jax

from jaxmlp.report import agreement


def max_rel(a, b) -> float:
    """The largest per-leaf ``max |a - b| / max |b|`` of two pytrees of one structure: a trajectory's or a
    layer's scale, not each element's (:func:`jaxmlp.report.agreement`'s ``max_rel``)."""
    return max(agreement(u, v).max_rel for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def assert_trees_equal(a, b):
    """Bitwise equal pytrees: same structure, shapes, dtypes and values."""
    chex.assert_trees_all_equal(a, b, strict=True)
