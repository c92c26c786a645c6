r"""Checking derivative rules of any function: VJPs, JVPs and Hessian-vector products.

:func:`jaxmlp.check_gradients` checks the gradient of a scalar loss. The rules researchers write by hand
are more often those of a layer with vector outputs, a ``jax.custom_vjp`` or ``jax.custom_jvp``, and,
for Newton-CG, K-FAC or influence functions, Hessian-vector products. For ``f: (x₁, ..., x_m) → y``
(pytrees in, a pytree out) with Jacobian J, each check draws random vectors, compares the rule with
jax's own derivative of the reference, entry by entry, and with central finite differences, in float64::

    vjp:  ū = rule(x, u)   against  jax.vjp(f, x)(u),    and  ⟨ūᵢ, v⟩  against  ⟨u, (f(x + h v) - f(x - h v)) / 2h⟩   (R1)
    jvp:  ẏ = rule(x, t)   against  jax.jvp(f, x, t),    and  ẏ       against  (f(x + h t) - f(x - h t)) / 2h        (R2)
    hvp:  H v              against  jax.jvp(jax.grad(L), θ, v),   and  (∇L(θ + h v) - ∇L(θ - h v)) / 2h          (R3)

u is a random cotangent supported on one output leaf, t a random tangent and v a random direction
supported on one input leaf, so each row of the report is one input leaf × one output leaf (for an HVP,
one parameter leaf), and a dropped contribution, a transposed cotangent or a wrong scale shows in the row
where it happens. An entry passes against jax when it is within ``rtol_autodiff`` of the largest entry of
its leaf over the samples (or 64 ε of the largest anywhere); a finite difference within ``rtol_fd`` of
the largest reference value, or within the rounding noise 10 ε λ / h, λ the largest value of the output
leaf the row differences (for an HVP, of the gradient's leaf), and at least 1: a large output elsewhere
does not hide an error in a small one. ``precision="float32"`` gives the tolerances for a rule that
computes in float32 (1e-5, 1e-4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import verify
from jaxmlp.report import Agreement, LeafCheck, LossCheck, RuleReport, agreement

_EPS = verify._EPS


def _largest(arrays) -> float:
    """max |a| over every entry of every array (0 for none): the scale of a rounding floor or noise."""
    return max((float(np.max(np.abs(np.asarray(a)), initial=0.0)) for a in arrays), default=0.0)


def _leaves(tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [verify._path(p) for p, _ in leaves], [leaf for _, leaf in leaves], treedef


def _random_like(key, leaves, j):
    """A pytree's leaves with standard-normal values in leaf ``j`` and zeros elsewhere."""
    return [jax.random.normal(key, jnp.shape(a), jnp.float64) if i == j else jnp.zeros(jnp.shape(a), jnp.float64)
            for i, a in enumerate(leaves)]


def _options(precision, rtol_autodiff, rtol_fd, h, samples):
    rtol_autodiff, rtol_fd = verify.tolerances(precision, rtol_autodiff, rtol_fd)
    verify.check_options(h, rtol_autodiff, rtol_fd, 2, 0, "allow")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got samples={samples!r}")
    return rtol_autodiff, rtol_fd


def _structure(given, like, what) -> list[str]:
    """Per leaf of ``like``, why ``given`` (a list of leaves, or None) cannot be compared, '' if it can."""
    if given is None:
        return [f"{what} is not a pytree of the inputs' structure"] * len(like)
    return [verify._structure_problem(g, tuple(np.shape(r)), np.float64) for g, r in zip(given, like)]


