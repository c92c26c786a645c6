# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Appendix: benchmarks of the library (what the hand-written backward costs)
#
# **This notebook is about jaxmlp the library, not about the lesson.** Notebooks 1–4 teach the perceptron,
# backpropagation, initialization and the optimizers; nothing here is needed to follow them. It reads the
# timings that `python -m benchmarks` saved and runs nothing itself.
#
# The hand-written backward of `jaxmlp.backward`, (B1)–(B4) of notebook 2
# ($\delta[L] = \partial L/\partial a[L] \odot \sigma_L'(z[L])$, $\delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l])$,
# $\partial L/\partial W[l] = \delta[l]\, a[l-1]^\top$, $\partial L/\partial b[l] = \delta[l]$), and `jax.grad(loss_fn)`
# compute the same numbers; here we ask which one XLA runs faster. A training step is one forward and one
# backward pass on a minibatch, $(L, g) = \text{backward}(\theta, X_b, Y_b)$, then one Adam update,
# $(u, s) = \text{update}(g, s, \theta)$, $\theta \leftarrow \theta + u$ ((T1)–(T2) of `jaxmlp.train`), jitted.
# The systems compared:
#
# - `jaxmlp-manual`: `jaxmlp.backward` + `jaxmlp.optim.adam`;
# - `jaxmlp-autodiff`: the same step with `jax.value_and_grad(jaxmlp.loss_fn)`;
# - `jax-optax`: plain JAX + optax, the reference;
# - `jaxmlp-fit`: whole epochs of `jaxmlp.fit` in one compiled program, per step (`jaxmlp-fit-minibatch`:
#   with `metrics="minibatch"`, no per-epoch evaluation of the whole training set);
# - and, when installed, peer libraries (Equinox, Flax, PyTorch) and ensembles of K models.
#
# The benchmark suite is a script, not a test: it warms up, times with `block_until_ready`, reports
# compile time apart from step time, and writes a `results.json` per run:
#
# ```
# python -m benchmarks --quick --out benchmarks/results/<machine>
# ```
#
# Each row has `system`, `config` (the network and loss), `batch`, `K` (models trained at once),
# `us_per_step` (median µs per step) with `us_min` and `us_max` over the repeats, `gflops` and
# `peak_fraction` (of a square matmul's GFLOP/s in the same run), `compile_s` and `temp_bytes` (XLA's
# scratch memory). This notebook reads every `benchmarks/results/**/*.json` that holds such rows (or
# the file or folder named by the environment variable `JAXMLP_BENCHMARK_RESULTS`); it runs nothing.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

import jaxmlp


def results_dirs():
    """Where to look: $JAXMLP_BENCHMARK_RESULTS, else benchmarks/results above the cwd or above jaxmlp."""
    if os.environ.get("JAXMLP_BENCHMARK_RESULTS"):
        return [Path(os.environ["JAXMLP_BENCHMARK_RESULTS"])]
    found = []
    for start in [Path.cwd().resolve(), Path(jaxmlp.__file__).resolve().parent]:
        for d in [start, *start.parents]:
            if (d / "benchmarks" / "results").is_dir() and d / "benchmarks" / "results" not in found:
                found.append(d / "benchmarks" / "results")
    return found


def rows_of(data):
    """The benchmark rows of a parsed JSON file (``data["rows"]``), skipping files of another kind."""
    rows = data.get("rows", []) if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict) and {"system", "us_per_step"} <= r.keys()]


# Each file is named by its path from the results folder's parent, e.g. "results/latest-cpu/results.json".
files = {}
for d in results_dirs():
    for f in sorted([d] if d.is_file() else d.rglob("*.json")):
        files.setdefault(str(f.relative_to(d.parent)), f)
runs = {}
for name, f in files.items():
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        print(f"skipped {name}: {e}")
        continue
    if rows := rows_of(data):
        runs[name] = (data if isinstance(data, dict) else {}, rows)
print(f"benchmark runs found: {len(runs)}")
for name, (data, rows) in runs.items():
    m = data.get("machine", {})
    print(f"  {name}: {len(rows)} rows; {m.get('device_kind', '?')} ({m.get('device_platform', '?')}), "
          f"{m.get('cpu_count', '?')} CPUs; jax {data.get('versions', {}).get('jax', '?')}")

if not runs:
    print("\nNo benchmark results were found (looked for benchmarks/results/**/*.json"
          + (f" in {', '.join(map(str, results_dirs()))}" if results_dirs() else "") + ").\n"
          "Produce them with\n\n    python -m benchmarks --quick --out benchmarks/results/<machine>\n\n"
          "then rerun this notebook.")

# %% [markdown]
# ## The rows, as tables
#
# Ensembles (K > 1) report µs per *model*-step: one step of each of the K models, divided by K.

# %%

def fmt(value, spec):
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


