"""Data-parallel scaling of ``jaxmlp.fit(mesh=...)``: time per step on 1, 2, 4, 8, ... devices.

    python -m benchmarks.scaling [--quick | --tiny] [--out PATH]

Two sweeps over the number n of devices on a ``"data"`` mesh (the first n of ``jax.devices()``):

- **strong scaling**: the global batch B is fixed, each device gets B/n examples;
  efficiency = t₁ / (n · tₙ) (1 = perfect: n devices are n times faster);
- **weak scaling**: the batch per device b is fixed, the global batch is n·b;
  efficiency = t₁ / tₙ (1 = perfect: n times the work in the same time).

Each point is timed two ways, warmed up, the median of ``--repeats`` runs, compile time reported apart:

- ``fit``: ``jaxmlp.fit(..., mesh=mesh)`` itself, per optimization step. It includes what ``fit``
  does once per epoch: the permutation of the data (replicated, so it does not get faster with n) and
  the loss and accuracy on the whole training set (split over the devices, each evaluating N/n examples);
- ``step``: the training step alone (``jaxmlp.backward`` + Adam, the body of ``fit``'s inner
  ``lax.scan``) on batches already sharded over the mesh.

Devices come from ``jax.devices()``: every GPU (or TPU) when there are several, else CPU devices.
On CPU this module sets ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before jax starts,
unless ``XLA_FLAGS`` already sets a device count. Forced host devices share the machine's cores: on a
machine with fewer cores than devices, the CPU table measures the *overhead* of data parallelism
(partitioning, all-reduces, the replicated permutation), not a speed-up. The output says so.

Writes a JSON file (``--out``, default ``benchmarks/results/scaling-<platform>.json``) and prints
the tables. ``--quick`` (strong scaling only, smaller batch, fewer repeats) finishes within a minute on
a 2-core CPU; ``--tiny`` (a few seconds'
work plus compiles) is the smoke test of ``tests/test_sharding.py``.
"""

from __future__ import annotations

import os

# Before jax creates its CPU client (which reads XLA_FLAGS once); a user's own device count wins.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import jaxmlp  # noqa: E402
from benchmarks import systems  # noqa: E402
from jaxmlp import optim  # noqa: E402


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...] = (784, 512, 512, 10)
    global_batch: int = 1024  # strong scaling
    batch_per_device: int = 128  # weak scaling
    steps_per_epoch: int = 8
    epochs: int = 2
    repeats: int = 5
    max_devices: int | None = None  # default: all of jax.devices()
    weak: bool = True


PLANS = {
    "full": Plan(),
    "quick": Plan(global_batch=512, steps_per_epoch=4, epochs=1, repeats=3, weak=False),
    "tiny": Plan(sizes=(16, 32, 4), global_batch=64, batch_per_device=8, steps_per_epoch=2, epochs=1, repeats=1,
                 max_devices=2),
}


def device_counts(n_max: int) -> list[int]:
    counts, n = [], 1
    while n <= n_max:
        counts.append(n)
        n *= 2
    return counts


def problem(p: Plan, batch: int):
    """Random inputs and labels: ``steps_per_epoch`` minibatches of ``batch`` per epoch."""
    n = p.steps_per_epoch * batch
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, p.sizes[0]))
    y = jax.random.randint(ky, (n,), 0, p.sizes[-1])
    return jaxmlp.init_mlp(kp, list(p.sizes)), x, y


