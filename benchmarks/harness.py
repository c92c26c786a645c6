"""Timing: warm up, wait for the result, interleave systems, report medians apart from compile time.

A :class:`Bench` is one timed unit of work (``call()``) that performs ``steps`` model-steps: one training
step for a per-step loop, a whole ``fit`` for the compiled-epochs systems, K × S steps for an ensemble.
:func:`measure` calibrates how many calls make one repeat, then times the repeats of all systems in turn
(in a shuffled order), so a noisy neighbour on the machine slows every system alike; each repeat ends
with ``sync`` on the last result (``block_until_ready`` for JAX). PyTorch's OpenMP workers keep spinning
for milliseconds after their last parallel region, stealing a core from whatever runs next: its benches
idle ``settle_s`` after each repeat, untimed.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def block(out):
    return jax.block_until_ready(out)


@dataclass
class Bench:
    """One system on one config: ``call()`` runs ``steps`` model-steps and returns what ``sync`` waits on."""

    system: str
    call: Callable[[], Any]
    steps: int
    compile_s: float | None = None  # lower + compile; None: measured as first call - median call
    temp_bytes: int | None = None
    sync: Callable[[Any], Any] = block
    note: str = ""
    settle_s: float = 0.0  # idle time after each repeat, not timed (lets OpenMP workers stop spinning)


def temp_bytes(compiled) -> int | None:
    """XLA's scratch memory of a compiled program (None where the backend does not report it)."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not implemented on some backends
        return None
    return None if analysis is None else getattr(analysis, "temp_size_in_bytes", None)


def compile_jit(fn, *args, donate_argnums=()):
    """``(compiled, compile_s, temp_bytes)``: lowering and compilation timed apart from any step."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    return compiled, time.perf_counter() - t0, temp_bytes(compiled)


def stateful(compiled, state, *batch):
    """A ``call`` for ``state = compiled(*state, *batch)``: the per-step loop of a jitted step.

    The state is donated, so every leaf is copied first: an optimizer state may hold one array twice
    (``jaxmlp.optim.adam``'s init shares its zeros between m and v), and XLA refuses to donate it twice.
    """
    cell = [jax.tree.map(jnp.copy, state)]

    def call():
        cell[0] = compiled(*cell[0], *batch)
        return cell[0]

    return call


def _run(bench: Bench, number: int) -> float:
    t0 = time.perf_counter()
    out = None
    for _ in range(number):
        out = bench.call()
    bench.sync(out)
    elapsed = time.perf_counter() - t0
    time.sleep(bench.settle_s)
    return elapsed


def measure(benches: list[Bench], *, repeats: int, min_repeat_s: float, max_number: int = 10_000):
    """Time every bench ``repeats`` times, interleaved; return ``{system: stats}`` in µs per model-step."""
    first, number = {}, {}
    for b in benches:
        first[b.system] = _run(b, 1)  # warm-up; for the fit-like systems (compile_s None) it compiles
        dt = _run(b, 1)  # a warm call (a process's first run of anything can take milliseconds more)
        number[b.system] = int(min(max_number, max(1, math.ceil(min_repeat_s / max(dt, 1e-9)))))
    times = {b.system: [] for b in benches}
    rng = random.Random(0)
    for _ in range(repeats):
        for b in rng.sample(benches, len(benches)):  # a fresh order each repeat: no fixed predecessor
            n = number[b.system]
            times[b.system].append(_run(b, n) / (n * b.steps) * 1e6)
    out = {}
    for b in benches:
        t = np.asarray(times[b.system])
        med = float(np.median(t))
        compile_s = b.compile_s
        if compile_s is None:
            compile_s = max(first[b.system] - med * b.steps * 1e-6, 0.0)
        out[b.system] = dict(us_per_step=med, us_min=float(t.min()), us_max=float(t.max()),
                             compile_s=compile_s, temp_bytes=b.temp_bytes, calls_per_repeat=number[b.system],
                             steps_per_call=b.steps, repeats=repeats, us_repeats=[float(x) for x in t], note=b.note)
    return out


def matmul_peak(device, dtype=jnp.float32, n=2048, repeats=5) -> float:
    """GFLOP/s of a square ``n³`` ``jnp.dot`` in ``dtype`` on ``device``: the roofline for ``peak_fraction``."""
    with jax.default_device(device):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        compiled, _, _ = compile_jit(jnp.dot, a, b)
        block(compiled(a, b))
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            block(compiled(a, b))
            t.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(t)) / 1e9
