"""The user step: a user's own jitted training step with jaxmlp's gradient against the same step with ``jax.grad``.

``python -m benchmarks --user-step-only [--repeats N] [--out DIR]`` (also a section of ``python -m benchmarks``,
the ``user_step`` key of ``results.json``).

What a user writes around jaxmlp, one ``jax.jit`` with the state donated, ``opt = optax.adam(1e-3)``::

    def step(p, s, x, y):                                                       # A: manual
        g = jaxmlp.backward(p, x, y, activation="relu", loss=L)[1]
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

and B (autodiff), the same with ``g = jax.grad(partial(jaxmlp.loss_fn, activation="relu", loss=L))(p, x, y)``.
``L`` is ``"mse"`` for the one-output seed config and ``"ce"`` (integer labels) otherwise, as in the suite.

Both run in **one process**, each compiled **twice** as independent copies (A1, A2, B1, B2: four ``jax.jit``
of four distinct function objects, each with its own parameters and optimizer state, all from the same
initial values). Every copy does the same number of calls per repeat; the repeats go round by round,
A and B alternating: A1 B1 A2 B2, then B2 A2 B1 A1, and so on.

Reported per config:

- ``manual_us``, ``autodiff_us``: the median µs per step over all repeats of A1 and A2 (of B1 and B2), pooled;
- ``ratio``: ``manual_us / autodiff_us``, the ratio of those medians (``ratio_min``: of the fastest repeats);
- ``aa_band``: the run's own noise, ``|median(A1) / median(A2) - 1|`` and ``|median(B1) / median(B2) - 1|``:
  two compiled copies of one program differ by this much, so a ratio within ``1 ± max(aa_band)`` is no
  difference (``verdict``);
- ``temp_ratio``: ``temp_size_in_bytes`` of ``jax.jit(step, donate_argnums=(0, 1)).lower(...).compile()
  .memory_analysis()``, A1's over B1's;
- every copy's median, minimum, repeats, compile seconds and temp bytes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import numpy as np
import optax

import jaxmlp
from benchmarks.harness import Bench, compile_jit, stateful, time_repeat, warm_up
from benchmarks.systems import LR, MNIST, SEED, WIDE, Config, data

CONFIGS = (SEED, replace(SEED, batch=512), MNIST, WIDE)
COPIES = ("A1", "B1", "A2", "B2")  # A: manual, B: autodiff
GRAD = {"A": "manual", "B": "autodiff"}


def make_step(cfg: Config, grad: str, opt):
    """A new step function (a new object each call, so each ``jax.jit`` of it compiles its own copy)."""
    loss = cfg.loss
    if grad == "manual":
        def step(p, s, x, y):
            g = jaxmlp.backward(p, x, y, activation="relu", loss=loss)[1]
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s
    else:
        def step(p, s, x, y):
            g = jax.grad(partial(jaxmlp.loss_fn, activation="relu", loss=loss))(p, x, y)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s
    return step


def problem(cfg: Config):
    """``(params, opt, x, y)``: the initial parameters, ``optax.adam(1e-3)`` and the minibatch of ``cfg``."""
    params = jaxmlp.init_mlp(jax.random.key(0), cfg.sizes, dtype=cfg.jdtype)
    return (params, optax.adam(LR), *data(cfg, cfg.batch))


def build(cfg: Config) -> dict[str, Bench]:
    """The four compiled copies A1, B1, A2, B2 of ``cfg``, each with its own state."""
    params, opt, x, y = problem(cfg)
    benches = {}
    for name in COPIES:
        state = (params, opt.init(params))
        compiled, compile_s, temp = compile_jit(make_step(cfg, GRAD[name[0]], opt), *state, x, y,
                                                donate_argnums=(0, 1))
        benches[name] = Bench(name, stateful(compiled, state, x, y), 1, compile_s, temp)
    return benches


def measure(cfg: Config, *, repeats: int, min_repeat_s: float) -> dict:
    """Time the four copies of ``cfg`` in this process, rounds alternating A and B; the config's entry."""
    benches = build(cfg)
    numbers = [warm_up(b, min_repeat_s)[1] for b in benches.values()]
    number = max(numbers)  # the same calls per repeat for every copy, each repeat >= min_repeat_s
    times = {name: [] for name in COPIES}
    load_before = list(os.getloadavg())
    for r in range(repeats):
        for name in (COPIES if r % 2 == 0 else COPIES[::-1]):
            times[name].append(time_repeat(benches[name], number))
    load_after = list(os.getloadavg())
    return summarize(cfg, times, {n: b.compile_s for n, b in benches.items()},
                     {n: b.temp_bytes for n, b in benches.items()}, number,
                     loadavg=dict(before=load_before, after=load_after))


