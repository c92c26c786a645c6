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
# # Appendix: a tour of the jaxmlp library
#
# **This notebook is not part of the lesson.** Notebooks 1–4 teach the perceptron, backpropagation,
# initialization and the optimizers with plain `jax.numpy` code (`mlp_by_hand.py` and the optimizers of
# notebook 4); nothing here is needed to follow them. This appendix shows what the library `jaxmlp` adds
# around the same mathematics, and checks it against the plain code:
#
# 1. `jaxmlp.backward`, the library's hand-derived backward pass, against notebook 2's `mlp_by_hand.backward`
#    and `jax.grad`;
# 2. `jaxmlp.check_gradients` on a model of your own (any pytree of parameters, your own backward);
# 3. `jaxmlp.optim.adam` against `optax.adam`, step by step;
# 4. `jaxmlp.fit` and `jaxmlp.fit_ensemble`, the compiled training loops;
# 5. per-example gradients, `jaxmlp.per_example_grads`;
# 6. the benchmarks of the training step, read from `benchmarks/results/`;
# 7. second order: `jaxmlp.hvp`, a Hessian-vector product written by hand, checked with `jaxmlp.check_hvp`,
#    and why a Gauss-Newton product fails that check.

# %%
import json
import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import mlp_by_hand as mh
import numpy as np

import jaxmlp
from jaxmlp import datasets, optim, optim_check

FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
key = jax.random.key(0)

# %% [markdown]
# ## 1. `jaxmlp.backward` against the plain code and `jax.grad`
#
# `jaxmlp.init_mlp` returns a tuple of `Layer(W, b)` named tuples, with `W` of shape $(n_\text{out},
# n_\text{in})$ as in `mlp_by_hand`, so the same parameters go to both. `jaxmlp.backward(params, x, y,
# activation=..., loss=...)` returns `(loss, grads)`; the output activation follows from the loss (identity
# for `mse`, sigmoid for `bce`, softmax for `ce`), as in `mlp_by_hand`. We compare the three gradients in
# float64 (`jax.enable_x64`), where agreement should be to about $10^{-15}$ relative.

# %%
def max_rel_diff(a, b):
    """Largest |a - b| over all leaves, relative to the largest |b|."""
    diff = max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return diff / max(float(jnp.abs(y).max()) for y in jax.tree.leaves(b))


library_backward = jax.jit(jaxmlp.backward, static_argnames=("activation", "loss"))
plain_backward = jax.jit(mh.backward, static_argnums=(3, 4))
autodiff_backward = jax.jit(jax.grad(mh.loss_value), static_argnums=(3, 4))
with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (64, 5), jnp.float64)
    targets = {"mse": jax.random.normal(jax.random.key(2), (64, 3), jnp.float64),
               "bce": (jax.random.uniform(jax.random.key(3), (64, 3)) < 0.5).astype(jnp.float64),
               "ce": jax.nn.one_hot(jax.random.randint(jax.random.key(4), (64,), 0, 3), 3, dtype=jnp.float64)}
    params = jaxmlp.init_mlp(key, [5, 16, 8, 3], dtype=jnp.float64)
    worst = 0.0
    for act, loss in [("tanh", "mse"), ("relu", "bce"), ("sigmoid", "ce")]:
        y = targets[loss]
        value, grads = library_backward(params, x, y, activation=act, loss=loss)
        plain = plain_backward(list(params), x, y, act, loss)
        autodiff = autodiff_backward(list(params), x, y, act, loss)
        rel = max_rel_diff(grads, plain), max_rel_diff(grads, autodiff)
        loss_gap = abs(float(value) - float(mh.loss_value(list(params), x, y, act, loss)))
        worst = max(worst, *rel, loss_gap)
        print(f"{act:>7} + {loss}: jaxmlp vs mlp_by_hand {rel[0]:.1e}, jaxmlp vs jax.grad {rel[1]:.1e}, "
              f"loss difference {loss_gap:.1e}")
assert worst < 1e-12

# %% [markdown]
# ## 2. `jaxmlp.check_gradients` on a model of your own
#
# The checker takes any pytree of parameters, a `loss_fn(params, *args)` (the reference) and a
# `backward_fn(params, *args) -> (loss, grads)` (what is checked). It compares every gradient entry with
# `jax.grad` and with central finite differences, in float64, and prints one row per leaf. Here the model
# is a one-hidden-layer tanh regression whose parameters are a dict, with its backward written by hand from
# the chain rule (the same steps as notebook 2), on the diabetes data.