def _row(path, shape, got, ref, rtol_autodiff, rtol_fd, floor, noise, precision, dtype, fd_est=None,
         fd_products=None):
    """One row from the samples of one input leaf x output leaf. ``got``, ``ref``: the rule's and jax's values,
    one array per sample; the finite differences either entry by entry (``fd_est``, one array per sample) or
    as ``(rule's ⟨ū, v⟩, ⟨u, Jv⟩ estimated, jax's ⟨ū, v⟩)`` triples (``fd_products``, for a VJP)."""
    got, ref = np.stack(got), np.stack(ref)
    err = np.abs(got - ref)
    tau = max(rtol_autodiff * float(np.max(np.abs(ref), initial=0.0)), floor)
    reasons = []
    bad = err > tau
    if bad.any():
        rel = float(np.max(err)) / max(float(np.max(np.abs(ref))), 1e-300)
        reason = (f"disagrees with jax at {int(bad.any(axis=0).sum())} of {ref[0].size} entries (max rel {rel:.2e} > "
                  f"{rtol_autodiff:g})")
        if dtype is not None and jnp.finfo(dtype).eps > _EPS and precision == "float64":
            reason += f"; it came back as {dtype}: precision='float32' checks it at float32's tolerances"
        elif precision == "float64" and 1e-8 < rel < 1e-5:
            reason += "; an error the size of float32's rounding: does the rule compute in float32?"
        reasons.append(reason)
    if fd_est is not None:
        mine, est, refv = got.ravel(), np.stack(fd_est).ravel(), ref.ravel()
    elif fd_products:
        mine, est, refv = (np.asarray(a, np.float64) for a in zip(*fd_products))
    else:
        mine = est = refv = np.zeros(0)
    fd = None
    if mine.size:
        fd_err = np.abs(mine - est)
        scale = float(np.max(np.abs(refv), initial=0.0))
        fd = Agreement(float(np.max(fd_err)), verify._ratio(np.max(fd_err), scale), agreement(mine, est).cosine)
        failing = (fd_err > rtol_fd * scale) & (fd_err > noise)
        if failing.any():
            reasons.append(f"disagrees with finite differences at {int(failing.sum())} of {fd_err.size} "
                           f"{'entries' if fd_est is not None else 'samples'} (max rel {fd.max_rel:.2e} > {rtol_fd:g})")
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else None
    index = None if worst is None else tuple(int(k) for k in worst[1:])
    worst_fd = None if worst is None or fd_est is None else float(np.stack(fd_est)[worst])
    described = f"{len(got)} samples" if mine.size else "-"
    return LeafCheck(path, not reasons, "; ".join(reasons), shape, agreement(got, ref), fd, described, 0, 0, index,
                     None if worst is None else float(got[worst]), None if worst is None else float(ref[worst]),
                     worst_fd)


def _value_check(out, reference_out, rtol) -> LossCheck:
    """The rule's primal output against the reference's, over every output leaf."""
    got, want = (np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(t)] or [np.zeros(0)])
                 for t in (out, reference_out))
    if got.shape != want.shape:
        return LossCheck(float("nan"), float("nan"), float("inf"), False,
                         f"the rule's output has {got.size} numbers, the reference's {want.size}", path="output")
    err = float(np.max(np.abs(got - want), initial=0.0))
    scale = float(np.max(np.abs(want), initial=0.0))
    ok = err <= rtol * scale + 10 * _EPS * max(scale, 1.0)
    return LossCheck(float(np.max(np.abs(got), initial=0.0)), scale, err, ok,
                     "" if ok else f"the rule's primal output differs from the reference's (max abs {err:.2e})",
                     path="output")


def _perturbed(fn, primals, i, j, direction, h):
    """``fn`` at the primals with input leaf ``j`` of primal ``i`` moved by +h and -h along ``direction``."""
    def at(step):
        moved = list(primals)
        leaves, treedef = jax.tree.flatten(primals[i])
        leaves = [a + step * direction if k == j else a for k, a in enumerate(leaves)]
        moved[i] = jax.tree.unflatten(treedef, leaves)
        return fn(*moved)

    return at(h), at(-h)


def _inputs(primals):
    """(primal index, leaf index within it, path, leaf) for every leaf of every primal."""
    out = []
    for i, p in enumerate(primals):
        paths, leaves, _ = _leaves(p)
        out += [(i, j, f"[{i}]" + ("" if path == "(root)" else path), leaf) for j, (path, leaf) in
                enumerate(zip(paths, leaves))]
    return out


def _one_of(name, fn, rule, kind):
    if (fn is None) == (rule is None):
        raise TypeError(f"check_{kind} takes exactly one of {name}= (a function) or rule= (a jax.custom_{kind} "
                        f"function with the reference's signature)")