def summarize(cfg: Config, times: dict, compile_s: dict, temp: dict, number: int, **extra) -> dict:
    """The config's entry from every copy's repeats (µs per step); see the module docstring."""
    med = {n: float(np.median(t)) for n, t in times.items()}
    pooled = {k: np.concatenate([times[k + "1"], times[k + "2"]]) for k in GRAD}
    manual, autodiff = float(np.median(pooled["A"])), float(np.median(pooled["B"]))
    band = {"manual": abs(med["A1"] / med["A2"] - 1), "autodiff": abs(med["B1"] / med["B2"] - 1)}
    ratio = manual / autodiff
    noise = max(band.values())
    if abs(ratio - 1) <= noise:
        verdict = "within the A/A band"
    else:
        verdict = "manual faster" if ratio < 1 else "manual slower"
    temp_ratio = temp["A1"] / temp["B1"] if temp.get("A1") and temp.get("B1") else None
    copies = {n: dict(grad=GRAD[n[0]], us_per_step=med[n], us_min=float(np.min(times[n])),
                      us_repeats=[float(t) for t in times[n]], compile_s=compile_s[n], temp_bytes=temp[n])
              for n in COPIES}
    return dict(config=cfg.name, batch=cfg.batch, sizes=list(cfg.sizes), loss=cfg.loss, dtype=cfg.dtype,
                manual_us=manual, autodiff_us=autodiff, ratio=ratio,
                ratio_min=float(np.min(pooled["A"]) / np.min(pooled["B"])), aa_band=band, verdict=verdict,
                temp_ratio=temp_ratio, repeats=len(times["A1"]), calls_per_repeat=number, copies=copies, **extra)


def run(configs=None, *, repeats: int = 7, min_repeat_s: float = 0.2, log=print) -> dict:
    """The section: every config in turn, in this process; returns the ``user_step`` JSON object."""
    t0 = time.perf_counter()
    entries = []
    for cfg in CONFIGS if configs is None else configs:
        entries.append(measure(cfg, repeats=repeats, min_repeat_s=min_repeat_s))
        e = entries[-1]
        log(f"  user step {cfg.name} B={cfg.batch}: manual {e['manual_us']:.1f} us, autodiff {e['autodiff_us']:.1f} us, "
            f"ratio {e['ratio']:.3f}, A/A band {e['aa_band']['manual']:.3f} / {e['aa_band']['autodiff']:.3f}")
    result = dict(what="one process; A = jaxmlp.backward, B = jax.grad(jaxmlp.loss_fn); optax.adam(1e-3), "
                       "one jax.jit per copy with (params, opt_state) donated; each compiled twice (A1, A2, B1, B2), "
                       "rounds A1 B1 A2 B2 / B2 A2 B1 A1 alternating",
                  ratio="median of A1+A2 repeats / median of B1+B2 repeats (us per step)",
                  aa_band="|median(A1)/median(A2) - 1| and |median(B1)/median(B2) - 1|",
                  temp_ratio="temp_size_in_bytes of A1 / of B1 (compiled with the state donated)",
                  device=_device().device_kind, repeats=repeats, min_repeat_s=min_repeat_s,
                  wall_s=time.perf_counter() - t0, configs=entries)
    log(table(result))
    return result


def _device():
    """The device the section runs on: ``jax.default_device``'s, else JAX's first."""
    d = jax.config.jax_default_device
    if isinstance(d, str):
        return jax.devices(d)[0]
    return d if d is not None else jax.devices()[0]


def table(result: dict) -> str:
    head = (f"{'config':<24} {'batch':>5} {'manual us':>10} {'autodiff us':>11} {'manual/autodiff':>15} "
            f"{'A/A manual':>10} {'A/A autodiff':>12} {'temp manual/autodiff':>20}  verdict")
    lines = [f"user step ({result['what']}; medians of {result['repeats']} repeats per copy):", head]
    for e in result["configs"]:
        cfg = f"{e['config']} {e['sizes']}".replace(" ", "")
        temp = f"{e['temp_ratio']:.3f}" if e["temp_ratio"] is not None else "n/a"
        lines.append(f"{cfg:<24} {e['batch']:>5} {e['manual_us']:>10.1f} {e['autodiff_us']:>11.1f} "
                     f"{e['ratio']:>15.3f} {e['aa_band']['manual']:>10.3f} {e['aa_band']['autodiff']:>12.3f} "
                     f"{temp:>20}  {e['verdict']}")
    return "\n".join(lines)


def main(out=None, *, repeats: int = 7, min_repeat_s: float = 0.2, device: str = "cpu", configs=None,
         log=print) -> dict:
    """``--user-step-only``: the section alone (``configs``: default :data:`CONFIGS`); with ``out``, writes
    ``out/user_step.json``."""
    from benchmarks import peers

    configs = CONFIGS if configs is None else configs

    dev = jax.devices(device)[0]
    load_start = list(os.getloadavg())
    with jax.default_device(dev):
        section = run(configs, repeats=repeats, min_repeat_s=min_repeat_s, log=log)
    load_end = list(os.getloadavg())
    result = dict(user_step=section, versions=peers.versions(), cpu_count=os.cpu_count(),
                  loadavg=dict(start=load_start, end=load_end),
                  command=f"python -m benchmarks --user-step-only --repeats {repeats}")
    log(f"load average (1, 5, 15 min): start {load_start}, end {load_end} on {os.cpu_count()} cores")
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "user_step.json").write_text(json.dumps(result, indent=1))
    return result