# %%
xd, yd, _, _ = datasets.load("diabetes")  # 10 inputs, a standardized target of shape (N, 1)
xd, yd = xd[:128], yd[:128]


def user_loss(p, x, y):
    a1 = jnp.tanh(x @ p["W1"].T + p["b1"][None, :])
    return jnp.mean((a1 @ p["W2"].T + p["b2"][None, :] - y) ** 2)


def user_backward(p, x, y):
    a1 = jnp.tanh(x @ p["W1"].T + p["b1"][None, :])
    out = a1 @ p["W2"].T + p["b2"][None, :]
    d2 = 2 * (out - y) / y.size                  # ∂L/∂z2
    d1 = (d2 @ p["W2"]) * (1 - a1 ** 2)          # ∂L/∂z1 = (δ2 W2) ⊙ tanh'(z1)
    grads = {"W1": d1.T @ x, "b1": d1.sum(0), "W2": d2.T @ a1, "b2": d2.sum(0)}
    return jnp.mean((out - y) ** 2), grads


k1, k2 = jax.random.split(jax.random.key(5))
user_params = {"W1": 0.3 * jax.random.normal(k1, (16, 10)), "b1": jnp.zeros(16),
               "W2": 0.3 * jax.random.normal(k2, (1, 16)), "b2": jnp.zeros(1)}
report = jaxmlp.check_gradients(user_params, xd, yd, backward_fn=user_backward, loss_fn=user_loss)
print(report)
assert report.ok

# %% [markdown]
# A classic bug: forgetting the factor $\tanh'(z_1) = 1 - a_1^2$ in the hidden δ. The checker fails the two
# leaves that depend on it and says how:

# %%
def buggy_backward(p, x, y):
    value, grads = user_backward(p, x, y)
    a1 = jnp.tanh(x @ p["W1"].T + p["b1"][None, :])
    d1 = (2 * (a1 @ p["W2"].T + p["b2"][None, :] - y) / y.size) @ p["W2"]  # no ⊙ tanh'(z1)
    return value, {**grads, "W1": d1.T @ x, "b1": d1.sum(0)}


bad = jaxmlp.check_gradients(user_params, xd, yd, backward_fn=buggy_backward, loss_fn=user_loss)
print("ok:", bad.ok)
for failure in bad.failures:
    print(" -", failure.split(";")[0])  # the first of the reasons it gives
assert not bad.ok and [row.path for row in bad.rows if not row.ok] == ["['W1']", "['b1']"]

# %% [markdown]
# ## 3. `jaxmlp.optim.adam` against `optax.adam`, step by step
#
# Notebook 4 wrote Adam in a few lines and found it equal to `optax.adam` to float32 rounding.
# `jaxmlp.optim.adam` follows optax's order of floating-point operations, so it agrees to the last bit.
# `optim_check.adam_trace` feeds both the same sequence of gradients (here 200 random ones shaped like an
# MLP's parameters) and reports, after each step, the largest difference in the parameters and in the
# bias-corrected moments $\hat m$, $\hat s$.

# %%
params0 = jaxmlp.init_mlp(key, [64, 64, 32, 10])
rng = np.random.default_rng(0)
grads_sequence = jax.tree.map(lambda leaf: jnp.asarray(0.1 * rng.standard_normal((200,) + leaf.shape), leaf.dtype),
                              params0)
trace = optim_check.adam_trace(params0, grads_sequence, learning_rate=1e-2)
print(trace)
assert trace.max_param_diff == 0.0 and float(np.max(trace.m_hat_diff)) == 0.0 and float(np.max(trace.v_hat_diff)) == 0.0

# %% [markdown]
# ## 4. `jaxmlp.fit` and `jaxmlp.fit_ensemble`
#
# `jaxmlp.fit` runs whole epochs (shuffle, minibatch steps of `jaxmlp.backward` and the optimizer, the
# per-epoch metrics) as one compiled program, and takes jaxmlp's or optax's optimizers. `fit_ensemble`
# trains K models at once in one program, each with its own hyperparameters: here six copies of the digits
# network of notebook 4, each with its own Adam learning rate.

