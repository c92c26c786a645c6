"""The reports of the checkers: per-leaf rows, their tables, and the array comparisons they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LeafCheck:
    """One leaf of the gradient against both references.

    Attributes:
      path: ``jax.tree_util.keystr`` of the leaf's path in θ, e.g. ``"[0].W"`` or ``"['W']"``.
      ok: whether the leaf passes; ``reason`` says why not (empty when ok).
      shape: the reference's shape.
      autodiff: :class:`~jaxmlp.report.Agreement` with ``jax.grad`` (V2); None when not comparable.
      finite_diff: agreement of ⟨g, v⟩ with (V3) over the leaf's directions; None when not comparable.
      fd_checked: what finite differences checked, e.g. ``"all 6"`` or ``"16 dirs"``.
      flagged: failing directions where finite differences are not conclusive, so not judged: not
        smooth (V5), or not converging as h halves (V6), or near a kink (G2).
      near_kink: for a jaxmlp MLP, the layer's pre-activations within reach of a kink (G2); else None.
    """

    path: str
    ok: bool
    reason: str = ""
    shape: tuple = ()
    autodiff: Agreement | None = None
    finite_diff: Agreement | None = None
    fd_checked: str = ""
    flagged: int = 0
    near_kink: int | None = None


@dataclass(frozen=True)
class LossCheck:
    """The row for the loss value itself: the backward's returned loss against ``f(θ)`` (V1)."""

    value: float
    reference: float
    abs_err: float
    ok: bool
    reason: str = ""
    path: str = "loss"


@dataclass(frozen=True)
class GradientReport:
    """The result of a gradient check; ``print(report)`` shows it as a table, ``bool(report)`` is ``.ok``.

    Attributes:
      loss: the reference loss f(θ).
      loss_check: the row for the loss value itself (V1): the backward's loss against f(θ); the
        table's first line.
      rows: one :class:`LeafCheck` per leaf of the reference gradient (θ's leaves), then one per
        unexpected extra leaf of the checked gradient.
    """

    loss: float
    loss_check: LossCheck
    rows: tuple[LeafCheck, ...]
    rtol_autodiff: float
    rtol_fd: float
    h: float

    @property
    def ok(self) -> bool:
        return self.loss_check.ok and all(r.ok for r in self.rows)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failures(self) -> tuple[str, ...]:
        """``"path: reason"`` for the loss and every failing leaf."""
        loss = () if self.loss_check.ok else (f"loss: {self.loss_check.reason}",)
        return loss + tuple(f"{r.path}: {r.reason}" for r in self.rows if not r.ok)

    def to_dict(self) -> dict:
        """The report as plain JSON-ready values: ``ok``, the loss row, and one dict per leaf row."""
        def plain(row):
            return {k: (v._asdict() if isinstance(v, Agreement) else list(v) if isinstance(v, tuple) else v)
                    for k, v in dataclasses.asdict(row).items()}

        return {"ok": self.ok, "loss": plain(self.loss_check), "rows": [plain(r) for r in self.rows],
                "failures": list(self.failures)}

    def raise_for_failure(self) -> None:
        """Raise ``AssertionError`` listing the failing leaves (for a user's pytest), else do nothing."""
        if not self.ok:
            raise AssertionError("gradient check failed:\n  " + "\n  ".join(self.failures) + "\n\n" + str(self))

    @property
    def max_rel_autodiff(self) -> float:
        return max((r.autodiff.max_rel for r in self.rows if r.autodiff is not None), default=float("inf"))

    @property
    def max_rel_fd(self) -> float:
        return max((r.finite_diff.max_rel for r in self.rows if r.finite_diff is not None), default=float("inf"))

    def __str__(self) -> str:
        kinks = any(r.near_kink is not None for r in self.rows)
        headers = ["leaf", "shape", "ad max abs", "ad max rel", "ad cos", "fd checked", "fd max abs", "fd max rel",
                   "fd cos", "fd flagged", *(["near kink"] if kinks else []), "ok", "reason"]
        lc, nan3 = self.loss_check, ("-", "-", "-")
        rel = lc.abs_err / abs(lc.reference) if lc.reference else lc.abs_err
        rows = [["loss", "scalar", lc.abs_err, rel, "-", "-", *nan3, "-", *(["-"] if kinks else []), lc.ok, lc.reason]]
        rows += [[r.path, "x".join(map(str, r.shape)) or "scalar", *(r.autodiff or nan3), r.fd_checked or "-",
                  *(r.finite_diff or nan3), r.flagged, *([r.near_kink if r.near_kink is not None else "-"]
                                                           if kinks else []), r.ok, r.reason]
                 for r in self.rows]
        head = (f"gradient check in float64: loss_fn = {self.loss:.10g}, backward's loss {lc.value:.10g}; pass if "
                f"the loss agrees (V1), ad max rel <= {self.rtol_autodiff:g} (V2) and fd max rel <= "
                f"{self.rtol_fd:g} or within rounding noise (V3)-(V4), h = {self.h:g}; fd not judged along "
                f"flagged directions (V5)-(V6)")
        return head + "\n" + format_table(headers, rows)
