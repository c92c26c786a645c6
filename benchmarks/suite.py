"""What to run (:func:`plan`) and running it (:func:`run_suite`): systems × configs × batch sizes → JSON rows.

One row per (system, config, batch) with the median µs per model-step, its min and max over the repeats,
GFLOP/s from the analytic FLOP count (:attr:`Config.step_flops`), the fraction of a square matmul's
GFLOP/s measured in the same run, compile seconds and XLA's temp bytes. On a GPU with documented peaks
(:data:`benchmarks.systems.DOCUMENTED_PEAKS_TFLOPS`) the rows also carry MFU against the chip's bf16, tf32 and
fp32 peaks. After the rows: the README's digits job (``jaxmlp.fit`` against scikit-learn's ``MLPClassifier``)
and the user-step section (:mod:`benchmarks.user_step`, the ``user_step`` key).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import experimental, harness, peers, systems, user_step
from benchmarks.systems import (  # noqa: F401 - MNIST, DOCUMENTED_PEAKS_TFLOPS: the suite's names for them too
    DIGITS,
    DIGITS_EPOCHS,
    DOCUMENTED_PEAKS_TFLOPS,
    MNIST,
    SEED,
    WIDE,
    Config,
    documented_peaks,
)


@dataclass
class Plan:
    """Everything one run measures; see :func:`plan`."""

    configs: list[Config]  # each at its own batch; the batch sweeps are extra entries
    ensembles: list[tuple[Config, int]] = field(default_factory=list)  # (config, K)
    fit_at: tuple[tuple[str, int], ...] = (("seed", 32), ("mnist", 256), ("wide", 1024))  # (config, batch) timing fit
    peers: bool = True
    repeats: int = 7
    min_repeat_s: float = 0.2
    fit_flops: float = 4e9  # training FLOPs per timed fit call
    peak_n: int = 2048  # the square matmul of the peak measurement
    ensemble_steps: int = 64
    lean: tuple[str, ...] = ()  # configs timed without jaxmlp-autodiff (the user-step section times it there)
    compile_peers: tuple[str, ...] = ("mnist", "wide")  # configs with torch-compile (it compiles for ~1 min)
    isolate: bool = True  # every system in its own process (harness.measure_isolated); False: all in this one
    torch_threads: int | None = None  # None: PyTorch's default (one intra-op thread per core)
    torch_one_thread: bool = True  # also torch-eager at 1 thread (own process): how much the default suffers under load
    user_step: list[Config] = field(default_factory=lambda: list(user_step.CONFIGS))  # the user-step section
    digits_epochs: int = DIGITS_EPOCHS  # the digits job: jaxmlp.fit against scikit-learn (0: not run)


def _sweep(cfg: Config, batches) -> list[Config]:
    return [replace(cfg, batch=b) for b in batches]


def plan(device: str = "cpu", quick: bool = False) -> Plan:
    """The configs of a run: quick (fewer batches, repeats and models) or full; ``gpu`` adds bf16 and width-8192
    configs."""
    if quick:  # wide: no jaxmlp-autodiff, no fit; ensembles of K = 256 (the target)
        configs = _sweep(SEED, (32, 512)) + _sweep(MNIST, (256,)) + [WIDE]
        p = Plan(configs, [(SEED, 256)], fit_at=(("seed", 32), ("mnist", 256)), repeats=3, min_repeat_s=0.05,
                 fit_flops=1e9, ensemble_steps=16, lean=("wide",))
    else:
        configs = _sweep(SEED, (8, 32, 128, 512, 2048)) + _sweep(MNIST, (32, 128, 256, 1024)) + [WIDE]
        p = Plan(configs, [(SEED, 64), (SEED, 256)])
    if device == "gpu":
        bf16 = [replace(c, name=c.name + "-bf16", dtype="bfloat16") for c in (MNIST, WIDE)]
        mfu = Config("w8192", (8192, 8192, 8192, 10), 8192, "ce")
        p.configs += bf16 + [mfu, replace(mfu, name="w8192-bf16", dtype="bfloat16")]
        p.ensembles.append((SEED, 4096))
        p.fit_flops, p.peak_n = 1e12, 8192
    return p


def tiny(p: Plan) -> Plan:
    """The same plan with every width and batch cut to a few units: a seconds-long smoke run of the code paths."""
    def shrink(c: Config) -> Config:
        return replace(c, sizes=tuple(min(n, 16) for n in c.sizes), batch=min(c.batch, 8))

    kinds, configs = set(), []
    for c in p.configs:  # the first config of each dtype: every code path, fewest compilations
        if c.dtype not in kinds:
            kinds.add(c.dtype)
            configs.append(c)
    fit_at = tuple((c.name, shrink(c).batch) for c in configs if (c.name, c.batch) in p.fit_at)
    lean = tuple(c.name for c in configs[1:])
    return replace(p, configs=[shrink(c) for c in configs], fit_at=fit_at, lean=lean, repeats=2, min_repeat_s=0.0,
                   compile_peers=(), user_step=[shrink(c) for c in (SEED, MNIST)], digits_epochs=1,
                   ensembles=[(shrink(c), min(K, 4)) for c, K in p.ensembles][:1], fit_flops=1e5, peak_n=64,
                   ensemble_steps=2)


def machine(device) -> dict:
    return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), device_platform=device.platform, device_kind=device.device_kind,
                device_count=len(jax.devices(device.platform)))


def _thunks(cfg: Config, K: int, device: str, p: Plan) -> dict:
    """``{system: builder}`` of one config (K = 1) or ensemble, in the order they are reported; peers that
    are not installed are left out."""
    t = {}
    if cfg.name == DIGITS.name:  # the README's digits job, whole fits (run_suite adds it when the data is there)
        for metrics in ("full", "minibatch"):
            t["jaxmlp-fit" + systems._suffix(metrics)] = partial(systems.digits_fit, p.digits_epochs, metrics)
        if p.peers and peers.available("sklearn"):
            t["sklearn-mlp"] = lambda: peers.sklearn_digits(p.digits_epochs)
        return t
    if K == 1:
        lean = cfg.name in p.lean
        t["jaxmlp-manual"] = lambda: systems.jaxmlp_step(cfg, "manual")
        if not lean:
            t["jaxmlp-autodiff"] = lambda: systems.jaxmlp_step(cfg, "autodiff")
        t["jax-optax"] = lambda: systems.reference_step(cfg)
        if (cfg.name, cfg.batch) in p.fit_at:
            for metrics in ("full", "minibatch"):
                t["jaxmlp-fit" + systems._suffix(metrics)] = partial(systems.jaxmlp_fit, cfg, p.fit_flops, metrics)
            per_epoch, epochs = systems._fit_shape(cfg, p.fit_flops)
            t["expert-scan"] = lambda: systems.expert_bench(cfg, 1, epochs, per_epoch)  # the same run, by an expert
        if p.peers:
            if peers.available("equinox"):  # every peer on every config
                t["equinox"] = lambda: peers.equinox_step(cfg)
                t["equinox-jit"] = lambda: peers.equinox_jit_step(cfg)
            if peers.available("flax"):
                t["flax-nnx"] = lambda: peers.flax_nnx_step(cfg)
            if peers.available("torch"):
                t["torch-eager"] = lambda: peers.torch_eager_step(cfg, device)
                if p.isolate and p.torch_one_thread and p.torch_threads is None:  # threads are per process
                    t["torch-eager-1thread"] = lambda: peers.torch_eager_step(cfg, device)
                if cfg.name in p.compile_peers:
                    t["torch-compile"] = lambda: peers.torch_compile_step(cfg, device)
        return t
    n = p.ensemble_steps
    per_epoch = max(1, min(64, n))
    epochs = max(1, n // per_epoch)
    for metrics in ("full", "minibatch"):
        t["jaxmlp-fit_ensemble" + systems._suffix(metrics)] = partial(
            systems.jaxmlp_fit_ensemble, cfg, K, epochs=epochs, per_epoch=per_epoch, metrics=metrics)
    t["expert-vmap"] = lambda: systems.expert_bench(cfg, K, epochs, per_epoch)  # the same runs, by an expert
    t["jax-optax-vmap"] = lambda: systems.reference_vmap_ensemble(cfg, K, n)
    t["jaxmlp-vmap"] = lambda: experimental.manual_vmap_ensemble(cfg, K, n)
    t["folded"] = lambda: experimental.folded_ensemble(cfg, K, n)
    if p.peers and peers.available("torch"):
        t["torch-func-vmap"] = lambda: peers.torch_func_ensemble(cfg, K, device)
    return t


def _benches(cfg: Config, device: str, p: Plan, K: int = 1) -> list[harness.Bench]:
    """The benches of one config or ensemble, all built in this process (``p.isolate`` False)."""
    if p.torch_threads is not None and peers.available("torch"):
        import torch

        torch.set_num_threads(p.torch_threads)
    benches = [build() for build in _thunks(cfg, K, device, p).values()]
    return [b for b in benches if b is not None]


def build_one(system: str, config: dict, K: int, device: str, plan: dict) -> harness.Bench | None:
    """One system of one config, in a worker process: the :class:`harness.Spec` of :func:`_specs`."""
    cfg = Config(**dict(config, sizes=tuple(config["sizes"])))
    p = _plan_from_json(plan)
    with jax.numpy_rank_promotion(plan.get("rank_promotion", "allow")):
        return _thunks(cfg, K, device, p)[system]()


def _specs(cfg: Config, K: int, device: str, p: Plan) -> list[harness.Spec]:
    kwargs = dict(config=dataclasses.asdict(cfg), K=K, device=device, plan=_plan_json(p))
    kwargs["plan"]["rank_promotion"] = jax.config.jax_numpy_rank_promotion
    # torch.compile starts from an empty Inductor cache, as XLA compiles without a persistent cache here
    systems_ = list(_thunks(cfg, K, device, p))
    cold = {"torch-compile": {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="benchmarks-inductor-")}
            } if "torch-compile" in systems_ else {}
    return [harness.Spec(system, "benchmarks.suite:build_one", dict(kwargs, system=system), env=cold.get(system, {}),
                         torch_threads=1 if system.endswith("-1thread") else
                         p.torch_threads if system.startswith("torch") else None)
            for system in systems_]


def _row(stats: dict, system: str, cfg: Config, K: int, peak: dict, doc_peaks: dict | None) -> dict:
    gflops = cfg.step_flops / (stats["us_per_step"] * 1e-6) / 1e9
    row = dict(system=system, config=cfg.name, batch=cfg.batch, K=K, sizes=list(cfg.sizes), loss=cfg.loss,
               dtype=cfg.dtype, gflops=gflops, peak_fraction=gflops / peak[cfg.dtype], **stats)
    if doc_peaks:
        row.update({f"mfu_{k}": gflops / (v * 1e3) for k, v in doc_peaks.items()})
    return row


def run_suite(p: Plan, device: str = "cpu", out: str | Path | None = None, log=print) -> dict:
    """Run ``p`` on ``device`` (``"cpu"`` or ``"gpu"``); write ``results.json`` and the plots into ``out``."""
    try:
        dev = jax.devices(device)[0]
    except RuntimeError as e:
        raise SystemExit(f"--device {device}: JAX finds no such device ({e}); install jax with GPU support "
                         f"(e.g. pip install 'jax[cuda12]') or run with --device cpu") from e
    doc_peaks = documented_peaks(dev.device_kind)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    rows = []
    with jax.default_device(dev):
        dtypes = sorted({c.dtype for c in p.configs} | {c.dtype for c, _ in p.ensembles})
        peak = {d: harness.matmul_peak(dev, jnp.dtype(d), p.peak_n) for d in dtypes}
        log(f"matmul peak ({p.peak_n}^3): " + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in peak.items()))
        work = [(cfg, 1) for cfg in p.configs] + list(p.ensembles)
        if p.digits_epochs and _digits_available(log):
            work.append((DIGITS, 1))
        for cfg, K in work:
            t0 = time.perf_counter()
            if p.isolate:
                stats = harness.measure_isolated(_specs(cfg, K, device, p), repeats=p.repeats,
                                                 min_repeat_s=p.min_repeat_s, log=log)
            else:
                stats = harness.measure(_benches(cfg, device, p, K), repeats=p.repeats, min_repeat_s=p.min_repeat_s)
            for system, s in stats.items():
                rows.append(_row(s, system, cfg, K, peak, doc_peaks))
                log(f"{cfg.name:>11} B={cfg.batch:<5} K={K:<4} {system:<22} {s['us_per_step']:>12.2f} us/step "
                    f"[{s['us_min']:.2f}, {s['us_max']:.2f}]  {rows[-1]['gflops']:8.2f} GFLOP/s")
            log(f"  ({time.perf_counter() - t0:.1f} s)")
        section = None
        if p.user_step:  # one process (this one; the workers are gone), four compiled copies per config
            section = user_step.run(p.user_step, repeats=p.repeats, min_repeat_s=p.min_repeat_s, log=log)
    load_end = list(os.getloadavg())
    result = dict(machine=machine(dev), versions=peers.versions(), libraries=peers.library_facts(),
                  isolation=ISOLATION[p.isolate], torch_threads=p.torch_threads or "default (one per core)",
                  loadavg=dict(start=load_start, end=load_end, note=_load_note(load_start, load_end)),
                  matmul_peak_gflops=peak, peak_n=p.peak_n, documented_peaks_tflops=doc_peaks, plan=_plan_json(p),
                  wall_s=time.perf_counter() - t_start, ratios=ratios(rows), rows=rows, user_step=section)
    log(f"load average (1, 5, 15 min): start {load_start}, end {load_end}; {result['loadavg']['note']}")
    for line in result["ratios"]:
        log("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in line.items()))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(_finite(result), indent=1))
        from benchmarks import plots

        result["plots"] = [str(f) for f in plots.write_all(result, out)]
    return result


def _digits_available(log) -> bool:
    """The digits job reads scikit-learn's bundled files (jaxmlp.datasets): skipped without scikit-learn."""
    if peers.available("sklearn"):
        return True
    log("  digits job: scikit-learn (its bundled data) not installed, skipped")
    return False