# %%
x_tr, y_tr, x_te, y_te = datasets.load("digits")  # jaxmlp's "ce" takes the integer labels directly
sizes = [64, 64, 32, 10]
trained, history = jaxmlp.fit(jaxmlp.init_mlp(key, sizes), x_tr, y_tr, optimizer=optim.adam(1e-3), loss="ce",
                              activation="relu", epochs=20, batch_size=64, key=jax.random.key(1))
test = jaxmlp.evaluate(trained, x_te, y_te, loss="ce", activation="relu")
print(f"fit, Adam 1e-3, 20 epochs: training loss {history['loss'][-1]:.4f}, "
      f"test accuracy {float(test['accuracy']):.1%}")

learning_rates = jnp.array([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1])
stack = jax.vmap(lambda k: jaxmlp.init_mlp(k, sizes))(jax.random.split(key, len(learning_rates)))
ensemble, ensemble_history = jaxmlp.fit_ensemble(stack, x_tr, y_tr, learning_rates=learning_rates, loss="ce",
                                                 activation="relu", epochs=20, batch_size=64, key=jax.random.key(1))
ensemble_test = jaxmlp.evaluate_ensemble(ensemble, x_te, y_te, loss="ce", activation="relu")
final = np.asarray(ensemble_history["loss"][-1])
for lr, loss_value, acc in zip(learning_rates, final, np.asarray(ensemble_test["accuracy"])):
    print(f"  Adam η = {float(lr):<6g}: training loss {loss_value:.4f}, test accuracy {acc:.1%}")
best_lr = float(learning_rates[int(np.argmin(final))])
print(f"lowest training loss at η = {best_lr:g}")
assert best_lr == float(jnp.float32(1e-2)) and float(test["accuracy"]) > 0.9

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(learning_rates, final, "o-")
ax.set(xscale="log", yscale="log", xlabel="Adam's η", ylabel="training loss after 20 epochs",
       title="fit_ensemble: six learning rates, one program")
fig.tight_layout()
fig.savefig(FIGURES / "05_fit_ensemble.png", dpi=110)
plt.show()

# %% [markdown]
# The training loss falls as η grows up to η = 1e-2, where it is lowest, and is far higher at η = 0.1: too
# small an η has not got far in 20 epochs, too large a one overshoots.
#
# ## 5. Per-example gradients
#
# The gradient of a minibatch is the mean of its examples' gradients. `jaxmlp.per_example_grads` returns
# all of them at once, from the same backward recursion with a batch axis kept (each example's
# $\partial \ell / \partial W[l]$ is the outer product $\delta[l]\, a[l-1]^\top$ of its own row), with no loop
# over examples. We check them against `jax.vmap` of the plain `mlp_by_hand.backward` on single
# examples, and their mean against `jaxmlp.backward`.

# %%
per_example = jax.jit(jaxmlp.per_example_grads, static_argnames=("activation", "loss"))(
    trained, x_tr, y_tr, activation="relu", loss="ce")
Y_tr = jax.nn.one_hot(y_tr, 10)
plain = jax.jit(jax.vmap(lambda x, y: mh.backward(list(trained), x[None], y[None], "relu", "ce")))(x_tr, Y_tr)
_, batch_grads = library_backward(trained, x_tr, y_tr, activation="relu", loss="ce")
rel_plain = max_rel_diff(per_example, plain)
rel_mean = max_rel_diff(jax.tree.map(lambda g: g.mean(axis=0), per_example), batch_grads)
print(f"per-example grads vs vmap(mlp_by_hand.backward): {rel_plain:.1e}; their mean vs jaxmlp.backward: {rel_mean:.1e}")
assert rel_plain < 1e-5 and rel_mean < 1e-5

norms = np.sqrt(sum(np.asarray(jnp.sum(g.reshape(len(x_tr), -1) ** 2, axis=1)) for g in jax.tree.leaves(per_example)))
z = mh.forward(list(trained), x_tr, "relu", "ce")[0][-1]
example_loss = np.asarray(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y_tr[:, None], axis=1)[:, 0])
wrong = np.asarray(jnp.argmax(z, axis=1) != y_tr)
print(f"{wrong.sum()} of {len(x_tr)} training images misclassified; mean gradient norm: misclassified "
      f"{norms[wrong].mean():.3g}, correct {norms[~wrong].mean():.3g}")