def timed(call, repeats: int) -> tuple[float, float]:
    """``(first call incl. compile, median of repeats)`` in seconds; each call ends on ``block_until_ready``."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def time_fit(p: Plan, mesh: Mesh, batch: int) -> tuple[float, float]:
    """``(compile s, s per step)`` of ``jaxmlp.fit(mesh=mesh)`` with global batch ``batch``."""
    params, x, y = problem(p, batch)
    optimizer = optim.adam(1e-3)

    def call():
        return jaxmlp.fit(params, x, y, optimizer=optimizer, loss="ce", epochs=p.epochs, batch_size=batch,
                          key=jax.random.key(1), mesh=mesh)[0]

    first, median = timed(call, p.repeats)
    return max(first - median, 0.0), median / (p.epochs * p.steps_per_epoch)


def time_step(p: Plan, mesh: Mesh, batch: int) -> tuple[float, float]:
    """``(compile s, s per step)`` of the bare data-parallel training step, batches pre-sharded."""
    params, x, y = problem(p, batch)
    optimizer = optim.adam(1e-3)
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(None, "data"))  # (steps, batch, ...): batch over "data"
    steps = systems.scan_steps(
        systems.train_step(lambda params, x, y: jaxmlp.backward(params, x, y, loss="ce")[1], optimizer),
        p.steps_per_epoch)

    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(optimizer.init(params), replicated)
    xs = jax.device_put(x.reshape(p.steps_per_epoch, batch, -1), split)
    ys = jax.device_put(y.reshape(p.steps_per_epoch, batch), split)
    t0 = time.perf_counter()
    compiled = jax.jit(steps, out_shardings=replicated).lower(params, opt_state, xs, ys).compile()
    compile_s = time.perf_counter() - t0
    _, median = timed(lambda: compiled(params, opt_state, xs, ys), p.repeats)
    return compile_s, median / p.steps_per_epoch


def run(p: Plan, log=print) -> dict:
    devices = jax.devices()
    n_max = min(len(devices), p.max_devices or len(devices))
    rows = []
    modes = [("strong", lambda n: p.global_batch)] + ([("weak", lambda n: n * p.batch_per_device)] if p.weak else [])
    for mode, global_batch in modes:
        for n in device_counts(n_max):
            B = global_batch(n)
            if B % n:
                log(f"skip {mode} n={n}: global batch {B} not divisible by {n}")
                continue
            mesh = Mesh(np.array(devices[:n]), ("data",))
            fit_compile, fit_s = time_fit(p, mesh, B)
            step_compile, step_s = time_step(p, mesh, B)
            rows.append(dict(mode=mode, devices=n, global_batch=B, batch_per_device=B // n,
                             fit_ms_per_step=1e3 * fit_s, step_ms=1e3 * step_s,
                             fit_compile_s=fit_compile, step_compile_s=step_compile))
            log(f"  {mode:6s} n={n}: fit {1e3 * fit_s:8.2f} ms/step, step {1e3 * step_s:8.2f} ms")
    for row in rows:  # efficiency against the 1-device row of the same mode
        base = next(r for r in rows if r["mode"] == row["mode"] and r["devices"] == 1)
        scale = row["devices"] if row["mode"] == "strong" else 1
        row["fit_efficiency"] = base["fit_ms_per_step"] / (scale * row["fit_ms_per_step"])
        row["step_efficiency"] = base["step_ms"] / (scale * row["step_ms"])
    return {
        "plan": asdict(p),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "devices_available": len(devices),
        "cpu_cores": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "note": note(devices),
        "rows": rows,
    }


def note(devices) -> str:
    if devices[0].platform == "cpu" and len(devices) > (os.cpu_count() or 1):
        return (f"{len(devices)} CPU devices forced onto {os.cpu_count()} cores: the devices share those cores, "
                f"so this measures the overhead of data parallelism, not a speed-up (expect efficiency "
                f"well below 1). Run on several GPUs for real scaling.")
    return ""


def table(result: dict) -> str:
    p = result["plan"]
    lines = [f"jaxmlp.fit(mesh=) data-parallel scaling: sizes {p['sizes']}, adam, "
             f"{result['devices_available']} {result['platform']} device(s) ({result['device_kind']}), "
             f"{result['cpu_cores']} CPU cores, jax {result['jax']}"]
    for mode in ("strong", "weak"):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        if not rows:
            continue
        what = (f"global batch {p['global_batch']}, efficiency t1/(n tn)" if mode == "strong"
                else f"{p['batch_per_device']} per device, efficiency t1/tn")
        lines += ["", f"{mode} scaling ({what})",
                  "devices  global batch  per device  fit ms/step  fit eff.  step ms  step eff.  compile s (fit/step)"]
        for r in rows:
            lines.append(f"{r['devices']:7d}  {r['global_batch']:12d}  {r['batch_per_device']:10d}  "
                         f"{r['fit_ms_per_step']:11.2f}  {r['fit_efficiency']:8.2f}  {r['step_ms']:7.2f}  "
                         f"{r['step_efficiency']:9.2f}  {r['fit_compile_s']:6.2f} / {r['step_compile_s']:.2f}")
    if result["note"]:
        lines += ["", "Note: " + result["note"]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="strong scaling only, global batch 512, 3 repeats (< 1 min on CPU)")
    size.add_argument("--tiny", action="store_true", help="a smoke test: a tiny network on 1 and 2 devices")
    parser.add_argument("--max-devices", type=int, default=None, help="largest n to time (default: all devices)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/scaling-<platform>.json)")
    args = parser.parse_args(argv)
    p = PLANS["tiny" if args.tiny else "quick" if args.quick else "full"]
    if args.max_devices is not None:
        p = Plan(**{**asdict(p), "max_devices": args.max_devices})
    result = run(p, log=lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(args.out or f"benchmarks/results/scaling-{result['platform']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
