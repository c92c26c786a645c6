r"""Which kernels run the products of the wide config, and how fast: XLA:CPU's choices against PyTorch's.

``python -m benchmarks.wide_dots [--repeats N] [--out FILE] [--no-steps]``

The wide config [1024, 2048, 2048, 10] at batch 1024 spends its step in matmuls. For the 2048 × 2048 layer,
with A = A[l-1] (1024 × 2048), W = W[l] (2048 × 2048, ``(n_out, n_in)``) and Δ = Δ[l] (1024 × 2048),
each a 2·1024·2048² = 8.6 GFLOP product:

====== ========================= =====================================================================
op     product                   ``dot_general`` (lhs, rhs contracting dims)
====== ========================= =====================================================================
F1     Z = A Wᵀ                  A, W: (1), (1) ("NT"); jaxmlp's layout
F1-NN  Z = A Wᵀ, W stored (in, out)  A, Wᵀ: (1), (0) ("NN"); the reference's (and Flax's) layout
B2     Δ[l-1] = Δ W              Δ, W: (1), (0) ("NN")
B3     ∂L/∂W = Δᵀ A              Δ, A: (0), (0) ("TN": the batch, both operands' major axis, contracted)
B3-T   ∂L/∂W = (Aᵀ Δ)ᵀ           written so; XLA folds the transpose back into B3's dot (same HLO)
B3-mat ∂L/∂W = (Δᵀ) A            Δᵀ written out first (``optimization_barrier``), then an "NN" product
====== ========================= =====================================================================

Each op runs in each *variant*, every variant × op in its own process (``harness.measure_isolated``),
repeats alternated:

- ``xla``: this jaxlib's defaults. Its HLO (recorded per op) shows which runtime each dot got:
  ``__ynn_fusion`` (YNNPACK) or a plain ``dot`` (Eigen's contraction);
- ``xla-eigen``: ``--xla_cpu_experimental_ynn_fusion_type=-individual_dot``: every dot on Eigen;
- ``xla-onednn``: YNNPACK's dots off and ``--xla_cpu_use_onednn=true
  --xla_cpu_experimental_onednn_fusion_type=dot``: every dot as a ``__onednn_fusion``;
- ``torch``: PyTorch eager at its default threads: ``F.linear`` (F1), ``@`` (F1-NN, B2), ``Δ.t() @ A``
  (B3, what ``nn.Linear``'s backward computes), MKL sgemm underneath.

(``--xla_cpu_use_xnnpack`` and ``--xla_cpu_experimental_xnn_fusion_type=dot`` are accepted by this jaxlib
but leave every dot a plain ``dot``; they are not a variant.) Then, unless ``--no-steps``, the whole training
step: ``jaxmlp-manual`` and ``jax-optax`` under each XLA variant, ``jaxmlp-manual-b3mat`` (the manual step
with Δᵀ written out for (B3), XLA's defaults) and ``torch-eager``, again one process each,
alternated (plus ``torch-eager`` at one thread, as a gauge of the machine's load). The JSON holds every repeat, the HLO op of each (variant, op), the load average and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

VARIANTS = {
    "xla": "",
    "xla-eigen": "--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
    "xla-onednn": "--xla_cpu_experimental_ynn_fusion_type=-individual_dot --xla_cpu_use_onednn=true "
                  "--xla_cpu_experimental_onednn_fusion_type=dot",
}
OPS = ("F1", "F1-NN", "B2", "B3", "B3-T", "B3-mat")
B, N_IN, N_OUT = 1024, 2048, 2048


def _jax_op(op: str):
    import jax

    ops = {"F1": lambda A, W: A @ W.T, "F1-NN": lambda A, Wt: A @ Wt, "B2": lambda D, W: D @ W,
           "B3": lambda D, A: D.T @ A, "B3-T": lambda D, A: (A.T @ D).T,
           "B3-mat": lambda D, A: jax.lax.optimization_barrier(D.T) @ A}
    return ops[op]


def _operands(op: str, rng):
    a = rng.standard_normal((B, N_IN), dtype="float32")
    second = {"F1": (N_OUT, N_IN), "F1-NN": (N_IN, N_OUT), "B2": (N_OUT, N_IN)}.get(op, (B, N_OUT))
    first = a if op in ("F1", "F1-NN") else rng.standard_normal((B, N_OUT), dtype="float32")
    return (first, rng.standard_normal(second, dtype="float32")) if op in ("F1", "F1-NN", "B2") else (first, a)


def hlo_ops(text: str) -> list[str]:
    """The dots, transposes, copies and library fusions of a compiled program's HLO."""
    return re.findall(r"(__\w+_fusion|f32\[[\d,]+\]\{[\d,]+\} (?:dot|transpose|copy)\(.*?\)"
                      r"(?:, lhs_contracting_dims=\{\d\}, rhs_contracting_dims=\{\d\})?)", text)