correlation = float(np.corrcoef(np.log(example_loss), np.log(norms))[0, 1])
print(f"correlation of log loss and log gradient norm over the examples: {correlation:.3f}")
assert norms[wrong].mean() > 10 * norms[~wrong].mean() and correlation > 0.9

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.scatter(example_loss[~wrong], norms[~wrong], s=6, alpha=0.5, label="classified correctly")
ax.scatter(example_loss[wrong], norms[wrong], s=20, color="C3", label="misclassified")
ax.set(xscale="log", yscale="log", xlabel="the example's loss ℓ", ylabel="|∂ℓ/∂θ| (all parameters)",
       title="digits, trained by fit: one point per training image")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "05_per_example_gradients.png", dpi=110)
plt.show()

# %% [markdown]
# After training, the gradient is dominated by the few examples the network still gets wrong: their
# per-example gradients are more than ten times larger on average than those of the examples it classifies
# correctly, and an example's gradient norm grows with its loss (the logarithms of the two are correlated at
# more than 0.9). For softmax cross-entropy this is expected: the output δ of an example is $a[L] - y$, whose
# size is small exactly when the predicted probability of the right class is close to 1.
#
# ## 6. Benchmarks of the training step
#
# The hand-written backward and `jax.grad` compute the same numbers; which one XLA runs faster is a
# question for the benchmark suite (`benchmarks/README.md`), a script that warms up, times with
# `block_until_ready`, and writes a `results.json` per run:
#
# ```
# python -m benchmarks --quick --out benchmarks/results/<machine>
# ```
#
# Each row is one system × config × batch: `system` (`jaxmlp-manual`: `jaxmlp.backward` with
# `jaxmlp.optim.adam`; `jaxmlp-autodiff`: the same step with `jax.grad`; `jax-optax`: an independent plain
# JAX MLP with `jax.grad` and `optax.adam`; peers and ensembles), `config` (the network and loss),
# `batch`, `K` (models trained at once), `us_per_step` (the median over repeats, µs) with `us_min` and
# `us_max`. This notebook runs no benchmark: it reads the result files that exist (under
# `benchmarks/results/`, or the file or folder named by `$JAXMLP_BENCHMARK_RESULTS`), lists them, and uses
# the newest one that has the rows it needs (equally new files: the one measured on the least loaded
# machine). Timings move from run to run on a shared machine, so we plot one run and assert only relations
# between systems of that run.

# %%
MANUAL, REFERENCES = "jaxmlp-manual", ("jaxmlp-autodiff", "jax-optax")


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


def peak_load(data):
    """The largest 1-minute load average the run recorded (inf when it recorded none)."""
    loads = (data.get("loadavg") or {}) if isinstance(data, dict) else {}
    values = [v[0] for v in (loads.get("start"), loads.get("end")) if isinstance(v, list) and v]
    return max(values) if values else float("inf")


runs = {}  # name -> (mtime, parsed file, rows); each file named by its path from the results folder's parent
for d in results_dirs():
    for f in sorted([d] if d.is_file() else d.rglob("*.json")):
        name = str(f.relative_to(d.parent))
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            print(f"skipped {name}: {e}")
            continue
        if rows := rows_of(data):
            runs[name] = (f.stat().st_mtime, data if isinstance(data, dict) else {}, rows)
print(f"benchmark runs found: {len(runs)}")
for name, (_, data, rows) in runs.items():
    m = data.get("machine", {})
    print(f"  {name}: {len(rows)} rows; {m.get('device_kind', '?')} ({m.get('device_platform', '?')}), "
          f"{m.get('cpu_count', '?')} CPUs; jax {data.get('versions', {}).get('jax', '?')}")


def single_models(rows):
    return [r for r in rows if r.get("K", 1) == 1]


usable = {name: run for name, run in runs.items()
          if any(r["system"] == MANUAL for r in single_models(run[2]))
          and any(r["system"] in REFERENCES for r in single_models(run[2]))}
chosen = min(usable, key=lambda name: (-round(usable[name][0]), peak_load(usable[name][1]), name)) if usable else None
if chosen is None:
    print(f"\nNo results file has both {MANUAL} rows and {' or '.join(REFERENCES)} rows: the figures below are "
          "skipped. Produce results with\n\n    python -m benchmarks --quick --out benchmarks/results/<machine>\n\n"
          "then rerun this notebook.")
