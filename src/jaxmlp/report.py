"""Plain-text tables and the array comparisons the verification reports share."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Agreement(NamedTuple):
    """How closely an array ``g`` agrees with a reference ``r``.

    Attributes:
      max_abs: ``max |g - r|``.
      max_rel: ``max |g - r| / max |r|``: relative to the reference's scale, so that entries near zero
        (where an elementwise ratio means nothing) do not dominate. 0 when both are all zero.
      cosine: ``<g, r> / (|g| |r|)``; 1 when both are all zero.
    """

    max_abs: float
    max_rel: float
    cosine: float


def agreement(g, r) -> Agreement:
    g = np.asarray(g, np.float64).ravel()
    r = np.asarray(r, np.float64).ravel()
    err = float(np.max(np.abs(g - r), initial=0.0))
    scale = float(np.max(np.abs(r), initial=0.0))
    rel = 0.0 if err == 0.0 else (err / scale if scale > 0 else float("inf"))
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries: an inf or NaN cosine, no warning
        norms = float(np.linalg.norm(g) * np.linalg.norm(r))
        cos = float(g @ r) / norms if norms > 0 else None
    if cos is None:
        cos = 1.0 if err == 0.0 else 0.0
    return Agreement(err, rel, cos)


def _cell(v) -> str:
    if isinstance(v, bool):
        return "ok" if v else "FAIL"
    if isinstance(v, float):
        return f"{v:.2e}" if v == 0 or not 1e-3 <= abs(v) < 1e4 else f"{v:.6f}".rstrip("0").rstrip(".")
    return str(v)


def format_table(headers, rows) -> str:
    """Format ``rows`` (sequences of cells) under ``headers`` as an aligned plain-text table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])