def build_op(op: str, library: str):
    """One product as a :class:`~benchmarks.harness.Bench` in this process (``library``: ``jax`` or ``torch``)."""
    import numpy as np

    from benchmarks.harness import Bench, compile_jit

    args = _operands(op, np.random.default_rng(0))
    if library == "torch":
        import torch

        a, b = (torch.from_numpy(x) for x in args)
        fn = {"F1": lambda: torch.nn.functional.linear(a, b), "F1-NN": lambda: a @ b, "B2": lambda: a @ b,
              "B3": lambda: a.t() @ b, "B3-T": lambda: (b.t() @ a).t(),
              "B3-mat": lambda: a.t().contiguous() @ b}[op]
        return Bench(op, fn, 1, compile_s=0.0, sync=lambda out: out, settle_s=0.05,
                     note=f"torch {torch.get_num_threads()} threads")
    import jax

    args = tuple(jax.device_put(x) for x in args)
    compiled, compile_s, temp = compile_jit(_jax_op(op), *args)
    return Bench(op, lambda: compiled(*args), 1, compile_s, temp, note=" | ".join(hlo_ops(compiled.as_text())))


def b3_materialized_grads(params, x, y, loss: str = "ce"):
    """jaxmlp's manual gradient (ReLU hidden layers) with one change: (B3) as ``optimization_barrier(Δᵀ) @ A``,
    so Δᵀ is written out and the product is an "NN" dot (YNNPACK by default) instead of the "TN" one (Eigen).
    A copy of :func:`jaxmlp.backprop.backward_with_cache`'s loop, for this comparison only."""
    import jax
    import jax.numpy as jnp

    from jaxmlp import backprop
    from jaxmlp.mlp import prepare
    from jaxmlp.types import Layer

    sigma, sigma_out, Y, cache = prepare(params, x, y, "relu", None, loss)
    grads, delta = [None] * len(params), backprop.output_delta(cache, Y, sigma_out, loss, False)  # (B1)
    for l in range(len(params), 0, -1):
        dW = jax.lax.optimization_barrier(delta.T) @ cache.a[l - 1]  # (B3), Δᵀ written out
        db = jnp.sum(delta, axis=0)  # (B4)
        if l > 1:
            if cache.a[l - 1].size >= backprop.IN_ORDER_MIN:
                dW, delta = backprop._in_order(dW, delta)
            delta = backprop._delta_below(params, cache, delta, l - 1, sigma)  # (B2)
        grads[l - 1] = Layer(W=dW, b=db)
    return type(params)(grads)


def manual_step_b3_materialized():
    """``jaxmlp-manual``'s step on wide with :func:`b3_materialized_grads`."""
    from functools import partial

    import jax

    import jaxmlp
    from benchmarks import systems
    from benchmarks.harness import Bench, compile_jit, stateful
    from jaxmlp import optim

    cfg = systems.WIDE
    params = jaxmlp.init_mlp(jax.random.key(0), cfg.sizes)
    optimizer = optim.adam(systems.LR)
    x, y = systems.data(cfg, cfg.batch)
    state = (params, optimizer.init(params))
    step = systems.train_step(partial(b3_materialized_grads, loss=cfg.loss), optimizer)
    compiled, compile_s, temp = compile_jit(step, *state, x, y, donate_argnums=(0, 1))
    return Bench("jaxmlp-manual-b3mat", stateful(compiled, state, x, y), 1, compile_s, temp)


