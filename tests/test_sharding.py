"""Data and model parallelism (``fit(mesh=)``, ``fit_ensemble(mesh=)``): against the single-device runs, resumed
from checkpoints, on one host and two; bad meshes; and the scaling script.

Every test here runs JAX in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``,
so that this process (and the rest of the suite) keeps its single CPU device:

- ``tests/_sharding_worker.py`` runs the 8-device cases in one process (paid once, by a module-scoped
  fixture) and reports each case's traceback; each case is one test below;
- ``tests/_multihost_worker.py`` is started twice, as the two processes of a ``jax.distributed``
  job on localhost;
- ``benchmarks/scaling.py --tiny`` is the smoke test of the benchmark.

Every subprocess has a timeout, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxmlp

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIMEOUT_S = 240  # generous for a loaded 2-core machine; a healthy run takes a fraction of it

pytestmark = pytest.mark.slow


def env_with_devices(n: int) -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    return {**os.environ, "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={n}"]),
            "JAX_PLATFORMS": "cpu"}


def run(args, *, n_devices: int, timeout: float = TIMEOUT_S, cwd=ROOT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *map(str, args)], env=env_with_devices(n_devices), cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{args} did not finish within {timeout} s; output so far:\n{e.stdout}\n{e.stderr}")


def tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


# ---------------------------------------------------------------- 8 devices, one process (the worker)

@pytest.fixture(scope="module")
def sharding_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "results.json"
    proc = run([TESTS / "_sharding_worker.py", out], n_devices=8)
    results = json.loads(out.read_text()) if out.exists() else {}
    return results, proc


def check_case(sharding_results, name):
    results, proc = sharding_results
    if name not in results:
        pytest.fail(f"the sharding worker did not report case {name!r} (exit status {proc.returncode}):\n"
                    f"stdout:\n{tail(proc.stdout)}\nstderr:\n{tail(proc.stderr)}")
    result = results[name]
    if not result["ok"]:
        pytest.fail(f"case {name!r} failed in the 8-device subprocess:\n{result['error']}", pytrace=False)
    return result["info"]


def test_data_parallel_matches_single_device(sharding_results):
    """fit(mesh=) over a "data" axis equals the single-device fit within 1e-4 (minibatch, full batch)."""
    info = check_case(sharding_results, "data_parallel_matches_single_device")
    print(info)


@pytest.mark.perf  # a layout detail: the values are test_data_parallel_matches_single_device's
def test_gradients_are_all_reduced(sharding_results):
    """The compiled program all-reduces every gradient leaf, the (B3)-(B4) batch sums of backward included:
    each device computes its shard's gradients, rather than every device all of them."""
    check_case(sharding_results, "gradients_are_all_reduced")


def test_ensemble_model_parallel(sharding_results):
    """fit_ensemble(mesh=) over a "model" axis: K/n models per device, stays sharded, equals unsharded."""
    check_case(sharding_results, "ensemble_model_parallel_matches_unsharded")


def test_bad_meshes_raise(sharding_results):
    """No "data"/"model" axis, or a batch / K not divisible by the axis size: ValueError naming the argument."""
    check_case(sharding_results, "bad_meshes_raise")


def test_explicit_axis_mesh(sharding_results):
    """A mesh from ``jax.make_mesh`` (Explicit axes by default in recent jax) works like an Auto one."""
    check_case(sharding_results, "explicit_axis_mesh")


def test_resume_under_a_mesh_is_bit_identical(sharding_results):
    """fit(mesh=) over a "data" axis and fit_ensemble(mesh=) over a "model" axis, 4 of 8 devices: interrupted after
    epoch 2 and resumed, each equals its uninterrupted sharded run bit for bit and stays on the mesh."""
    check_case(sharding_results, "resume_under_a_mesh_is_bit_identical")


# ---------------------------------------------------------------- two processes, one coordinator

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    """Two jax.distributed processes with 2 CPU devices each train on one 4-device "data" mesh with the
    same fit call: both end with the same params, equal to a single-process, single-device fit to 1e-4."""
    sys.path.insert(0, str(TESTS))
    try:
        import _multihost_worker as worker
    finally:
        sys.path.remove(str(TESTS))
    address = f"127.0.0.1:{free_port()}"
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, TESTS / "_multihost_worker.py", address, "2", str(i), outs[i]],
                              env=env_with_devices(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        ref_params, ref_history = worker.train()  # meanwhile, in this process: one device, no mesh
        logs = [proc.communicate(timeout=max(deadline - time.monotonic(), 1))[0] for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"the two-process run did not finish within {TIMEOUT_S} s:\n" +
                    "\n".join(tail(p.communicate()[0]) for p in procs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    report = "\n".join(f"--- process {i} (exit status {p.returncode}):\n{tail(log)}"
                       for i, (p, log) in enumerate(zip(procs, logs)))
    if any("UNSUPPORTED:" in log for log in logs):
        pytest.skip(f"the installed jax cannot run CPU collectives across processes:\n{report}")
    assert all(p.returncode == 0 for p in procs), report

    ref = [np.asarray(leaf) for leaf in jax.tree.leaves(ref_params)] + [ref_history["loss"]]
    got = []
    for out in outs:
        with np.load(out) as f:
            got.append([f[f"arr_{i}"] for i in range(len(ref) - 1)] + [f["loss"]])
    for a, b in zip(got[0], got[1], strict=True):
        np.testing.assert_array_equal(a, b, err_msg="the two processes disagree")
    for a, b in zip(got[0], ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg="two processes vs one process")
    W1_init = np.asarray(jaxmlp.init_mlp(jax.random.key(0), worker.SIZES)[0].W)
    assert np.max(np.abs(ref[0] - W1_init)) > 1e-2, "the parameters did not train"


# ---------------------------------------------------------------- the scaling benchmark

def test_scaling_benchmark_smoke(tmp_path):
    out = tmp_path / "scaling.json"
    proc = run(["-m", "benchmarks.scaling", "--tiny", "--out", out], n_devices=2)
    assert proc.returncode == 0, f"stdout:\n{tail(proc.stdout)}\nstderr:\n{tail(proc.stderr)}"
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["mode"], r["devices"]) for r in rows} == {(m, n) for m in ("strong", "weak") for n in (1, 2)}
    for r in rows:
        assert r["fit_ms_per_step"] > 0 and r["step_ms"] > 0 and np.isfinite(r["fit_efficiency"])
        assert r["batch_per_device"] * r["devices"] == r["global_batch"]
    assert "strong scaling" in proc.stdout and "weak scaling" in proc.stdout