else:
    rows = single_models(usable[chosen][2])
    load = peak_load(usable[chosen][1])
    print(f"\nusing {chosen}" + (f" (1-minute load average at most {load:.1f})" if np.isfinite(load) else ""))
    print(f"{'system':>20} {'config':>8} {'batch':>6} {'µs/step':>9} {'min':>9} {'max':>9}")
    for r in sorted(rows, key=lambda r: (r["config"], r.get("batch", 0), r["system"])):
        if r["system"] in (MANUAL, *REFERENCES):
            print(f"{r['system']:>20} {r['config']:>8} {r.get('batch', 0):>6} {r['us_per_step']:>9.1f} "
                  f"{r.get('us_min', float('nan')):>9.1f} {r.get('us_max', float('nan')):>9.1f}")

# %% [markdown]
# ### Step time per system and configuration
#
# The median time per training step of every single-model system of the chosen run, one panel per
# configuration, a group of bars per batch size, on a log scale; the error bars span the fastest to the
# slowest repeat. Every system does the same work, one Adam step (η = 1e-3) of a ReLU MLP; the legend says how
# each runs it (`benchmarks/README.md` has the full table):
#
# - `jaxmlp-manual`: `jaxmlp.backward` + `jaxmlp.optim.adam`, one jitted step, called from a Python loop;
# - `jaxmlp-autodiff`: the same step with `jax.value_and_grad(jaxmlp.loss_fn)` in place of `jaxmlp.backward`;
# - `jax-optax`: the reference, an independent plain-JAX MLP with `jax.grad` and `optax.adam`;
# - `expert-scan`: what an expert writes in ten lines, a `lax.scan` over epochs of `jax.grad` + `optax.adam`
#   steps (time per step), so no Python call per step;
# - `jaxmlp-fit`: `jaxmlp.fit`, whole epochs compiled into one program, time per step, including fit's
#   evaluation on the whole training set after each epoch; `jaxmlp-fit-minibatch`: the same with
#   `metrics="minibatch"`, no evaluation pass;
# - `equinox`: Equinox's idiom (`eqx.nn.MLP`, `eqx.filter_grad`, `optax.adam`, under `eqx.filter_jit`);
#   `equinox-jit`: the same model under plain `jax.jit`; `flax-nnx`: Flax NNX's idiom (`nnx.Linear`,
#   `nnx.Optimizer`, under `nnx.jit`);
# - `torch-eager`: PyTorch's `nn.Sequential` and `torch.optim.Adam`, eager, at its default number of threads;
#   `torch-eager-1thread`: the same on one thread; `torch-compile`: the same step under `torch.compile`;
#   `sklearn-mlp`: scikit-learn's `MLPClassifier` (digits job only).
#
# A run holds the systems it measured; the figure shows those of the chosen run.
#
# The scanned and compiled-loop systems (`expert-scan`, `jaxmlp-fit*`) do not pay the Python call and dispatch
# per step that the others pay.

# %%
SYSTEMS = {  # what each system of benchmarks/README.md's table runs, for the legend
    "jaxmlp-manual": "jaxmlp.backward + jaxmlp.optim.adam, jitted step",
    "jaxmlp-autodiff": "the same with jax.value_and_grad",
    "jax-optax": "reference: plain JAX, jax.grad + optax.adam",
    "expert-scan": "lax.scan over epochs of jax.grad + optax.adam",
    "jaxmlp-fit": "jaxmlp.fit, epochs compiled, with full-set metrics",
    "jaxmlp-fit-minibatch": "jaxmlp.fit, metrics='minibatch'",
    "equinox": "Equinox idiom, eqx.filter_jit",
    "equinox-jit": "Equinox model, plain jax.jit",
    "flax-nnx": "Flax NNX idiom, nnx.jit",
    "sklearn-mlp": "scikit-learn MLPClassifier",
    "torch-eager": "PyTorch eager, default threads",
    "torch-eager-1thread": "PyTorch eager, 1 thread",
    "torch-compile": "PyTorch, torch.compile",
}