def _step_spec(system: str, variant: str):
    import dataclasses

    import jax

    from benchmarks import harness, suite, systems

    p = suite.plan("cpu", quick=True)
    kwargs = dict(config=dataclasses.asdict(systems.WIDE), K=1, device="cpu", plan=suite._plan_json(p), system=system)
    kwargs["plan"]["rank_promotion"] = jax.config.jax_numpy_rank_promotion
    env = {"XLA_FLAGS": VARIANTS[variant]} if variant in VARIANTS else {}
    return harness.Spec(f"{system}[{variant}]", "benchmarks.suite:build_one", kwargs, env=env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wide_dots", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-repeat-s", type=float, default=0.3)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ", ".join(OPS))
    parser.add_argument("--variants", default=",".join(list(VARIANTS) + ["torch"]))
    parser.add_argument("--no-steps", action="store_true", help="only the single products")
    parser.add_argument("--out", default="benchmarks/results/latest-cpu/wide_dots.json")
    args = parser.parse_args(argv)

    from benchmarks import harness, peers

    variants = args.variants.split(",")
    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    result = dict(shapes=dict(B=B, n_in=N_IN, n_out=N_OUT, gflop_per_op=2 * B * N_IN * N_OUT / 1e9),
                  variants={v: VARIANTS.get(v, "PyTorch eager, default threads") for v in variants},
                  versions=peers.versions(), libraries=peers.library_facts(), ops={}, steps={})
    for op in args.ops.split(","):
        specs = [harness.Spec(f"{op}[{v}]", "benchmarks.wide_dots:build_op",
                              dict(op=op, library="torch" if v == "torch" else "jax"),
                              env={"XLA_FLAGS": VARIANTS[v]} if v in VARIANTS else {}) for v in variants]
        stats = harness.measure_isolated(specs, repeats=args.repeats, min_repeat_s=args.min_repeat_s)
        result["ops"][op] = stats
        print(op.ljust(7) + "  ".join(f"{k.split('[')[1][:-1]} {s['us_per_step'] / 1e3:7.2f} ms"
                                      f" (min {s['us_min'] / 1e3:.2f})" for k, s in stats.items()), flush=True)
    if not args.no_steps:
        specs = [_step_spec(s, v) for v in variants if v in VARIANTS for s in ("jaxmlp-manual", "jax-optax")]
        specs.insert(1, harness.Spec("jaxmlp-manual-b3mat[xla]", "benchmarks.wide_dots:manual_step_b3_materialized"))
        if "torch" in variants:
            specs.append(_step_spec("torch-eager", "torch"))
            specs.append(_step_spec("torch-eager", "torch-1thread"))
            specs[-1].torch_threads = 1  # a gauge of how much the default's 2 threads suffer under load
        stats = harness.measure_isolated(specs, repeats=args.repeats, min_repeat_s=args.min_repeat_s)
        result["steps"] = stats
        torch_med = stats.get("torch-eager[torch]", {}).get("us_per_step")
        torch_min = stats.get("torch-eager[torch]", {}).get("us_min")
        for k, s in stats.items():
            ratio = f"  / torch-eager {s['us_per_step'] / torch_med:.3f} (min {s['us_min'] / torch_min:.3f})" \
                if torch_med else ""
            print(f"{k:<28} {s['us_per_step'] / 1e3:8.1f} ms (min {s['us_min'] / 1e3:.1f}){ratio}", flush=True)
    load_end = list(os.getloadavg())
    result.update(loadavg=dict(start=load_start, end=load_end), wall_s=time.perf_counter() - t0)
    print(f"load average start {load_start} end {load_end}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