columns = [("system", "", 20), ("config", "", 14), ("batch", "d", 6), ("K", "d", 4), ("us_per_step", ".1f", 12),
           ("us_min", ".1f", 10), ("us_max", ".1f", 10), ("gflops", ".2f", 8), ("peak_fraction", ".3f", 13),
           ("compile_s", ".2f", 9), ("temp_bytes", "d", 11)]
for name, (_, rows) in runs.items():
    print(f"== {name}")
    print(" ".join(f"{c:>{w}}" for c, _, w in columns))
    for r in sorted(rows, key=lambda r: (r.get("K", 1), r["config"], r.get("batch", 0), r["system"])):
        print(" ".join(f"{fmt(r.get(c), spec):>{w}}" for c, spec, w in columns))
    print()

# %% [markdown]
# ## Step time per system and configuration
#
# Single models (K = 1): the median time per training step of every system, one panel per configuration
# (its layer sizes and loss in the title), a group of bars per batch size, on a log scale; the error bars
# span the fastest to the slowest repeat.

# %%
def single_models(rows):
    return [r for r in rows if r.get("K", 1) == 1]


for name, (_, rows) in runs.items():
    single = single_models(rows)
    configs = sorted({r["config"] for r in single})
    systems = sorted({r["system"] for r in single})
    if not configs:
        continue
    by_key = {(r["config"], r["batch"], r["system"]): r for r in single}
    sizes = {r["config"]: f"{r.get('sizes', '')} {r.get('loss', '')}".strip() for r in single}
    colors = {system: f"C{i % 10}" for i, system in enumerate(systems)}
    # One panel per configuration, stacked, each as wide as the page: batches side by side, a bar per system.
    fig, axes = plt.subplots(len(configs), 1, figsize=(11, 2.9 * len(configs) + 0.6), squeeze=False)
    for ax, config in zip(axes[:, 0], configs):
        batches = sorted({r["batch"] for r in single if r["config"] == config})
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            xs, t, lo, hi = [], [], [], []
            for j, batch in enumerate(batches):
                if (r := by_key.get((config, batch, system))) is not None:
                    xs.append(j + i * width)
                    t.append(r["us_per_step"])
                    lo.append(r["us_per_step"] - r.get("us_min", r["us_per_step"]))
                    hi.append(r.get("us_max", r["us_per_step"]) - r["us_per_step"])
            ax.bar(xs, t, width, yerr=[lo, hi], capsize=2, color=colors[system], label=system)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
        shortest = min(r["us_min"] if "us_min" in r else r["us_per_step"] for r in single if r["config"] == config)
        ax.set(yscale="log", ylabel="µs per step (median)", title=f"{config} {sizes[config]}".strip(),
               xlim=(-0.1 - width / 2, len(batches) - 0.1 - width / 2), ylim=(shortest / 2, None))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=min(4, len(systems)), loc="lower center")
    fig.suptitle(f"{name}: time per training step, one panel per configuration")
    legend_rows = 1 + (len(systems) - 1) // 4
    fig.tight_layout(rect=(0, (0.15 + 0.22 * legend_rows) / fig.get_figheight(), 1, 1))  # room for the legend
    plt.show()

# %% [markdown]
# ## Manual against autodiff
#
# The ratio of median step times at equal configuration and batch: `jaxmlp-manual` over
# `jaxmlp-autodiff` (the same step, with autodiff's gradient), and over `jax-optax` (plain JAX and
# optax). Below 1, the hand-written backward is faster. Both backwards are compiled by XLA from the
# same operations, so ratios near 1 are what to expect: the manual backward is there to be read
# and checked, not to be fast. Timings of a few µs on a busy CPU are noisy; compare the larger batches.

# %%
MANUAL, REFERENCES = "jaxmlp-manual", ("jaxmlp-autodiff", "jax-optax")
for name, (_, rows) in runs.items():
    times = {(r["system"], r["config"], r["batch"]): r["us_per_step"] for r in single_models(rows)}
    keys = sorted((c, b) for s, c, b in times if s == MANUAL)
    pairs = [(ref, [(c, b) for c, b in keys if (ref, c, b) in times]) for ref in REFERENCES]
    pairs = [(ref, ks) for ref, ks in pairs if ks]
    if not pairs:
        print(f"{name}: no {MANUAL} rows with a {' or '.join(REFERENCES)} row to compare")
        continue
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys)), 4))
    width = 0.8 / len(pairs)
    for i, (ref, ks) in enumerate(pairs):
        ratio = [times[(MANUAL, c, b)] / times[(ref, c, b)] for c, b in ks]
        ax.bar([keys.index(k) + i * width for k in ks], ratio, width, label=f"{MANUAL} / {ref}")
        print(f"{name}: {MANUAL} / {ref}: " + ", ".join(f"{c} B={b}: {q:.2f}" for (c, b), q in zip(ks, ratio)))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], [f"{c}\nB={b}" for c, b in keys], fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(ylabel="step-time ratio", title=f"{name}: below 1, the hand-written backward is faster")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
