"""The user step at 61c1897 and at HEAD in one process: a user's own jax.jit of backward + optax.adam against
the same step with jax.grad, every suite config, rounds interleaved.

    rm -rf /tmp/old && git worktree add /tmp/old 61c18972eab97a604e4473a99c9eb620b1771311
    mkdir -p /tmp/oldpkg && cp -r /tmp/old/src/jaxmlp /tmp/oldpkg/jaxmlp_61c1897
    sed -i 's/\\bjaxmlp\\b/jaxmlp_61c1897/g' /tmp/oldpkg/jaxmlp_61c1897/*.py
    PYTHONPATH=.:/tmp/oldpkg python benchmarks/results/cpu-user-step-61c1897-vs-head/run.py OUT.json

Eight compiled copies per config, each with its own state: {head, old} × {manual, autodiff} × 2. Each version's
ratio is its manual median over its own autodiff median; the A/A band is the larger of the two copies'
disagreement, as in benchmarks/user_step.py.
"""

import json
import os
import sys
from functools import partial

import jax
import jaxmlp_61c1897 as old
import numpy as np
import optax

import jaxmlp as head
from benchmarks.harness import Bench, compile_jit, stateful, time_repeat, warm_up
from benchmarks.user_step import CONFIGS, problem

VERSIONS = {"head": head, "old": old}
COPIES = [f"{v}-{g}{i}" for i in (1, 2) for v in VERSIONS for g in ("manual", "autodiff")]


def make_step(lib, grad, loss, opt):
    def step(p, s, x, y):
        if grad == "manual":
            g = lib.backward(p, x, y, activation="relu", loss=loss)[1]
        else:
            g = jax.grad(partial(lib.loss_fn, activation="relu", loss=loss))(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s
    return step


def measure(cfg, repeats=7, min_repeat_s=0.2):
    params, opt, x, y = problem(cfg)
    benches = {}
    for name in COPIES:
        version, grad = name[:-1].split("-")
        own = tuple(VERSIONS[version].Layer(*layer) for layer in params)  # the same values in its own Layer type
        state = (own, opt.init(own))
        compiled, compile_s, temp = compile_jit(make_step(VERSIONS[version], grad, cfg.loss, opt), *state, x, y,
                                                donate_argnums=(0, 1))
        benches[name] = Bench(name, stateful(compiled, state, x, y), 1, compile_s, temp)
    number = max(warm_up(b, min_repeat_s)[1] for b in benches.values())
    times = {n: [] for n in COPIES}
    load = [os.getloadavg()[0]]
    for r in range(repeats):
        for name in (COPIES if r % 2 == 0 else COPIES[::-1]):
            times[name].append(time_repeat(benches[name], number))
    load.append(os.getloadavg()[0])
    med = {n: float(np.median(t)) for n, t in times.items()}
    entry = dict(config=cfg.name, batch=cfg.batch, load=load, median_us=med)
    for v in VERSIONS:
        pooled = {g: np.median(times[f"{v}-{g}1"] + times[f"{v}-{g}2"]) for g in ("manual", "autodiff")}
        entry[v] = dict(manual_us=float(pooled["manual"]), autodiff_us=float(pooled["autodiff"]),
                        ratio=float(pooled["manual"] / pooled["autodiff"]),
                        aa_band=max(abs(med[f"{v}-{g}1"] / med[f"{v}-{g}2"] - 1) for g in ("manual", "autodiff")),
                        temp_ratio=benches[f"{v}-manual1"].temp_bytes / benches[f"{v}-autodiff1"].temp_bytes)
    print(f"{cfg.name}/{cfg.batch}: " + "; ".join(
        f"{v} manual/autodiff {entry[v]['ratio']:.3f} (A/A {entry[v]['aa_band']:.3f}, temp {entry[v]['temp_ratio']:.2f}, "
        f"{entry[v]['manual_us']:.1f} vs {entry[v]['autodiff_us']:.1f} us)" for v in VERSIONS) + f"; load {load}",
        flush=True)
    return entry


if __name__ == "__main__":
    result = dict(command=" ".join(sys.argv), configs=[measure(cfg) for cfg in CONFIGS])
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=1)
