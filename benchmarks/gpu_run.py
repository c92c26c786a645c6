"""The GPU run in one command: ``bash benchmarks/gpu_run.sh`` (this module: ``python -m benchmarks.gpu_run``).

    bash benchmarks/gpu_run.sh [--full] [--repeats N] [--out DIR] [--no-peers]
    bash benchmarks/gpu_run.sh --tiny --device cpu --out DIR      # the test suite's CPU run, tiny sizes (< 1 min)

On the device (``--device gpu``, the default) it runs, writing JSON under ``benchmarks/results/gpu-<device>/``
(``<device>`` is ``jax.devices()[0].device_kind``, lower-cased, every run of other characters a ``-``):

1. the suite with the GPU plan, as ``python -m benchmarks --device gpu --quick`` (``--full``: the full sweep),
   without the CPU-only first-result and compile-budget sections: every system x config in its own
   process, the bf16 and width-8192 configs, the ensembles at K = 256 and 4096, the digits job and the
   user step (``results.json``, plots);
2. from those rows: ``fit`` against the per-step jitted loop (``jaxmlp-manual``) and the expert's
   ``lax.scan`` run, and ``fit_ensemble`` at K = 256 and 4096 against ``vmap`` of jax.grad + optax
   (``jax-optax-vmap``, one step per scan iteration, and ``expert-vmap``, the expert's whole run);
3. ``check_gradients`` on [784, 512, 512, 10], float64, batch 64, in a fresh process
   (``benchmarks/gradcheck_scale.py``; ``gradcheck.json``);
4. ``gpu_run.json``: the above in one file, with every row's MFU against the device's bf16 and f32 peaks
   (tf32 and fp32: JAX's default float32 matmul precision may use TF32 tensor cores) from
   :data:`benchmarks.systems.DOCUMENTED_PEAKS_TFLOPS`. On a device without documented peaks (the CPU of
   ``--tiny``) the peaks are the square matmuls measured in the same run, and ``peaks.source`` says so.

``--tiny`` cuts every width, batch, K and repeat to a few units (the suite's :func:`benchmarks.suite.tiny`), runs the
systems in this one process, without peers: seconds of work that go through every code path, so that the
test suite (``tests/test_benchmarks.py``) runs it on the CPU and it cannot rot without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

GRADCHECK_SIZES, GRADCHECK_BATCH = (784, 512, 512, 10), 64
TINY_GRADCHECK_SIZES, TINY_GRADCHECK_BATCH = (8, 6, 3), 4
ENSEMBLE_K = (256, 4096)  # what the GPU plan runs (quick: K = 256 and 4096)


def device_dirname(device_kind: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``: safe as one path component."""
    return re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") or "unknown"


def peaks(device_kind: str, measured_gflops: dict) -> dict:
    """The peaks that MFU divides by, TFLOP/s: the datasheet's (bf16, tf32, fp32) where documented; else
    the square matmuls the suite measured (``float32`` as tf32 and fp32, ``bfloat16`` as bf16)."""
    from benchmarks.systems import documented_peaks

    doc = documented_peaks(device_kind)
    if doc is not None:
        return dict(source=f"datasheet, dense (benchmarks.systems.DOCUMENTED_PEAKS_TFLOPS) for {device_kind!r}", **doc)
    f32 = measured_gflops.get("float32")
    bf16 = measured_gflops.get("bfloat16", f32)
    return dict(source=f"no documented peak for {device_kind!r}: the square matmuls measured in this run",
                bf16=bf16 / 1e3, tf32=f32 / 1e3, fp32=f32 / 1e3)


def mfu_rows(rows: list, pk: dict) -> list:
    """Every suite row's GFLOP/s as a fraction of each peak (``mfu_bf16``, ``mfu_tf32``, ``mfu_fp32``)."""
    out = []
    for r in rows:
        out.append(dict(system=r["system"], config=r["config"], batch=r["batch"], K=r["K"], dtype=r["dtype"],
                        us_per_step=r["us_per_step"], gflops=r["gflops"],
                        **{f"mfu_{k}": r["gflops"] / (pk[k] * 1e3) for k in ("bf16", "tf32", "fp32")}))
    return out


def _by(rows, **match):
    return {r["system"]: r for r in rows if all(r[k] == v for k, v in match.items())}