def ratios(rows) -> list[dict]:
    """The comparisons the issue asks for, per (config, batch, K): ratios of median µs per step (and temp bytes)."""
    groups = defaultdict(dict)
    for r in rows:
        groups[(r["config"], r["batch"], r["K"])][r["system"]] = r
    pairs = [("manual/ref", "jaxmlp-manual", "jax-optax"), ("manual/autodiff", "jaxmlp-manual", "jaxmlp-autodiff"),
             ("manual/torch", "jaxmlp-manual", "torch-eager"), ("ref/torch", "jax-optax", "torch-eager"),
             ("manual/equinox", "jaxmlp-manual", "equinox"), ("manual/equinox-jit", "jaxmlp-manual", "equinox-jit"),
             ("manual/flax-nnx", "jaxmlp-manual", "flax-nnx"),
             ("fit/sklearn", "jaxmlp-fit", "sklearn-mlp"),
             ("fit-minibatch/sklearn", "jaxmlp-fit-minibatch", "sklearn-mlp"),
             ("manual/torch-compile", "jaxmlp-manual", "torch-compile"),
             ("manual/torch-1thread", "jaxmlp-manual", "torch-eager-1thread"), ("fit/loop", "jaxmlp-fit", "jaxmlp-manual"),
             ("fit-minibatch/loop", "jaxmlp-fit-minibatch", "jaxmlp-manual"),
             ("fit/expert-scan", "jaxmlp-fit", "expert-scan"),
             ("fit-minibatch/expert-scan", "jaxmlp-fit-minibatch", "expert-scan"),
             ("fit_ensemble/expert-vmap", "jaxmlp-fit_ensemble", "expert-vmap"),
             ("fit_ensemble-minibatch/expert-vmap", "jaxmlp-fit_ensemble-minibatch", "expert-vmap"),
             ("fit_ensemble/optax-vmap", "jaxmlp-fit_ensemble", "jax-optax-vmap"),
             ("fit_ensemble/torch-func", "jaxmlp-fit_ensemble", "torch-func-vmap"),
             ("fit_ensemble-minibatch/optax-vmap", "jaxmlp-fit_ensemble-minibatch", "jax-optax-vmap"),
             ("vmap/optax-vmap", "jaxmlp-vmap", "jax-optax-vmap"), ("folded/vmap", "folded", "jaxmlp-vmap")]
    out = []
    for (config, batch, K), g in groups.items():
        line = dict(config=config, batch=batch, K=K)
        for name, a, b in pairs:
            if a in g and b in g:
                line[name] = g[a]["us_per_step"] / g[b]["us_per_step"]
                line[name + " (min)"] = g[a]["us_min"] / g[b]["us_min"]
        temps = [g.get(s, {}).get("temp_bytes") for s in ("jaxmlp-manual", "jax-optax")]
        if all(temps):
            line["temp manual/ref"] = temps[0] / temps[1]
        for s in ("jaxmlp-fit_ensemble", "jaxmlp-fit_ensemble-minibatch"):
            if s in g:
                line[s.removeprefix("jaxmlp-") + " us/model-step"] = g[s]["us_per_step"]
        out.append(line)
    return out


