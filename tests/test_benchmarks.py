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


# ---- the user step (benchmarks/user_step.py) ------------------------------------------------------------------


@pytest.mark.parametrize("sizes, loss", [((5, 16, 8, 1), "mse"), ((12, 16, 16, 10), "ce")])
def test_user_step_manual_and_autodiff_take_the_same_step(sizes, loss):
    """The two steps the section times differ only in the gradient: from the same parameters and Adam state,
    one step of each gives the same parameters to float32 rounding (and both moved them)."""
    from benchmarks import user_step
    from benchmarks.systems import Config

    cfg = Config("t", sizes, 8, loss)
    params, opt, x, y = user_step.problem(cfg)
    after = {g: jax.jit(user_step.make_step(cfg, g, opt))(params, opt.init(params), x, y)[0]
             for g in ("manual", "autodiff")}
    for a, b, p0 in zip(jax.tree.leaves(after["manual"]), jax.tree.leaves(after["autodiff"]), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert np.max(np.abs(np.asarray(a) - np.asarray(p0))) > 0.5e-3  # Adam's first step: about lr per coordinate


def _check_user_step_entry(e):
    for k in ("manual_us", "autodiff_us", "ratio", "ratio_min", "temp_ratio"):
        assert math.isfinite(e[k]) and e[k] > 0, (k, e)
    assert e["ratio"] == pytest.approx(e["manual_us"] / e["autodiff_us"], rel=1e-12)
    c = e["copies"]
    assert set(c) == {"A1", "A2", "B1", "B2"} and {v["grad"] for v in c.values()} == {"manual", "autodiff"}
    for v in c.values():
        assert len(v["us_repeats"]) == e["repeats"] and v["us_per_step"] == np.median(v["us_repeats"])
        assert v["compile_s"] > 0 and v["temp_bytes"] > 0
    pooled = lambda k: c[k + "1"]["us_repeats"] + c[k + "2"]["us_repeats"]
    assert e["manual_us"] == np.median(pooled("A")) and e["autodiff_us"] == np.median(pooled("B"))
    assert e["aa_band"]["manual"] == pytest.approx(abs(c["A1"]["us_per_step"] / c["A2"]["us_per_step"] - 1))
    assert e["aa_band"]["autodiff"] == pytest.approx(abs(c["B1"]["us_per_step"] / c["B2"]["us_per_step"] - 1))
    assert all(b >= 0 for b in e["aa_band"].values())
    assert e["temp_ratio"] == pytest.approx(c["A1"]["temp_bytes"] / c["B1"]["temp_bytes"])
    assert e["verdict"] in ("within the A/A band", "manual faster", "manual slower")


def test_user_step_section_in_results(result):
    """``python -m benchmarks`` writes the user-step section into results.json: per config the ratio of
    medians, the run's A/A band and the temp-memory ratio, from four compiled copies."""
    out, _ = result
    section = json.loads((out / "results.json").read_text())["user_step"]
    assert {e["loss"] for e in section["configs"]} == {"mse", "ce"}
    for e in section["configs"]:
        _check_user_step_entry(e)


def test_user_step_only_command(tmp_path, monkeypatch):
    """``python -m benchmarks --user-step-only --repeats 3 --out DIR`` (its configs cut to a tiny one) writes
    user_step.json and nothing else."""
    from benchmarks import __main__ as cli
    from benchmarks import user_step
    from benchmarks.systems import Config

    monkeypatch.setattr(user_step, "CONFIGS", (Config("seed", (5, 16, 8, 1), 8, "mse"),))
    assert cli.main(["--user-step-only", "--quick", "--repeats", "3", "--out", str(tmp_path)]) == 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ["user_step.json"]
    res = json.loads((tmp_path / "user_step.json").read_text())
    (entry,) = res["user_step"]["configs"]
    assert entry["repeats"] == 3 and len(res["loadavg"]["start"]) == 3
    _check_user_step_entry(entry)


# ---- the peers (benchmarks/peers.py): each builder's step trains ---------------------------------------------


PEER_CFGS = {"mse": ((5, 16, 8, 1), "mse"), "ce": ((6, 16, 16, 3), "ce")}


def _trains(bench, steps=10):
    before = bench.probe()
    for _ in range(steps):
        bench.sync(bench.call())
    after = bench.probe()
    assert math.isfinite(before) and after < before, (bench.system, before, after)


@pytest.mark.parametrize("loss", list(PEER_CFGS))
@pytest.mark.parametrize("builder, module", [("equinox_step", "equinox"), ("equinox_jit_step", "equinox"),
                                             ("flax_nnx_step", "flax"), ("torch_eager_step", "torch")])
def test_peer_step_trains(builder, module, loss):
    """Each peer's timed call is a real training step: its loss on the batch falls over ten calls."""
    pytest.importorskip(module)
    from benchmarks import peers
    from benchmarks.systems import Config

    sizes, loss = PEER_CFGS[loss]
    with jax.numpy_rank_promotion("allow"):
        bench = getattr(peers, builder)(Config("t", sizes, 8, loss))
        assert bench is not None and bench.steps == 1
        _trains(bench)


def test_equinox_builds_eqx_mlp_where_it_can():
    """``eqx.nn.MLP`` needs equal hidden widths; other configs get the same layers as ``eqx.nn.Sequential``."""
    eqx = pytest.importorskip("equinox")
    from benchmarks import peers, systems

    assert isinstance(peers.equinox_model(systems.MNIST, jax.random.key(0)), eqx.nn.MLP)
    assert isinstance(peers.equinox_model(systems.SEED, jax.random.key(0)), eqx.nn.Sequential)


def test_torch_compile_step_trains():
    """``torch.compile``'s step (Inductor's C++ backend: needs a C++ compiler) trains; compiling takes 15-60 s."""
    pytest.importorskip("torch")
    import shutil

    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler")
    from benchmarks import peers
    from benchmarks.systems import Config

    bench = peers.torch_compile_step(Config("t", (6, 8, 8, 3), 4, "ce"))
    assert bench.compile_s >= 0
    _trains(bench)


def test_torch_func_ensemble_trains():
    pytest.importorskip("torch")
    from benchmarks import peers
    from benchmarks.systems import Config

    bench = peers.torch_func_ensemble(Config("t", (6, 8, 8, 3), 4, "ce"), K=3)
    assert bench.steps == 3
    _trains(bench)


def test_sklearn_digits_trains():
    """scikit-learn's MLPClassifier on the digits job, as the suite's ``sklearn-mlp`` row runs it (2 epochs)."""
    pytest.importorskip("sklearn")
    from benchmarks import peers

    bench = peers.sklearn_digits(epochs=2)
    clf = bench.call()
    assert bench.steps == 2 * 23 and clf.n_iter_ == 2 and clf.hidden_layer_sizes == (64, 32)
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


# ---- the GPU run (benchmarks/gpu_run.sh), on the CPU at tiny sizes ---------------------------------------------


def _positive_finite_numbers(obj, path="$"):
    """Every number in ``obj`` (bools, and the load averages' and counts' zeros aside) is finite and > 0."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        assert math.isfinite(obj) and obj > 0, path
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("loadavg", "aa_band"):  # a load or an A/A difference may be 0
                _positive_finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _positive_finite_numbers(v, f"{path}[{i}]")


def test_gpu_run_script_tiny_on_cpu(tmp_path):
    """``bash benchmarks/gpu_run.sh --tiny --device cpu``: the GPU run's every step (the suite's GPU plan, fit
    against the loop, the ensembles, check_gradients, MFU) at tiny sizes, in a subprocess."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_run.sh"), "--tiny", "--device", "cpu",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env, cwd=root, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((tmp_path / "gpu_run.json").read_text())
    assert set(summary) >= {"device", "peaks", "fit_vs_loop", "ensembles", "user_step", "gradcheck", "mfu", "files"}
    assert summary["tiny"] is True and summary["device"]["dirname"] == "cpu"
    assert summary["peaks"]["source"].startswith("no documented peak")
    for f in summary["files"]:
        assert (tmp_path / f).is_file(), f
    assert summary["gradcheck"]["ok"] is True and summary["gradcheck"]["sizes"] == [8, 6, 3]
    assert summary["fit_vs_loop"] and summary["ensembles"] and summary["user_step"]
    assert {r["dtype"] for r in summary["mfu"]} == {"float32", "bfloat16"}
    for r in summary["mfu"]:
        assert r["mfu_bf16"] == pytest.approx(r["gflops"] / (summary["peaks"]["bf16"] * 1e3))
    _positive_finite_numbers({k: summary[k] for k in ("peaks", "fit_vs_loop", "ensembles", "user_step", "mfu")})
    _positive_finite_numbers({k: summary["gradcheck"][k] for k in ("first_call_s", "parameters", "peak_rss_mb")})
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["plan"]["ensembles"] and results["user_step"]["configs"]


