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
    """One leaf of a derivative (a gradient's leaf, or an input leaf x output leaf of a rule) against both
    references.

    Attributes:
      path: the leaf, ``jax.tree_util.keystr`` of its path (e.g. ``"[0].W"``, ``"['W']"``); for a rule,
        ``"input -> output"``.
      ok: whether the leaf passes; ``reason`` says why not (empty when ok), or what was excused (kinks).
      shape: the reference's shape.
      autodiff: :class:`Agreement` with jax's derivative; None when not comparable.
      finite_diff: agreement with central finite differences over the leaf's directions; None when none ran.
      fd_checked: what finite differences checked, e.g. ``"all 6"`` or ``"16 dirs"``.
      flagged: failing directions where finite differences are not conclusive, so not judged (not smooth,
        or not converging as h halves).
      kinks: entries where the value differs from jax's but the loss has a kink and the value lies between
        its one-sided slopes (judged, and passed, by ``kinks="allow"``).
      worst_index: the multi-index in the leaf of the worst entry (largest disagreement with jax's
        derivative); None for a leaf that could not be compared.
      worst_value, worst_reference: the value returned there, and jax's.
      worst_fd: the finite-difference estimate there, None where no finite difference was taken there.
    """

    path: str
    ok: bool
    reason: str = ""
    shape: tuple = ()
    autodiff: Agreement | None = None
    finite_diff: Agreement | None = None
    fd_checked: str = ""
    flagged: int = 0
    kinks: int = 0
    worst_index: tuple | None = None
    worst_value: float | None = None
    worst_reference: float | None = None
    worst_fd: float | None = None


@dataclass(frozen=True)
class LossCheck:
    """The row for a value itself: the backward's returned loss against ``f(θ)`` (V1), or a rule's primal
    output against the reference's."""

    value: float
    reference: float
    abs_err: float
    ok: bool
    reason: str = ""
    path: str = "loss"


def _plain(value):
    if isinstance(value, Agreement):
        return value._asdict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Report:
    """What every checker's report offers: ``ok`` and ``bool()``, ``failures``, ``raise_for_failure()``,
    ``to_dict()`` (JSON-ready), the worst relative errors, and ``print()`` as a table."""

    @property
    def ok(self) -> bool:
        return (self.value_check is None or self.value_check.ok) and all(r.ok for r in self.rows)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def failures(self) -> tuple[str, ...]:
        """``"path: reason"`` for the value row and every failing leaf."""
        value = () if self.value_check is None or self.value_check.ok else (
            f"{self.value_check.path}: {self.value_check.reason}",)
        return value + tuple(f"{r.path}: {r.reason}" for r in self.rows if not r.ok)

    def raise_for_failure(self) -> None:
        """Raise ``AssertionError`` listing the failing leaves (for a user's pytest), else do nothing."""
        if not self.ok:
            raise AssertionError(f"{self.kind} check failed:\n  " + "\n  ".join(self.failures) + "\n\n" + str(self))

    def to_dict(self) -> dict:
        """The report as plain JSON-ready values: ``ok``, the value row, one dict per leaf row, the failures."""
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in ("rows", "value_check", "loss_check")}
        value = None if self.value_check is None else _plain(dataclasses.asdict(self.value_check))
        return {"kind": self.kind, "ok": self.ok, **fields, "value": value,
                "rows": [_plain(dataclasses.asdict(r)) for r in self.rows], "failures": list(self.failures)}

    @property
    def max_rel_autodiff(self) -> float:
        return max((r.autodiff.max_rel for r in self.rows if r.autodiff is not None), default=float("inf"))

    @property
    def max_rel_fd(self) -> float:
        return max((r.finite_diff.max_rel for r in self.rows if r.finite_diff is not None), default=float("inf"))

    def _table(self) -> str:
        headers = ["leaf", "shape", "ad max abs", "ad max rel", "ad cos", "fd checked", "fd max abs", "fd max rel",
                   "fd cos", "fd flagged", "kinks", "ok", "reason"]
        nan3 = ("-", "-", "-")
        rows = []
        if self.value_check is not None:
            vc = self.value_check
            rel = vc.abs_err / abs(vc.reference) if vc.reference else vc.abs_err
            rows.append([vc.path, "-", vc.abs_err, rel, "-", "-", *nan3, "-", "-", vc.ok, vc.reason])
        rows += [[r.path, "x".join(map(str, r.shape)) or "scalar", *(r.autodiff or nan3), r.fd_checked or "-",
                  *(r.finite_diff or nan3), r.flagged, r.kinks, r.ok, r.reason] for r in self.rows]
        return format_table(headers, rows)


