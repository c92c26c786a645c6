"""Timing: warm up, wait for the result, interleave systems, report medians apart from compile time.

A :class:`Bench` is one timed unit of work (``call()``) that performs ``steps`` model-steps: one training
step for a per-step loop, a whole ``fit`` for the compiled-epochs systems, K × S steps for an ensemble.
Each repeat ends with ``sync`` on the last result (``block_until_ready`` for JAX). PyTorch's OpenMP
workers keep spinning for milliseconds after their last parallel region, stealing a core from whatever
runs next: its benches idle ``settle_s`` after each repeat, untimed.

Two ways to run a set of systems, both alternating their repeats (a fresh shuffled order each round),
so that a noisy neighbour on the machine slows every system alike:

- :func:`measure_isolated` (the suite's default): every system in **its own process**
  (``python -m benchmarks.worker``), built from a :class:`Spec`; the processes stay alive and idle
  while another runs, and each repeat is one request to one process. No system shares a runtime,
  thread pool, allocator or compilation cache with another, and each library keeps its own defaults
  (PyTorch's intra-op threads = cores, XLA's thread pool = cores).
- :func:`measure`: all systems in the calling process (for the smoke test and quick looks).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
    probe: Callable[[], float] | None = None  # the training loss of the bench's current state (smoke tests: it trains)


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


def warm_up(bench: Bench, min_repeat_s: float, max_number: int = 10_000) -> tuple[float, int]:
    """``(first_s, number)``: the first call (for fit-like systems it compiles), then a warm call that
    sets how many calls make one repeat of at least ``min_repeat_s``."""
    first = _run(bench, 1)
    dt = _run(bench, 1)  # a warm call (a process's first run of anything can take milliseconds more)
    return first, int(min(max_number, max(1, math.ceil(min_repeat_s / max(dt, 1e-9)))))


def time_repeat(bench: Bench, number: int) -> float:
    """One repeat: µs per model-step over ``number`` calls."""
    return _run(bench, number) / (number * bench.steps) * 1e6


def summarize(bench: Bench, times, first_s: float, number: int) -> dict:
    """The row statistics of one system: median, min and max of its repeats; compile seconds."""
    t = np.asarray(times)
    med = float(np.median(t))
    compile_s = bench.compile_s
    if compile_s is None:
        compile_s = max(first_s - med * bench.steps * 1e-6, 0.0)
    return dict(us_per_step=med, us_min=float(t.min()), us_max=float(t.max()), compile_s=compile_s,
                temp_bytes=bench.temp_bytes, calls_per_repeat=number, steps_per_call=bench.steps,
                repeats=len(t), us_repeats=[float(x) for x in t], note=bench.note)


def measure(benches: list[Bench], *, repeats: int, min_repeat_s: float, max_number: int = 10_000):
    """Time every bench ``repeats`` times, interleaved, in this process; ``{system: stats}`` in µs per model-step."""
    first, number = {}, {}
    for b in benches:
        first[b.system], number[b.system] = warm_up(b, min_repeat_s, max_number)
    times = {b.system: [] for b in benches}
    rng = random.Random(0)
    for _ in range(repeats):
        for b in rng.sample(benches, len(benches)):  # a fresh order each repeat: no fixed predecessor
            times[b.system].append(time_repeat(b, number[b.system]))
    return {b.system: dict(summarize(b, times[b.system], first[b.system], number[b.system]), process="shared")
            for b in benches}


# ---- one process per system ----------------------------------------------------------------------------


@dataclass
class Spec:
    """How a worker process builds one system: ``module.function(**kwargs)`` returns a :class:`Bench`
    (or ``None``: not available there). ``env`` is added to the worker's environment (e.g. ``XLA_FLAGS``);
    ``torch_threads`` calls ``torch.set_num_threads`` first (``None``: PyTorch's default)."""

    system: str
    function: str  # "module:function"
    kwargs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    torch_threads: int | None = None


PROTOCOL = "@@bench "  # the worker's replies on stdout start with this; anything else a library prints is ignored


class Worker:
    """One ``python -m benchmarks.worker`` process serving one system: ``run()`` times one repeat there."""

    def __init__(self, spec: Spec, min_repeat_s: float, max_number: int = 10_000):
        self.spec = spec
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, **spec.env)
        # Processes of one config stay alive together: on a GPU none may preallocate 75 % of its memory.
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._send(dict(spec=dict(spec.__dict__), min_repeat_s=min_repeat_s, max_number=max_number))
        self.ready = self._recv()  # {} if the system is not available in that process

    def _send(self, msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def _recv(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                msg = json.loads(line[len(PROTOCOL):])
                if "error" in msg:
                    raise RuntimeError(f"{self.spec.system}: worker failed:\n{msg['error']}")
                return msg
        self.stderr.seek(0)
        raise RuntimeError(f"{self.spec.system}: worker exited (rc {self.proc.wait()}):\n{self.stderr.read()[-4000:]}")

    def run(self) -> float:
        self._send("run")
        return self._recv()["us"]

    def close(self) -> dict:
        """Stop the worker; its final report (``{}`` if it had nothing to run)."""
        try:
            self._send("quit")
            final = self._recv() if self.ready else {}
        finally:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
            self.stderr.close()
        return final


def measure_isolated(specs: list[Spec], *, repeats: int, min_repeat_s: float, max_number: int = 10_000,
                     log=print) -> dict:
    """Every spec in its own worker process, repeats alternated round-robin (shuffled each round), one
    process running at a time; ``{system: stats}`` as :func:`measure`, with the process's facts
    (pid, threads, XLA flags) and the machine's load average before and after the system's first repeat
    and at the end."""
    workers = []
    try:
        for spec in specs:  # built one after another: each compiles alone
            w = Worker(spec, min_repeat_s, max_number)
            if w.ready:
                workers.append(w)
            else:
                log(f"  {spec.system}: not available, skipped")
                w.close()
        times = {w.spec.system: [] for w in workers}
        load = {"before": list(os.getloadavg())}
        rng = random.Random(0)
        for _ in range(repeats):
            for w in rng.sample(workers, len(workers)):
                times[w.spec.system].append(w.run())
        load["after"] = list(os.getloadavg())
    finally:
        finals = {w.spec.system: w.close() for w in workers}
    out = {}
    for w in workers:
        r = w.ready
        stats = dict(r["stats_template"])
        t = np.asarray(times[w.spec.system])
        med = float(np.median(t))
        compile_s = stats["compile_s"]
        if compile_s is None:
            compile_s = max(r["first_s"] - med * stats["steps_per_call"] * 1e-6, 0.0)
        stats.update(us_per_step=med, us_min=float(t.min()), us_max=float(t.max()), compile_s=compile_s,
                     repeats=len(t), us_repeats=[float(x) for x in t], process="own", pid=r["pid"],
                     threads=r["threads"], xla_flags=r["xla_flags"], loadavg=load,
                     worker_wall_s=finals[w.spec.system].get("wall_s"))
        out[w.spec.system] = stats
    return out


def process_facts() -> dict:
    """What a worker reports about its process: pid, the CPUs it may use, each library's thread count."""
    threads = {"cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    threads["xla_cpu"] = threads["cpus_allowed"]  # XLA:CPU's intra-op pool: one thread per allowed core
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        threads.update(torch_intra_op=torch.get_num_threads(), torch_inter_op=torch.get_num_interop_threads())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            threads[var] = os.environ[var]
    return dict(pid=os.getpid(), threads=threads, xla_flags=os.environ.get("XLA_FLAGS", ""))


def serve(stdin=sys.stdin, stdout=sys.stdout):
    """The worker's loop (``python -m benchmarks.worker``): build the spec's bench, warm it up, then
    answer ``"run"`` with one timed repeat until ``"quit"``."""
    import importlib
    import traceback

    def reply(msg):
        stdout.write(PROTOCOL + json.dumps(msg) + "\n")
        stdout.flush()

    t_start = time.perf_counter()
    try:
        first = json.loads(stdin.readline())
        spec = Spec(**first["spec"])
        if spec.torch_threads is not None:
            import torch

            torch.set_num_threads(spec.torch_threads)
        module, name = spec.function.split(":")
        bench = getattr(importlib.import_module(module), name)(**spec.kwargs)
        if bench is None:
            reply({})
        else:
            first_s, number = warm_up(bench, first["min_repeat_s"], first["max_number"])
            template = summarize(bench, [0.0], first_s, number)
            template["compile_s"] = bench.compile_s
            reply(dict(process_facts(), first_s=first_s, stats_template=template))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises
        reply({"error": traceback.format_exc()})
        return
    for line in stdin:
        cmd = json.loads(line)
        if cmd == "quit":
            reply(dict(wall_s=time.perf_counter() - t_start) if bench is not None else {})
            return
        reply({"us": time_repeat(bench, number)})


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
