"""Where the cold ``fit``'s compile time goes: fit's own epochs program, and the same program with parts taken out.

``python -m benchmarks --compile-budget-only [--repeats N] [--out DIR]`` (also run after the "time to
first result" section)

The job is that section's: digits, [64, 64, 32, 10] with ReLU, Adam at 3e-3, batch 64, 40 epochs,
softmax cross-entropy. Each variant runs in a **fresh process** (``python -m benchmarks.compile_budget
VARIANT``): nothing compiled before it, no compilation cache. The process calls :func:`jaxmlp.fit` and
stops it where it would run its epochs program (``train._compiled_epochs``), so the program measured is the
one ``fit`` builds, arguments and static configuration included; then it times

- ``lower``: tracing and lowering to StableHLO, ``jax.jit(...).lower(...)``;
- ``compile``: XLA's compile, wall clock, and the process's CPU seconds over it (XLA:CPU compiles its
  kernels on every core, so CPU seconds exceed wall seconds);
- ``fusions``: the number of fusion kernels in the optimized HLO, each one an LLVM module to compile;
- ``run``: the compiled program's best of 5 runs (the 40 epochs), once compiled.

Variants (the first three are ``fit`` options; the rest are ablations, not options):

- ``fit``: the program as ``fit`` compiles it;
- ``minibatch metrics``: ``fit(..., metrics="minibatch")``, no per-epoch pass over the training set;
- ``sgd``: ``optimizer=optim.sgd(3e-3)`` instead of Adam;
- ``identity shuffle``: ``shuffle.permutation`` replaced by ``arange`` (every epoch in order);
- ``bare step``: the three above together: what is left is the training step in two loops;
- ``fusion emitters off``, ``LLVM -O0``: fit's program with XLA:CPU's compile options
  ``xla_cpu_use_fusion_emitters=False`` or ``xla_backend_optimization_level=0``; ``bare step, emitters
  off``: both reductions at once.

Medians over ``repeats`` processes per variant. On a shared 2-core machine the compile time grows with
the load (0.8-0.9 s at load 1, 1.5 s at load 3), so the 1-minute load average is recorded with each run.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from unittest import mock

from benchmarks import first_result

JOB = dict(loss="ce", epochs=40, batch_size=64)
SIZES = [64, 64, 32, 10]
LR = 3e-3

# name: (extra fit keyword arguments, SGD instead of Adam, identity shuffle, XLA compile options)
VARIANTS = {
    "fit": ({}, False, False, {}),
    "minibatch metrics": ({"metrics": "minibatch"}, False, False, {}),
    "sgd": ({}, True, False, {}),
    "identity shuffle": ({}, False, True, {}),
    "bare step": ({"metrics": "minibatch"}, True, True, {}),
    "fusion emitters off": ({}, False, False, {"xla_cpu_use_fusion_emitters": False}),
    "LLVM -O0": ({}, False, False, {"xla_backend_optimization_level": 0}),
    "bare step, emitters off": ({"metrics": "minibatch"}, True, True, {"xla_cpu_use_fusion_emitters": False}),
}


class _Captured(Exception):
    """Raised in place of fit's epochs call, carrying its arguments."""


def _capture(*args, **static):
    raise _Captured(args, static)


def fit_program(x, y, *, sgd: bool = False, **fit_kw):
    """``(fn, args)``: the epochs program :func:`jaxmlp.fit` would compile for the job, as a function of its
    dynamic arguments (its static ones bound), and those arguments. Nothing is compiled for it or run."""
    import jax

    import jaxmlp
    from jaxmlp import optim, train

    params = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    optimizer = optim.sgd(LR) if sgd else optim.adam(LR)
    with mock.patch.object(train, "_compiled_epochs", _capture):
        try:
            jaxmlp.fit(params, x, y, optimizer=optimizer, key=jax.random.key(1), **JOB, **fit_kw)
        except _Captured as captured:
            args, static = captured.args
            return partial(train._epochs, **static), args
    raise RuntimeError("fit returned without calling train._compiled_epochs: this measurement no longer sees fit's "
                       "program")


def measure(variant: str, x, y) -> dict:
    """Lower, compile and run one variant's program in this process: the seconds and counts listed above."""
    import jax
    import jax.numpy as jnp

    from jaxmlp import shuffle

    fit_kw, sgd, identity_shuffle, options = VARIANTS[variant]
    identity = lambda key, n: jnp.arange(n, dtype=jnp.int32)
    with mock.patch.object(shuffle, "permutation", identity if identity_shuffle else shuffle.permutation):
        fn, args = fit_program(x, y, sgd=sgd, **fit_kw)
        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        lower_s = time.perf_counter() - t0
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    compiled = lowered.compile(compiler_options=options)
    compile_s = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return {"lower_s": lower_s, "compile_s": compile_s,
            "compile_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "fusions": compiled.as_text().count(" fusion("), "run_s": min(runs)}


def _worker(variant: str) -> None:
    import jax
    import numpy as np

    from jaxmlp import datasets

    jax.config.update("jax_enable_compilation_cache", False)  # a cache set up in the environment would serve it
    x, y, _, _ = (np.asarray(a) for a in datasets.load("digits", seed=0))
    print(json.dumps(measure(variant, x, y)))


def _fresh(variant: str) -> dict:
    return first_result._python("import sys; from benchmarks.compile_budget import _worker; _worker(sys.argv[1])",
                                variant)


def run(out=None, *, repeats: int = 3, variants=tuple(VARIANTS), log=print) -> dict:
    """Every variant in ``repeats`` fresh processes (interleaved, so load drifts hit all alike); medians."""
    samples = {v: [] for v in variants}
    load = []
    for r in range(repeats):
        load.append(os.getloadavg()[0])
        for v in variants:
            samples[v].append(_fresh(v))
        log(f"  compile budget, repeat {r + 1}/{repeats}: " + ", ".join(
            f"{v} {samples[v][-1]['compile_s']:.2f} s" for v in variants) + f" (load average before it {load[-1]:.1f})")
    load.append(os.getloadavg()[0])
    medians = {v: {k: statistics.median(s[k] for s in rows) for k in rows[0]} for v, rows in samples.items()}
    result = {"repeats": repeats, "medians": medians, "samples": samples, "load_average_1min": load,
              "cpu_count": os.cpu_count(), "command": "python -m benchmarks --compile-budget-only"}
    log(table(result))
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "compile_budget.json").write_text(json.dumps(result, indent=2))
    return result


def table(result: dict) -> str:
    m, load = result["medians"], result["load_average_1min"]
    lines = [f"compile budget of fit's epochs program (fresh processes, medians of {result['repeats']}, load average "
             f"{min(load):.1f}-{max(load):.1f} on {result['cpu_count']} CPUs):",
             f"  {'':<24} {'lower s':>8} {'compile s':>10} {'CPU s':>7} {'fusions':>8} {'run ms':>8}"]
    lines += [f"  {v:<24} {r['lower_s']:>8.3f} {r['compile_s']:>10.3f} {r['compile_cpu_s']:>7.2f} "
              f"{r['fusions']:>8.0f} {1e3 * r['run_s']:>8.1f}" for v, r in m.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    _worker(sys.argv[1])