@dataclass(frozen=True)
class GradientReport(_Report):
    """The result of :func:`jaxmlp.check_gradients`; ``print(report)`` shows it as a table, ``bool(report)``
    is ``.ok``.

    Attributes:
      loss: the reference loss f(θ).
      loss_check: the row for the loss value itself (V1): the backward's loss against f(θ).
      rows: one :class:`LeafCheck` per leaf of θ, then one per unexpected extra leaf of the checked gradient.
      rtol_autodiff, rtol_fd, h: the tolerances and step used.
      fd_spent: where the finite-difference budget went: ``{"directions", "evaluations", "reruns",
        "kink_evaluations", "off_kink"}`` (loss evaluations, and whether the off-kink check ran).
    """

    loss: float
    loss_check: LossCheck
    rows: tuple[LeafCheck, ...]
    rtol_autodiff: float
    rtol_fd: float
    h: float
    fd_spent: dict = dataclasses.field(default_factory=dict)
    kind = "gradient"

    @property
    def value_check(self) -> LossCheck:
        return self.loss_check

    def __str__(self) -> str:
        lc, spent = self.loss_check, self.fd_spent
        head = (f"gradient check in float64: loss_fn = {self.loss:.10g}, backward's loss {lc.value:.10g}; pass if the "
                f"loss agrees (V1), every entry agrees with jax.grad to {self.rtol_autodiff:g} of its leaf's largest "
                f"(V2), or sits at a kink between the loss's one-sided slopes (V7), and finite differences agree to "
                f"{self.rtol_fd:g} or within rounding noise (V3)-(V4), h = {self.h:g}, where the loss is smooth "
                f"(V5)-(V6)")
        if spent:
            head += (f"\nfinite differences: {spent.get('directions', 0)} directions, {spent.get('evaluations', 0)} "
                     f"loss evaluations, {spent.get('reruns', 0)} more at h/2 and h/4 for failing directions, "
                     f"{spent.get('kink_evaluations', 0)} for entries that disagree with jax.grad"
                     + ("; off-kink check at a perturbed θ" if spent.get("off_kink") else ""))
        return head + "\n" + self._table()


@dataclass(frozen=True)
class RuleReport(_Report):
    """The result of :func:`jaxmlp.check_vjp`, :func:`jaxmlp.check_jvp` or :func:`jaxmlp.check_hvp`: one row per
    input leaf x output leaf (for an HVP, per parameter leaf), like :class:`GradientReport`'s.

    Attributes:
      kind: ``"vjp"``, ``"jvp"`` or ``"hvp"``.
      value_check: the rule's primal output against the reference's (a custom rule's forward), or None.
      rows: the :class:`LeafCheck` rows.
      rtol_autodiff, rtol_fd, h: the tolerances and step used.
      samples: the random cotangents, tangents or directions drawn per row.
    """

    kind: str
    value_check: LossCheck | None
    rows: tuple[LeafCheck, ...]
    rtol_autodiff: float
    rtol_fd: float
    h: float
    samples: int = 0

    def __str__(self) -> str:
        reference = {"vjp": "jax.vjp", "jvp": "jax.jvp", "hvp": "jax.jvp(jax.grad)"}[self.kind]
        head = (f"{self.kind} check in float64, {self.samples} random "
                f"{'directions' if self.kind == 'hvp' else 'cotangents' if self.kind == 'vjp' else 'tangents'} per "
                f"row: pass if every entry agrees with {reference} to {self.rtol_autodiff:g} of its leaf's largest, "
                f"and finite differences agree to {self.rtol_fd:g} or within rounding noise, h = {self.h:g}")
        return head + "\n" + self._table()
