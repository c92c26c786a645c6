"""Smoke test of the benchmark harness (``benchmarks/``): it runs, and writes well-formed rows and plots.

No timing is asserted. The GPU plan (its bf16 configs, ensembles) runs here on the CPU, one config per dtype, with
every width and batch cut to a few units, so its code paths are exercised without a GPU.
"""

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the top-level `benchmarks` package

from benchmarks import suite  # noqa: E402

REQUIRED = ("system", "config", "batch", "us_per_step", "us_min", "us_max", "gflops", "peak_fraction", "compile_s")


pytestmark = pytest.mark.slow  # about ten XLA compilations: 10-60 s, most of it compiling


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    p = suite.tiny(suite.plan("gpu", quick=True))
    p.peers = False  # optional dependencies; their builders are skipped when missing anyway
    p.repeats = 3  # an odd count: the median is one of the repeats, and differs from their mean
    p.isolate = False  # every system in this process: seconds, not minutes (the worker processes: test below)
    with jax.numpy_rank_promotion("allow"):  # the plain-JAX reference writes `x @ w + b`, as JAX code does
        return out, suite.run_suite(p, "cpu", out, log=lambda *_: None)


def test_rows_have_required_keys_and_positive_finite_numbers(result):
    out, res = result
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows == json.loads(json.dumps(res["rows"]))
    for row in rows:
        assert all(k in row for k in REQUIRED), row
        for k in ("us_per_step", "us_min", "us_max", "gflops", "peak_fraction"):
            assert math.isfinite(row[k]) and row[k] > 0, (k, row)
        # The summary is the statistics of the recorded repeats, and GFLOP/s follows from the sizes.
        repeats = np.asarray(row["us_repeats"])
        assert len(repeats) == row["repeats"] >= 1
        assert row["us_per_step"] == np.median(repeats)
        assert (row["us_min"], row["us_max"]) == (repeats.min(), repeats.max())
        macs = sum(a * b for a, b in zip(row["sizes"][:-1], row["sizes"][1:]))
        assert row["gflops"] == pytest.approx(6 * row["batch"] * macs / (row["us_per_step"] * 1e-6) / 1e9, rel=1e-12)
        assert row["compile_s"] >= 0 and (row["temp_bytes"] is None or row["temp_bytes"] >= 0)


def test_every_system_and_gpu_config_is_run(result):
    _, res = result
    seen = {(r["system"], r["config"], r["dtype"]) for r in res["rows"]}
    for system in ("jaxmlp-manual", "jaxmlp-autodiff", "jax-optax"):
        assert (system, "seed", "float32") in seen  # mse, float32
    for system in ("jaxmlp-manual", "jax-optax"):
        assert (system, "mnist-bf16", "bfloat16") in seen  # ce, and the GPU plan's bf16 configs
    assert {("jaxmlp-fit", "seed", "float32"), ("jaxmlp-fit-minibatch", "seed", "float32")} <= seen
    ensembles = {"jaxmlp-fit_ensemble", "jaxmlp-fit_ensemble-minibatch", "jax-optax-vmap", "folded"}
    assert ensembles <= {s for s, c, _ in seen if c == "seed"}