def check_vjp(reference, *primals, vjp=None, rule=None, samples: int = 3, h: float = 1e-6,
              precision: str = "float64", rtol_autodiff: float | None = None, rtol_fd: float | None = None,
              seed: int = 0) -> RuleReport:
    """Check a vector-Jacobian product rule of ``reference`` at ``primals``: (R1), one row per input leaf x
    output leaf.

    Args:
      reference: ``f(*primals) -> pytree``, traceable; jax's ``jax.vjp`` of it is the reference.
      primals: the inputs, pytrees of floating arrays (cast to float64).
      vjp: ``vjp(primals, cotangent) -> tuple``, one cotangent per primal (pytrees like the primals).
      rule: or a ``jax.custom_vjp`` function with ``reference``'s signature, whose rule is checked (and whose
        primal output is compared with ``reference``'s).
      samples: random cotangents per output leaf.
      h, precision, rtol_autodiff, rtol_fd, seed: as for :func:`jaxmlp.check_gradients`.

    Returns:
      A :class:`~jaxmlp.report.RuleReport` (``.ok``, ``bool()``, ``.rows``, ``.raise_for_failure()``).
    """
    _one_of("vjp", vjp, rule, "vjp")
    rtol_autodiff, rtol_fd = _options(precision, rtol_autodiff, rtol_fd, h, samples)
    with jax.enable_x64(True):
        primals = verify.to_float64(tuple(primals))
        y, ref_vjp = jax.vjp(reference, *primals)
        value_check = None
        if rule is not None:
            out, rule_vjp = jax.vjp(rule, *primals)
            value_check = _value_check(out, y, rtol_autodiff)
            user = lambda u: rule_vjp(u)
        else:
            user = lambda u: vjp(primals, u)
        out_paths, out_leaves, out_def = _leaves(y)
        inputs = _inputs(primals)
        in_leaves = [leaf for *_, leaf in inputs]
        keys = jax.random.split(jax.random.key(seed), (len(out_leaves), samples))
        got = {}  # (input, output) -> list over samples of the rule's cotangent of that input
        ref = {}
        dtypes = {}
        cotangents = {}
        problems = [""] * len(inputs)
        for k in range(len(out_leaves)):
            for s in range(samples):
                u = jax.tree.unflatten(out_def, _random_like(keys[k, s], out_leaves, k))
                cotangents[k, s] = u
                mine = user(u)
                mine_leaves = jax.tree.leaves(tuple(mine)) if isinstance(mine, (tuple, list)) and len(mine) == len(
                    primals) else None
                if mine_leaves is not None and len(mine_leaves) != len(in_leaves):
                    mine_leaves = None
                issue = _structure(mine_leaves, in_leaves, "the rule's cotangent")
                problems = [p or q for p, q in zip(problems, issue)]
                theirs = jax.tree.leaves(tuple(ref_vjp(u)))
                for i, _ in enumerate(inputs):
                    if not issue[i]:
                        got.setdefault((i, k), []).append(np.asarray(mine_leaves[i], np.float64))
                        dtypes[i] = np.asarray(mine_leaves[i]).dtype
                    ref.setdefault((i, k), []).append(np.asarray(theirs[i], np.float64))
        # Finite differences (R1): per input leaf, `samples` random directions v; <u, Jv> for every u.
        fd = {}
        fn = jax.jit(reference)
        lam = [max(1.0, _largest([y_k])) for y_k in out_leaves]  # per output leaf: its own rounding
        for i, (pi, j, _, leaf) in enumerate(inputs):
            for s in range(samples):
                v = jax.random.normal(jax.random.fold_in(jax.random.key(seed + 1), i * samples + s), jnp.shape(leaf),
                                      jnp.float64)
                plus, minus = _perturbed(fn, primals, pi, j, v, h)
                jv = [(np.asarray(a) - np.asarray(b)) / (2 * h) for a, b in zip(jax.tree.leaves(plus),
                                                                                  jax.tree.leaves(minus))]
                for k in range(len(out_leaves)):
                    for t in range(samples):
                        u = np.asarray(jax.tree.leaves(cotangents[k, t])[k])
                        est = float(np.sum(u * jv[k]))
                        refv = float(np.sum(ref[i, k][t] * np.asarray(v)))
                        if (i, k) in got:
                            fd.setdefault((i, k), []).append((float(np.sum(got[i, k][t] * np.asarray(v))), est, refv))
        floor = 64 * _EPS * _largest([r for rs in ref.values() for r in rs])
        rows = []
        for i, (_, _, path, leaf) in enumerate(inputs):
            for k, out_path in enumerate(out_paths):
                name = f"{path} <- {out_path}"
                if problems[i]:
                    rows.append(LeafCheck(name, False, problems[i], tuple(np.shape(leaf))))
                    continue
                u_norm = max(float(np.sum(np.abs(np.asarray(jax.tree.leaves(cotangents[k, t])[k]))))
                             for t in range(samples))
                rows.append(_row(name, tuple(np.shape(leaf)), got[i, k], ref[i, k], rtol_autodiff, rtol_fd, floor,
                                 10 * _EPS * lam[k] * u_norm / h, precision, dtypes.get(i), fd_products=fd.get((i, k))))
    return RuleReport("vjp", value_check, tuple(rows), rtol_autodiff, rtol_fd, h, samples)