def test_gpu_run_device_names_and_peaks():
    """The output folder's name, and MFU's peaks: the datasheet's for the H100/H200 kinds, one table for all."""
    from benchmarks import gpu_run, suite, systems

    assert gpu_run.device_dirname("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_run.device_dirname("NVIDIA H200") == "nvidia-h200"
    assert suite.DOCUMENTED_PEAKS_TFLOPS is systems.DOCUMENTED_PEAKS_TFLOPS
    h100 = gpu_run.peaks("NVIDIA H100 80GB HBM3", {"float32": 1.0})
    assert (h100["bf16"], h100["tf32"], h100["fp32"]) == (989.0, 494.0, 67.0)
    assert gpu_run.peaks("NVIDIA H100 PCIe", {})["bf16"] == 756.0
    cpu = gpu_run.peaks("cpu", {"float32": 400.0, "bfloat16": 100.0})
    assert (cpu["bf16"], cpu["fp32"]) == (0.1, 0.4)


def test_no_import_cycle_in_benchmarks():
    """Imports among benchmarks/ modules (at the top or inside functions) run one way: no cycle."""
    import ast

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    graph = {}
    for path in folder.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "benchmarks":
                    deps |= {a.name for a in node.names}
                elif node.module.startswith("benchmarks."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")}
        graph[path.stem] = deps - {path.stem}
    state = {}

    def visit(m, stack):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(stack + [m])
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            visit(d, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
    assert "suite" not in graph["experimental"] and "systems" in graph["experimental"]