def test_machine_versions_and_plots(result):
    out, res = result
    assert res["machine"]["cpu_count"] >= 1 and res["versions"]["jax"]
    assert set(res["matmul_peak_gflops"]) == {"float32", "bfloat16"}
    assert len(res["plots"]) == 3
    for png in res["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_isolated_systems_each_run_in_their_own_process():
    """The suite's default: one worker process per system, repeats alternated; each row carries its
    worker's pid, threads and XLA flags (a spec's ``env`` reaches its worker only), and the load average."""
    import os

    from benchmarks import harness

    cfg = suite.tiny(suite.plan("cpu", quick=True)).configs[0]
    p = suite.plan("cpu", quick=True)
    p.peers = False
    with jax.numpy_rank_promotion("allow"):
        specs = [s for s in suite._specs(cfg, 1, "cpu", p) if s.system in ("jaxmlp-manual", "jax-optax")]
    flags = "--xla_cpu_enable_fast_math=false"
    specs[1].env = {"XLA_FLAGS": flags}
    stats = harness.measure_isolated(specs, repeats=3, min_repeat_s=0.0, log=lambda *_: None)
    assert set(stats) == {"jaxmlp-manual", "jax-optax"}
    pids = {s["pid"] for s in stats.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert stats["jax-optax"]["xla_flags"] == flags and flags not in stats["jaxmlp-manual"]["xla_flags"]
    for s in stats.values():
        assert s["process"] == "own" and s["threads"]["cpus_allowed"] >= 1
        assert len(s["us_repeats"]) == s["repeats"] == 3 and s["us_per_step"] == np.median(s["us_repeats"])
        assert s["us_min"] == min(s["us_repeats"]) > 0 and s["compile_s"] > 0 and s["temp_bytes"] is not None
        assert len(s["loadavg"]["before"]) == len(s["loadavg"]["after"]) == 3


def test_wide_dots_b3_materialized_equals_backward(x64):
    """The step variant timed by ``benchmarks.wide_dots`` computes jaxmlp.backward's gradient (float64)."""
    import jax.numpy as jnp

    import jaxmlp
    from benchmarks.systems import Config, data
    from benchmarks.wide_dots import b3_materialized_grads

    cfg = Config("t", (5, 7, 6, 3), 8, "ce", "float64")
    params = jaxmlp.init_mlp(jax.random.key(0), cfg.sizes, dtype=jnp.float64)
    x, y = data(cfg, cfg.batch)
    got = b3_materialized_grads(params, x, y, "ce")
    want = jaxmlp.backward(params, x, y, activation="relu", loss="ce")[1]
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


def test_documented_peaks_give_mfu():
    """MFU from numbers worked out by hand: MNIST [784, 512, 512, 10] at B = 256 is Σ n_in n_out = 668 672
    MACs per example, 6 · 256 · 668 672 = 1 027 080 192 FLOPs per step; at 1 ms per step that is 1 027.08
    GFLOP/s, against H200's documented 989 TFLOP/s bf16 and 67 TFLOP/s fp32."""
    cfg = suite.MNIST
    assert (cfg.sizes, cfg.batch) == ((784, 512, 512, 10), 256)
    stats = dict(us_per_step=1000.0, us_min=900.0, us_max=1100.0)
    row = suite._row(stats, "x", cfg, 1, {"float32": 2000.0}, suite.DOCUMENTED_PEAKS_TFLOPS["H200"])
    assert row["gflops"] == pytest.approx(1027.080192, rel=1e-12)
    assert row["peak_fraction"] == pytest.approx(1027.080192 / 2000.0, rel=1e-12)
    assert row["mfu_bf16"] == pytest.approx(1027.080192 / 989e3, rel=1e-12)
    assert row["mfu_fp32"] == pytest.approx(1027.080192 / 67e3, rel=1e-12)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_folded_ensemble_gradients_equal_vmapped_backward(x64, loss):
    """The experimental folded step must compute what it is compared with: K models' gradients as
    ``vmap(jaxmlp.backward)`` gives them (float64, relative 1e-12), in its own weight layout."""
    import jax.numpy as jnp
    import numpy as np

    import jaxmlp
    from benchmarks.experimental import folded_init, folded_loss_and_grads
    from benchmarks.systems import Config, data

    cfg = Config("t", (5, 7, 6, 3 if loss == "ce" else 1), 8, loss, "float64")
    K = 3
    Ws, bs = folded_init(cfg, K)
    x, y = data(cfg, cfg.batch)
    per_model, (dWs, dbs) = folded_loss_and_grads(Ws, bs, x, y, loss)
    params = jax.vmap(lambda k: jaxmlp.init_mlp(k, cfg.sizes, dtype=jnp.float64))(jax.random.split(jax.random.key(0), K))
    ref_loss, ref = jax.vmap(lambda p: jaxmlp.backward(p, x, y, activation="relu", loss=loss))(params)
    np.testing.assert_allclose(per_model, ref_loss, rtol=1e-12)
    for l, layer in enumerate(ref):
        dW = jnp.transpose(dWs[l], (1, 2, 0) if l == 0 else (0, 2, 1))  # back to (K, n_out, n_in)
        np.testing.assert_allclose(dW, layer.W, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(dbs[l], layer.b, rtol=1e-12, atol=1e-15)


def test_first_result_summary_medians_ratios_and_targets():
    """The 'time to first result' section's arithmetic, on made-up samples (its timings run in fresh
    processes: python -m benchmarks --first-result-only)."""
    from benchmarks import first_result

    fit = lambda s: {"fit_s": s, "init_and_fit_s": s + 1, "test_accuracy": 0.97, "fit_programs": 2,
                     "fit_cache_hits": 0, "fit_compile_s": s / 2}
    samples = {"sklearn": [{"fit_s": s, "test_accuracy": 0.97, "epochs": 40} for s in (0.5, 0.4, 0.9)],
               "fit_cold": [fit(s) for s in (1.0, 3.0, 1.4)], "fit_warm": [fit(s) for s in (0.3, 0.1, 0.2)],
               "train_cold": [{"wall_s": s} for s in (6.0, 4.0, 5.0)], "train_warm": [{"wall_s": s} for s in (2, 9, 3)]}
    result = first_result.summarize(samples, 3)
    assert result["medians"]["sklearn"]["fit_s"] == 0.5 and result["medians"]["fit_cold"]["fit_s"] == 1.4
    assert result["ratios"] == {"fit_warm / sklearn": pytest.approx(0.4), "fit_cold / sklearn": pytest.approx(2.8)}
    assert result["targets_met"] == {"fit warm <= 0.7 s": True, "train warm <= 3 s": True, "train cold <= 5 s": True}
    samples["train_warm"][2]["wall_s"] = 3.5
    samples["fit_warm"] = [fit(s) for s in (0.8, 0.1, 0.9)]  # median 0.8 s
    assert first_result.summarize(samples, 3)["targets_met"] == {
        "fit warm <= 0.7 s": False, "train warm <= 3 s": False, "train cold <= 5 s": True}
    text = first_result.table(result)
    assert "jaxmlp fit call, warm cache" in text and "0.40" in text and "NOT met" not in text


def test_compile_budget_measures_fits_own_program():
    """The compile budget's program is the one fit compiles: run once, it gives fit's parameters and history,
    bit for bit (the budget stops fit at train._compiled_epochs and compiles what it was about to run)."""
    import jaxmlp
    from benchmarks import compile_budget
    from jaxmlp import datasets, optim

    x, y, _, _ = (np.asarray(a) for a in datasets.load("digits", seed=0))
    fn, args = compile_budget.fit_program(x, y)
    carry, metrics, _ = jax.jit(fn)(*args)
    params = carry.params
    want, history = jaxmlp.fit(jaxmlp.init_mlp(jax.random.key(0), compile_budget.SIZES), x, y,
                               optimizer=optim.adam(compile_budget.LR), key=jax.random.key(1), **compile_budget.JOB)
    for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(metrics["loss"], history["loss"])


def test_compile_budget_ablation_takes_the_shuffle_out():
    """'identity shuffle' traces fit's program with shuffle.permutation replaced (fewer fusion kernels), and
    puts the real one back."""
    from benchmarks import compile_budget
    from jaxmlp import datasets, shuffle

    x, y, _, _ = (np.asarray(a) for a in datasets.load("digits", seed=0))
    permutation = shuffle.permutation
    full, ablated = (compile_budget.measure(v, x, y) for v in ("fit", "identity shuffle"))
    assert shuffle.permutation is permutation
    assert ablated["fusions"] < full["fusions"] and full["compile_s"] > 0 and full["run_s"] > 0