def check_jvp(reference, *primals, jvp=None, rule=None, samples: int = 3, h: float = 1e-6,
              precision: str = "float64", rtol_autodiff: float | None = None, rtol_fd: float | None = None,
              seed: int = 0) -> RuleReport:
    """Check a Jacobian-vector product rule of ``reference`` at ``primals``: (R2), one row per input leaf x
    output leaf.

    Args:
      reference: ``f(*primals) -> pytree``, traceable; ``jax.jvp`` of it is the reference.
      primals: the inputs, pytrees of floating arrays (cast to float64).
      jvp: ``jvp(primals, tangents) -> (out, tangent_out)``, ``tangents`` a tuple like ``primals``.
      rule: or a ``jax.custom_jvp`` function with ``reference``'s signature, whose rule is checked.
      samples: random tangents per input leaf.
      h, precision, rtol_autodiff, rtol_fd, seed: as for :func:`jaxmlp.check_gradients`.

    Returns:
      A :class:`~jaxmlp.report.RuleReport`; its value row compares the rule's primal output with the reference's.
    """
    _one_of("jvp", jvp, rule, "jvp")
    rtol_autodiff, rtol_fd = _options(precision, rtol_autodiff, rtol_fd, h, samples)
    with jax.enable_x64(True):
        primals = verify.to_float64(tuple(primals))
        y = reference(*primals)
        out_paths, out_leaves, _ = _leaves(y)
        inputs = _inputs(primals)
        fn = jax.jit(reference)
        lam = [max(1.0, _largest([y_k])) for y_k in out_leaves]  # per output leaf: its own rounding
        got, ref, fd, dtypes, problems, value_check = {}, {}, {}, {}, [""] * len(inputs), None
        for i, (pi, j, _, leaf) in enumerate(inputs):
            for s in range(samples):
                t = jax.random.normal(jax.random.fold_in(jax.random.key(seed), i * samples + s), jnp.shape(leaf),
                                      jnp.float64)
                tangents = tuple(jax.tree.unflatten(jax.tree.structure(p), [
                    t if (q == pi and r == j) else jnp.zeros(jnp.shape(a), jnp.float64)
                    for r, a in enumerate(jax.tree.leaves(p))]) for q, p in enumerate(primals))
                _, ref_out = jax.jvp(reference, primals, tangents)
                out, mine = (jax.jvp(rule, primals, tangents) if rule is not None else jvp(primals, tangents))
                if value_check is None:
                    value_check = _value_check(out, y, rtol_autodiff)
                mine_leaves = jax.tree.leaves(mine)
                issue = _structure(mine_leaves if len(mine_leaves) == len(out_leaves) else None, out_leaves,
                                   "the rule's tangent output")
                plus, minus = _perturbed(fn, primals, pi, j, t, h)
                est = [(np.asarray(a) - np.asarray(b)) / (2 * h) for a, b in zip(jax.tree.leaves(plus),
                                                                                   jax.tree.leaves(minus))]
                for k, r in enumerate(jax.tree.leaves(ref_out)):
                    ref.setdefault((i, k), []).append(np.asarray(r, np.float64))
                    if issue[k]:
                        problems[i] = problems[i] or issue[k]
                        continue
                    m = np.asarray(mine_leaves[k], np.float64)
                    dtypes[k] = np.asarray(mine_leaves[k]).dtype
                    got.setdefault((i, k), []).append(m)
                    fd.setdefault((i, k), []).append(est[k])
        floor = 64 * _EPS * _largest([r for rs in ref.values() for r in rs])
        rows = []
        for i, (_, _, path, leaf) in enumerate(inputs):
            t_norm = float(np.sqrt(np.size(leaf)))
            for k, out_path in enumerate(out_paths):
                name = f"{path} -> {out_path}"
                if problems[i] or (i, k) not in got:
                    rows.append(LeafCheck(name, False, problems[i] or "no tangent output", tuple(np.shape(out_leaves[k]))))
                    continue
                rows.append(_row(name, tuple(np.shape(out_leaves[k])), got[i, k], ref[i, k], rtol_autodiff, rtol_fd,
                                 floor, 10 * _EPS * lam[k] * t_norm / h, precision, dtypes.get(k), fd_est=fd[i, k]))
    return RuleReport("jvp", value_check, tuple(rows), rtol_autodiff, rtol_fd, h, samples)


