"""A/B runs behind the two layout choices the library keeps, each variant in fresh processes, alternated.

``python -m benchmarks.layout_ab fit [--rounds N]``: the (B3) layout of ``fit``'s scan. Variant
``transposed_first`` is the library's (:func:`jaxmlp.loop.transposed_first`: Δᵀ written to memory, then an
"NN" product); ``plain`` patches it to the plain Δᵀ A that ``backward`` uses. Each process times
``jaxmlp-fit`` beside ``expert-scan`` (``jax.grad`` + optax under ``lax.scan``, same process) on the seed
MLP, 8 epochs × 128 steps, and prints their ratio.

``python -m benchmarks.layout_ab order [--rounds N]``: ``backward``'s ordering barrier (B3 before B2 where
A[l-1] holds at least ``IN_ORDER_MIN`` numbers). Variant ``ordered`` is the library's; ``scheduler`` sets
``IN_ORDER_MIN`` past any layer, leaving the order to XLA. Each process runs the user-step section
(:mod:`benchmarks.user_step`) on every config: manual / autodiff time and temp memory.

Variants alternate A B A B ... in fresh processes (``--rounds`` of each), so drift on a shared machine
hits both; compare the ratios, which each process measures against its own in-process reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

VARIANTS = {"fit": ("transposed_first", "plain"), "order": ("ordered", "scheduler")}


def _fit_worker(variant: str) -> dict:
    import jax

    from benchmarks.harness import measure
    from benchmarks.systems import SEED, _fit_shape, expert_bench, jaxmlp_fit
    from jaxmlp import loop

    if variant == "plain":
        loop.transposed_first = lambda l, delta, A_prev: delta.T @ A_prev
    flops = SEED.step_flops * 8 * 128
    with jax.numpy_rank_promotion("allow"):
        benches = [jaxmlp_fit(SEED, flops, "full"), expert_bench(SEED, 1, *reversed(_fit_shape(SEED, flops)))]
        stats = measure(benches, repeats=7, min_repeat_s=0.2)
    return {"fit_us": stats["jaxmlp-fit"]["us_per_step"], "expert_us": stats["expert-scan"]["us_per_step"],
            "ratio": stats["jaxmlp-fit"]["us_per_step"] / stats["expert-scan"]["us_per_step"]}


def _order_worker(variant: str) -> dict:
    from benchmarks import user_step
    from jaxmlp import backprop

    if variant == "scheduler":
        backprop.IN_ORDER_MIN = 1 << 62
    section = user_step.run(repeats=5, log=lambda *_: None)
    return {e["config"] + f"/{e['batch']}": {"ratio": e["ratio"], "temp_ratio": e["temp_ratio"],
                                             "aa_band": max(e["aa_band"].values()), "manual_us": e["manual_us"]}
            for e in section["configs"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.layout_ab", description=__doc__)
    parser.add_argument("what", choices=tuple(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = (_fit_worker if args.what == "fit" else _order_worker)(args.worker)
        print(json.dumps(result))
        return result
    runs = {v: [] for v in VARIANTS[args.what]}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for variant in VARIANTS[args.what]:
            out = subprocess.run([sys.executable, "-m", "benchmarks.layout_ab", args.what, "--worker", variant],
                                 capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
            load.append(os.getloadavg()[0])
    print(f"python -m benchmarks.layout_ab {args.what} --rounds {args.rounds}; 1-minute load {min(load):.1f}-"
          f"{max(load):.1f} on {os.cpu_count()} cores")
    for variant, rs in runs.items():
        if args.what == "fit":
            print(f"  {variant:18s} fit / expert-scan: " + ", ".join(f"{r['ratio']:.3f}" for r in rs)
                  + f" (median {statistics.median(r['ratio'] for r in rs):.3f}); fit "
                  + ", ".join(f"{r['fit_us']:.2f}" for r in rs) + " us per step")
        else:
            for cfg in rs[0]:
                print(f"  {variant:10s} {cfg:12s} manual / autodiff " + ", ".join(f"{r[cfg]['ratio']:.3f}" for r in rs)
                      + f"; temp {rs[0][cfg]['temp_ratio']:.3f}; A/A band max "
                      + f"{max(r[cfg]['aa_band'] for r in rs):.3f}")
    return {"runs": runs, "load": load}


if __name__ == "__main__":
    main()