if chosen is not None:
    configs = sorted({r["config"] for r in rows})
    systems = sorted({r["system"] for r in rows})
    by_key = {(r["config"], r["batch"], r["system"]): r for r in rows}
    colors = {system: f"C{i % 10}" for i, system in enumerate(systems)}
    fig, axes = plt.subplots(len(configs), 1, figsize=(15, 2.8 * len(configs) + 0.8), squeeze=False)
    for ax, config in zip(axes[:, 0], configs):
        batches = sorted({r["batch"] for r in rows if r["config"] == config})
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            found = [(j, by_key[config, b, system]) for j, b in enumerate(batches) if (config, b, system) in by_key]
            if not found:
                continue
            t = [r["us_per_step"] for _, r in found]
            lo = [r["us_per_step"] - r.get("us_min", r["us_per_step"]) for _, r in found]
            hi = [r.get("us_max", r["us_per_step"]) - r["us_per_step"] for _, r in found]
            ax.bar([j + i * width for j, _ in found], t, width, yerr=[lo, hi], capsize=2, color=colors[system],
                   label=f"{system}: {SYSTEMS[system]}" if system in SYSTEMS else system)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
        sizes_loss = next((f"{r.get('sizes', '')} {r.get('loss', '')}" for r in rows if r["config"] == config), "")
        shortest = min(r.get("us_min", r["us_per_step"]) for r in rows if r["config"] == config)
        ax.set(yscale="log", ylabel="µs per step", title=f"{config} {sizes_loss}".strip(), ylim=(shortest / 2, None))
    handles = {label: h for ax in axes[:, 0] for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), fontsize=9, loc="center left", bbox_to_anchor=(0.62, 0.5))
    fig.suptitle(f"{chosen}: median time per training step")
    fig.tight_layout(rect=(0, 0, 0.62, 1))
    fig.savefig(FIGURES / "05_benchmark_step_time.png", dpi=100, bbox_inches="tight")
    plt.show()
    print(f"figure: step time per configuration ({chosen})")

# %% [markdown]
# ### Manual against autodiff
#
# The ratio of median step times at equal configuration and batch: `jaxmlp-manual` over `jaxmlp-autodiff`
# (the same step, with autodiff's gradient) and over `jax-optax`. Below 1, the hand-written backward is
# faster. XLA compiles both backwards from the same kinds of operations (the same matrix products), so the
# ratios should stay near 1: the manual backward is there to be read and checked, not to be fast. We assert
# that relation with a wide band, **every ratio between 0.4 and 2.5**, and one more that any run should show
# for these three JAX systems: per example, a larger batch is cheaper (the **µs per example** of each of them
# falls from its smallest batch to its largest), since a small step's time is mostly fixed overhead.

# %%
if chosen is not None:
    times = {(r["system"], r["config"], r["batch"]): r["us_per_step"] for r in rows}
    keys = sorted((c, b) for s, c, b in times if s == MANUAL)
    pairs = [(ref, [(c, b) for c, b in keys if (ref, c, b) in times]) for ref in REFERENCES]
    pairs = [(ref, ks) for ref, ks in pairs if ks]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys)), 4))
    width = 0.8 / len(pairs)
    all_ratios = []
    for i, (ref, ks) in enumerate(pairs):
        ratio = [times[MANUAL, c, b] / times[ref, c, b] for c, b in ks]
        all_ratios += ratio
        ax.bar([keys.index(k) + i * width for k in ks], ratio, width, label=f"{MANUAL} / {ref}")
        print(f"{chosen}: {MANUAL} / {ref}: " + ", ".join(f"{c} B={b}: {q:.2f}" for (c, b), q in zip(ks, ratio)))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], [f"{c}\nB={b}" for c, b in keys], fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(ylabel="step-time ratio")
    ax.set_title(f"{chosen}\nbelow 1, the hand-written backward is faster", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "05_benchmark_ratios.png", dpi=110, bbox_inches="tight")
    plt.show()
    print(f"figure: manual / reference ratios ({chosen})")
    print(f"relation 1: every ratio lies in [{min(all_ratios):.2f}, {max(all_ratios):.2f}], within [0.4, 2.5]")
    assert all(0.4 <= q <= 2.5 for q in all_ratios)

    per_example = {}
    for (system, config, batch), t in times.items():
        if system in (MANUAL, *REFERENCES):
            per_example.setdefault((system, config), {})[batch] = t / batch
    checked = 0
    for (system, config), by_batch in sorted(per_example.items()):
        if len(by_batch) > 1:
            small, large = min(by_batch), max(by_batch)
            assert by_batch[large] < by_batch[small], (system, config, by_batch)
            checked += 1
    print(f"relation 2: µs per example falls from the smallest batch to the largest for all {checked} "
          f"(jaxmlp-manual, jaxmlp-autodiff, jax-optax) system × config pairs with more than one batch")

