"""What jaxmlp's hand-derived Hessian-vector product costs against autodiff's, in one process.

    python -m benchmarks.hvp_cost [--repeats N] [--out FILE.json]

On the seed MLP (batch 32) and [784, 512, 512, 10] (batch 256), tanh hidden layers (σ'' is not zero, so
nothing is skipped), float32: ``jax.jit`` of ``jaxmlp.hvp(params, v, x, y)`` (the R-operator, (H1)-(H6))
against ``jax.jit`` of ``jax.jvp(jax.grad(loss_fn), (params,), (v,))``, each compiled twice (A1, A2 and B1,
B2) and timed in alternating rounds, so the run's own A/A band is printed beside the ratio. Issue 23's
target: the R-operator at most 1.2x the autodiff HVP.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial

import jax
import numpy as np

import jaxmlp
from benchmarks.systems import MNIST, SEED, data

CONFIGS = (SEED, MNIST)


def _calls(fn, args, seconds=0.2):
    jax.block_until_ready(fn(*args))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        jax.block_until_ready(fn(*args))
        n += 1
    return max(n, 1)


def measure(cfg, repeats: int) -> dict:
    loss = "mse" if cfg.sizes[-1] == 1 else "ce"
    kw = dict(activation="tanh", loss=loss)
    params = jaxmlp.init_mlp(jax.random.key(0), cfg.sizes, init="xavier")
    v = jax.tree.map(lambda a: jax.random.normal(jax.random.key(1), a.shape, a.dtype), params)
    x, y = data(cfg, cfg.batch)
    args = (params, v, x, y)

    def r_operator():  # a new function object per copy: each jit compiles its own program
        return jax.jit(lambda p, v, x, y: jaxmlp.hvp(p, v, x, y, **kw))

    def autodiff():
        return jax.jit(lambda p, v, x, y: jax.jvp(lambda q: jax.grad(partial(jaxmlp.loss_fn, **kw))(q, x, y),
                                                  (p,), (v,))[1])

    copies = {"A1": r_operator(), "B1": autodiff(), "A2": r_operator(), "B2": autodiff()}
    number = max(_calls(f, args) for f in copies.values())
    times = {k: [] for k in copies}
    for r in range(repeats):
        for name in (list(copies) if r % 2 == 0 else list(copies)[::-1]):
            t0 = time.perf_counter()
            for _ in range(number):
                out = copies[name](*args)
            jax.block_until_ready(out)
            times[name].append(1e6 * (time.perf_counter() - t0) / number)
    med = {k: float(np.median(t)) for k, t in times.items()}
    a, b = float(np.median(times["A1"] + times["A2"])), float(np.median(times["B1"] + times["B2"]))
    return dict(config=cfg.name, sizes=list(cfg.sizes), batch=cfg.batch, r_operator_us=a, autodiff_us=b,
                ratio=a / b, aa_band=dict(r_operator=abs(med["A1"] / med["A2"] - 1),
                                          autodiff=abs(med["B1"] / med["B2"] - 1)), copies_us=med)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    load = [os.getloadavg()[0]]
    rows = [measure(cfg, args.repeats) for cfg in CONFIGS]
    load.append(os.getloadavg()[0])
    for r in rows:
        print(f"{r['config']} {r['sizes']} / {r['batch']}: R-operator {r['r_operator_us']:.1f} us, autodiff HVP "
              f"{r['autodiff_us']:.1f} us, ratio {r['ratio']:.3f} (A/A band {r['aa_band']['r_operator']:.3f}, "
              f"{r['aa_band']['autodiff']:.3f})")
    print(f"1-minute load {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores")
    result = dict(rows=rows, load=load, repeats=args.repeats, command="python -m benchmarks.hvp_cost")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