ISOLATION = {
    True: "one process per system x config (python -m benchmarks.worker), all of a config's processes alive "
          "and idle while one runs; repeats alternate round-robin in a fresh shuffled order each round",
    False: "all systems in one process; repeats alternate in a fresh shuffled order each round",
}


def _load_note(start, end) -> str:
    """Say plainly whether the machine was busy: a 1-minute load average above the core count means
    other processes competed for the cores during the run."""
    cores = os.cpu_count() or 1
    peak = max(start[0], end[0])
    if peak > cores:
        return (f"HIGH LOAD: 1-min load average up to {peak:.1f} on {cores} cores; other processes competed "
                f"for the cores, compare systems by their ratios within this run only")
    return f"1-min load average at most {peak:.1f} on {cores} cores"


def _plan_from_json(d: dict) -> Plan:
    names = {f.name for f in dataclasses.fields(Plan)}
    d = {k: v for k, v in d.items() if k in names and k not in ("configs", "ensembles", "user_step")}
    d = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
         for k, v in d.items()}
    return Plan([], **d)


def _plan_json(p: Plan) -> dict:
    d = dataclasses.asdict(p)
    d["ensembles"] = [dict(config=c.name, batch=c.batch, K=K) for c, K in p.ensembles]
    d["user_step"] = [dict(config=c.name, batch=c.batch, sizes=list(c.sizes)) for c in p.user_step]
    return d


def _finite(obj):
    """JSON has no NaN or inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