# %% [markdown]
# ## 7. Second order: Hessian-vector products
#
# Newton-type and other second-order methods, and analyses of the loss surface (its sharpness, the λ_max of
# notebook 4), need the Hessian $H = \partial^2 L / \partial\theta^2$ of the loss, a matrix with as many rows as
# the network has parameters. What they use is only its product $Hv$ with a direction $v$ (a pytree shaped like
# the parameters), which can be had for about the cost of a second gradient, without forming $H$.
#
# `jaxmlp.hvp(params, v, x, y, activation=..., loss=...)` computes $Hv$ by hand, with Pearlmutter's
# **R-operator** $R\{\cdot\} = \frac{\partial}{\partial r}(\cdot)(\theta + r v)\big|_{r=0}$, the derivative of
# every quantity of the forward and backward passes along $v$. Its docstring (`src/jaxmlp/hvp.py`) writes the six
# equations, batch-first, with $V[l], c[l]$ the parts of $v$ for $W[l], b[l]$ and $\Delta[l] = \partial L /
# \partial Z[l]$:
#
# - **(H1)–(H2)**, a second forward pass: $R\{Z[l]\} = R\{A[l-1]\} W[l]^\top + A[l-1] V[l]^\top + \mathbf 1 c[l]^\top$
#   and $R\{A[l]\} = \sigma'(Z[l]) \odot R\{Z[l]\}$ (the softmax's Jacobian for a softmax output): how every
#   pre-activation and activation moves along $v$. This is $Jv$, the Jacobian of the network times $v$.
# - **(H3)**, the start of a second backward pass: $R\{\Delta[L]\}$, the derivative of the output δ (21) of
#   notebook 2 along $v$: $\tfrac1n R\{A[L]\}$ for the two cross-entropies, and for the MSE
#   $\tfrac2n\big(R\{A[L]\} \odot \sigma_L'(Z[L]) + (A[L] - Y) \odot \sigma_L''(Z[L]) \odot R\{Z[L]\}\big)$.
# - **(H4)**, the derivative of the δ recursion (22) by the product rule, three terms:
#   $R\{\Delta[l]\} = \big(R\{\Delta[l+1]\} W[l+1] + \Delta[l+1] V[l+1]\big) \odot \sigma'(Z[l]) +
#   (\Delta[l+1] W[l+1]) \odot \sigma''(Z[l]) \odot R\{Z[l]\}$, with σ'' written by hand beside each σ'.
# - **(H5)–(H6)**, the derivative of the gradients (23): $(Hv)_{W[l]} = R\{\Delta[l]\}^\top A[l-1] + \Delta[l]^\top
#   R\{A[l-1]\}$ and $(Hv)_{b[l]} = \mathbf 1^\top R\{\Delta[l]\}$.
#
# Autodiff gives the same product as the forward-mode derivative of the gradient along $v$,
# `jax.jvp(jax.grad(loss_fn), (params,), (v,))`. In float64 the two agree to rounding:

# %%
with jax.enable_x64(True):
    k_p, k_x, k_y, k_v = jax.random.split(jax.random.key(6), 4)
    hvp_params = jaxmlp.init_mlp(k_p, [4, 8, 6, 3], dtype=jnp.float64)
    hx = jax.random.normal(k_x, (16, 4), jnp.float64)
    hy = jax.random.normal(k_y, (16, 3), jnp.float64)
    kw = dict(activation="tanh", loss="mse")  # tanh hidden layers, identity output, mean squared error
    loss_of = partial(jaxmlp.loss_fn, **kw)
    leaves, treedef = jax.tree.flatten(hvp_params)
    v = jax.tree.unflatten(treedef, [jax.random.normal(k, leaf.shape, jnp.float64)
                                     for k, leaf in zip(jax.random.split(k_v, len(leaves)), leaves)])
    hv_hand = jaxmlp.hvp(hvp_params, v, hx, hy, **kw)                                   # (H1)-(H6)
    hv_autodiff = jax.jvp(lambda p: jax.grad(loss_of)(p, hx, hy), (hvp_params,), (v,))[1]
    hvp_gap = max_rel_diff(hv_hand, hv_autodiff)
    print(f"jaxmlp.hvp vs jax.jvp(jax.grad(loss_fn)): max relative difference {hvp_gap:.1e} "
          f"({sum(leaf.size for leaf in leaves)} parameters)")
    assert hvp_gap <= 1e-10

    hvp_report = jaxmlp.check_hvp(hvp_params, hx, hy, hvp_fn=partial(jaxmlp.hvp, **kw), loss_fn=loss_of)
    print(hvp_report)
    assert hvp_report.ok