def fit_vs_loop(rows: list) -> list:
    """``fit`` (whole epochs in one program) per step against the per-step jitted loop and the expert's run."""
    out = []
    for r in rows:
        if r["system"] != "jaxmlp-fit" or r["K"] != 1 or r["config"] == "digits":
            continue
        g = _by(rows, config=r["config"], batch=r["batch"], K=1)
        if "jaxmlp-manual" not in g:
            continue
        loop = g["jaxmlp-manual"]["us_per_step"]
        line = dict(config=r["config"], batch=r["batch"], fit_us=r["us_per_step"], loop_us=loop,
                    fit_over_loop=r["us_per_step"] / loop)
        if "jaxmlp-fit-minibatch" in g:
            line["fit_minibatch_us"] = g["jaxmlp-fit-minibatch"]["us_per_step"]
            line["fit_minibatch_over_loop"] = line["fit_minibatch_us"] / loop
        if "expert-scan" in g:
            line["expert_scan_us"] = g["expert-scan"]["us_per_step"]
            line["fit_over_expert_scan"] = r["us_per_step"] / line["expert_scan_us"]
        out.append(line)
    return out


def ensembles(rows: list) -> list:
    """``fit_ensemble`` per model-step against ``vmap`` of jax.grad + optax, at every K the suite ran."""
    out = []
    for K in sorted({r["K"] for r in rows if r["K"] > 1}):
        g = _by(rows, K=K)
        if "jaxmlp-fit_ensemble" not in g:
            continue
        fe = g["jaxmlp-fit_ensemble"]["us_per_step"]
        line = dict(config=g["jaxmlp-fit_ensemble"]["config"], K=K, fit_ensemble_us=fe)
        for name, key in (("jaxmlp-fit_ensemble-minibatch", "fit_ensemble_minibatch"), ("jax-optax-vmap", "optax_vmap"),
                          ("expert-vmap", "expert_vmap")):
            if name in g:
                line[f"{key}_us"] = g[name]["us_per_step"]
                if name != "jaxmlp-fit_ensemble-minibatch":
                    line[f"fit_ensemble_over_{key}"] = fe / g[name]["us_per_step"]
        out.append(line)
    return out


def gradcheck(out: Path, tiny: bool, log=print) -> dict:
    """``check_gradients`` in a fresh process (its peak memory is the process's): ``gradcheck.json``."""
    sizes, batch = (TINY_GRADCHECK_SIZES, TINY_GRADCHECK_BATCH) if tiny else (GRADCHECK_SIZES, GRADCHECK_BATCH)
    path = out / "gradcheck.json"
    cmd = [sys.executable, "-m", "benchmarks.gradcheck_scale", "--sizes", *map(str, sizes), "--batch", str(batch),
           "--out", str(path)]
    log("$ " + " ".join(cmd[1:]))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                          timeout=1800)
    if done.returncode:
        raise RuntimeError(f"gradcheck_scale failed:\n{done.stderr[-3000:]}")
    return json.loads(path.read_text())