def check_hvp(params, *args, hvp_fn, loss_fn, samples: int = 3, h: float = 1e-6, precision: str = "float64",
              rtol_autodiff: float | None = None, rtol_fd: float | None = None, seed: int = 0) -> RuleReport:
    """Check a Hessian-vector product ``hvp_fn(params, v, *args) -> pytree like params``: (R3), one row per
    parameter leaf, over ``samples`` random directions v (every leaf at once), against
    ``jax.jvp(jax.grad(loss_fn))`` and central differences of ``jax.grad(loss_fn)``.

    Returns:
      A :class:`~jaxmlp.report.RuleReport`.
    """
    rtol_autodiff, rtol_fd = _options(precision, rtol_autodiff, rtol_fd, h, samples)
    with jax.enable_x64(True):
        params, args = verify.to_float64((params, tuple(args)))
        paths, leaves, treedef = _leaves(params)
        grad = jax.jit(jax.grad(loss_fn))
        reference = jax.jit(lambda p, v, *a: jax.jvp(lambda q: jax.grad(loss_fn)(q, *a), (p,), (v,))[1])
        g0 = jax.tree.leaves(grad(params, *args))
        lam = [max(1.0, _largest([g_j])) for g_j in g0]  # per gradient leaf: its own rounding
        got, ref, fd, dtypes, problems = {}, {}, {}, {}, [""] * len(leaves)
        for s in range(samples):
            keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), s), len(leaves))
            v = jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(a), jnp.float64) for k, a in zip(keys, leaves)])
            mine = hvp_fn(params, v, *args)
            try:
                mine_leaves = jax.tree.leaves(mine) if jax.tree.structure(mine) == treedef else None
            except Exception:  # noqa: BLE001 - not a pytree: a failing report
                mine_leaves = None
            issue = _structure(mine_leaves, leaves, "hvp_fn's result")
            theirs = jax.tree.leaves(reference(params, v, *args))
            moved = [jax.tree.map(lambda p, d: p + step * d, params, v) for step in (h, -h)]
            plus, minus = (jax.tree.leaves(grad(m, *args)) for m in moved)
            for j in range(len(leaves)):
                ref.setdefault(j, []).append(np.asarray(theirs[j], np.float64))
                if issue[j]:
                    problems[j] = problems[j] or issue[j]
                    continue
                m = np.asarray(mine_leaves[j], np.float64)
                dtypes[j] = np.asarray(mine_leaves[j]).dtype
                got.setdefault(j, []).append(m)
                est = (np.asarray(plus[j]) - np.asarray(minus[j])) / (2 * h)
                fd.setdefault(j, []).append(est)
        floor = 64 * _EPS * _largest([r for rs in ref.values() for r in rs])
        rows = []
        for j, (path, leaf) in enumerate(zip(paths, leaves)):
            if problems[j]:
                rows.append(LeafCheck(path, False, problems[j], tuple(np.shape(leaf))))
                continue
            rows.append(_row(path, tuple(np.shape(leaf)), got[j], ref[j], rtol_autodiff, rtol_fd, floor,
                             10 * _EPS * lam[j] / h, precision, dtypes.get(j), fd_est=fd[j]))
    return RuleReport("hvp", None, tuple(rows), rtol_autodiff, rtol_fd, h, samples)