# %% [markdown]
# `jaxmlp.check_hvp(params, *args, hvp_fn=..., loss_fn=...)` does this check for any hand-written $Hv$: over a
# few random directions it compares every parameter array of the product with `jax.jvp(jax.grad(loss_fn))`
# and with central differences of the gradient, $(\nabla L(\theta + hv) - \nabla L(\theta - hv))/2h$, one row
# per array.
#
# **A Gauss-Newton product is not $Hv$.** Write the loss as $L(\hat y(\theta))$, with $\hat y$ the network's
# outputs and $J = \partial\hat y/\partial\theta$. By the chain rule, twice,
#
# $$H = J^\top \frac{\partial^2 L}{\partial \hat y^2} J + \sum_i \frac{\partial L}{\partial \hat y_i}\,
#   \frac{\partial^2 \hat y_i}{\partial\theta^2}$$
#
# The **Gauss-Newton** matrix $G = J^\top (\partial^2 L/\partial \hat y^2) J$ keeps the first term only: the
# curvature of the loss seen through the network's linearization, positive semi-definite for a convex loss,
# which is why optimizers use it. It drops the second, the curvature of the network itself weighted by the
# residuals $\partial L/\partial\hat y$. In (H1)–(H6), $Gv$ keeps the forward pass $Jv$, (H1)–(H2), and the part
# of the backward pass that is linear in $R\{\cdot\}$; it leaves out every term that carries the back-propagated
# gradient Δ: the $(A[L] - Y)\,\sigma_L''$ term of (H3), the $\Delta[l+1] V[l+1]$ and σ'' terms of (H4), and the
# $\Delta[l]^\top R\{A[l-1]\}$ term of (H5). For the MSE with an identity output, $\partial^2 L/\partial\hat y^2 =
# \tfrac2n I$, so $Gv = J^\top(\tfrac2n Jv)$: a JVP of the network, then a VJP. `check_hvp` tells it apart from
# $Hv$:

# %%
def gauss_newton(params, v, x, y):
    """G v = Jᵀ (2/n) J v for the MSE with an identity output, J the Jacobian of the network's outputs."""
    outputs = lambda p: jaxmlp.forward(p, x, activation="tanh")
    Jv = jax.jvp(outputs, (params,), (v,))[1]
    return jax.vjp(outputs, params)[1](2 * Jv / Jv.size)[0]


with jax.enable_x64(True):
    gn_report = jaxmlp.check_hvp(hvp_params, hx, hy, hvp_fn=gauss_newton, loss_fn=loss_of)
    print(gn_report)
    gn_gap = max_rel_diff(gauss_newton(hvp_params, v, hx, hy), hv_autodiff)
    y_fit = jaxmlp.forward(hvp_params, hx, activation="tanh")  # targets the network fits exactly: residuals 0
    hv_fit = jax.jvp(lambda p: jax.grad(loss_of)(p, hx, y_fit), (hvp_params,), (v,))[1]
    gn_fit_gap = max_rel_diff(gauss_newton(hvp_params, v, hx, y_fit), hv_fit)
print(f"G v vs H v: max relative difference {gn_gap:.2f}; where the network fits y exactly (residuals 0): "
      f"{gn_fit_gap:.1e}")
failing = [r.path for r in gn_report.rows if not r.ok]
assert not gn_report.ok and failing == [r.path for r in gn_report.rows if r.path != "[2].b"]
assert 0.7 < gn_gap < 0.8 and gn_fit_gap < 1e-12

# %% [markdown]
# $Gv$ differs from $Hv$ by up to 76 % here (relative to the largest entry), and `check_hvp` fails every row
# but one: the output bias's, whose row (H6) of $Hv$, for an identity output, contains no Δ term. Where the
# residuals vanish, so does the second term of $H$: with targets the network fits exactly, $Gv = Hv$ to rounding. Near a
# good fit the Gauss-Newton matrix approximates the Hessian; elsewhere it is a different matrix, and a checker
# comparing against $Hv$ must say so. (`jaxmlp.check_vjp` and `jaxmlp.check_jvp` do the same for the hand-written
# VJP or JVP rules of any function; their docstrings in `src/jaxmlp/rules.py` say how.)