def _nvidia_smi() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.sm,power.limit,"
                               "memory.total", "--format=csv"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def run(*, device: str = "gpu", tiny: bool = False, full: bool = False, repeats: int | None = None,
        peers: bool = True, out: str | Path | None = None, log=print) -> dict:
    """The whole GPU run; returns (and writes ``out/gpu_run.json`` with) its summary."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax starts: workers share the GPU
    import jax

    from benchmarks import suite

    try:
        dev = jax.devices(device)[0]
    except RuntimeError as e:
        raise SystemExit(f"--device {device}: JAX finds no such device ({e}); on a machine without a GPU run "
                         f"with --tiny --device cpu") from e
    out = Path(out or f"benchmarks/results/gpu-{device_dirname(dev.device_kind)}{'-tiny' if tiny else ''}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_start = list(os.getloadavg())

    p = suite.plan("gpu", quick=not full)  # the GPU plan even on the CPU: bf16, width 8192, K = 4096
    if tiny:
        p = suite.tiny(p)
        p.isolate = False  # seconds, not minutes: the worker processes have their own test
        peers = False
    p.peers = peers
    if repeats is not None:
        p.repeats = repeats
    log(f"== suite on {dev.device_kind} ({dev.platform}) -> {out}/results.json")
    with jax.numpy_rank_promotion("allow"):  # the plain-JAX reference writes `x @ w + b`
        res = suite.run_suite(p, device, out, log=log)

    log("== check_gradients")
    gc = gradcheck(out, tiny, log)

    pk = peaks(dev.device_kind, res["matmul_peak_gflops"])
    summary = dict(
        device=dict(kind=dev.device_kind, platform=dev.platform, dirname=device_dirname(dev.device_kind),
                    nvidia_smi=_nvidia_smi()),
        command="bash benchmarks/gpu_run.sh " + " ".join(
            a for a in (f"--device {device}", "--tiny" if tiny else "", "--full" if full else "",
                        f"--repeats {repeats}" if repeats is not None else "", "" if peers else "--no-peers") if a),
        tiny=tiny, peaks=pk, matmul_peak_gflops=res["matmul_peak_gflops"],
        fit_vs_loop=fit_vs_loop(res["rows"]), ensembles=ensembles(res["rows"]),
        user_step=[{k: e[k] for k in ("config", "batch", "manual_us", "autodiff_us", "ratio", "aa_band", "temp_ratio",
                                      "verdict")} for e in (res["user_step"] or {}).get("configs", [])],
        gradcheck=gc, mfu=mfu_rows(res["rows"], pk),
        loadavg=dict(start=load_start, end=list(os.getloadavg())), wall_s=time.perf_counter() - t0,
        files=["results.json", "gradcheck.json", "gpu_run.json", *[Path(f).name for f in res.get("plots", [])]])
    (out / "gpu_run.json").write_text(json.dumps(suite._finite(summary), indent=1))
    log(table(summary))
    log(f"wrote {out}/gpu_run.json, results.json, gradcheck.json in {summary['wall_s']:.0f} s")
    return summary


def table(summary: dict) -> str:
    pk = summary["peaks"]
    lines = [f"MFU on {summary['device']['kind']} against bf16 {pk['bf16']:.4g}, tf32 {pk['tf32']:.4g}, "
             f"fp32 {pk['fp32']:.4g} TFLOP/s ({pk['source']}):",
             f"  {'system':<30} {'config':<12} {'batch':>6} {'K':>5} {'dtype':<9} {'us/step':>10} {'GFLOP/s':>10} "
             f"{'bf16':>7} {'tf32':>7} {'fp32':>7}"]
    for r in summary["mfu"]:
        lines.append(f"  {r['system']:<30} {r['config']:<12} {r['batch']:>6} {r['K']:>5} {r['dtype']:<9} "
                     f"{r['us_per_step']:>10.2f} {r['gflops']:>10.1f} {r['mfu_bf16']:>7.3f} {r['mfu_tf32']:>7.3f} "
                     f"{r['mfu_fp32']:>7.3f}")
    for f in summary["fit_vs_loop"]:
        lines.append(f"fit vs loop, {f['config']} B={f['batch']}: fit {f['fit_us']:.2f} us/step, "
                     f"loop {f['loop_us']:.2f}, fit/loop {f['fit_over_loop']:.3f}")
    for e in summary["ensembles"]:
        lines.append(f"fit_ensemble K={e['K']}: {e['fit_ensemble_us']:.3f} us/model-step; "
                     + ", ".join(f"{k} {v:.3f}" for k, v in e.items() if k.startswith("fit_ensemble_over")))
    gc = summary["gradcheck"]
    lines.append(f"check_gradients {gc['sizes']} batch {gc['batch']}: first call {gc['first_call_s']} s, repeat "
                 f"{gc['repeat_call_s']} s, peak RSS {gc['peak_rss_mb']} MB, ok={gc['ok']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bash benchmarks/gpu_run.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--tiny", action="store_true", help="every size cut to a few units, no peers (the tests' CPU run)")
    ap.add_argument("--full", action="store_true", help="the suite's full sweep instead of --quick")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--out", default=None, help="default benchmarks/results/gpu-<device kind>/")
    args = ap.parse_args(argv)
    summary = run(device=args.device, tiny=args.tiny, full=args.full, repeats=args.repeats, peers=not args.no_peers,
                  out=args.out)
    return 0 if summary["gradcheck"]["ok"] and all(math.isfinite(r["us_per_step"]) for r in summary["mfu"]) else 1


if __name__ == "__main__":
    sys.exit(main())
