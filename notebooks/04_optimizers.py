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
# # 4. Optimizers: GD, SGD, momentum and Adam
#
# Backprop gives $g = \partial L / \partial \theta$; an optimizer turns it into an update $u$, and
# $\theta \leftarrow \theta + u$. Throughout, **η is the learning rate**, the step size (the lesson writes
# α for Adam's). The equations of `jaxmlp.optim` (every operation elementwise; $t = 1, 2, \dots$ counts the
# steps):
#
# | | | |
# |---|---|---|
# | GD / SGD | $u = -\eta\, g$ | (O1) |
# | momentum | $\tau \leftarrow g + \mu \tau$ (from $\tau = 0$), $\; u = -\eta\, \tau$ | (O2) |
# | Adam, moments | $m \leftarrow \beta_1 m + (1-\beta_1) g$, $\; v \leftarrow \beta_2 v + (1-\beta_2) g^2$ (from $m = v = 0$) | (O4) |
# | Adam, debias | $\hat m = m / (1-\beta_1^t)$, $\; \hat v = v / (1-\beta_2^t)$ | (O6) |
# | Adam, update | $u = -\eta\, \hat m / (\sqrt{\hat v} + \varepsilon)$ | (O7) |
#
# Adam's defaults are those of the paper and the lesson: η (α) = 1e-3, β₁ = 0.9, β₂ = 0.999,
# ε = 1e-8 (`optim.adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8)`). $m$ is a running mean of the
# gradient and $v$ of its square; the debiasing undoes their start at 0; so $\hat m / \sqrt{\hat v}$ is
# about ±1 for a gradient of steady sign, whatever its size, and each coordinate moves by about η per step.
#
# GD and SGD are the same update: GD's $g$ is the gradient of the whole training set, SGD's that of
# a **minibatch**, a few examples drawn at random, a noisy but far cheaper estimate. An **epoch** is one
# pass over the training set: one step for GD, one step per minibatch for SGD and Adam on minibatches.
# (Notebooks 1 and 3 used Adam, epochs and minibatches already, with these meanings.) Each optimizer is a
# pair of pure functions `init(params)`, `update(grads, state, params)` over *any* pytree, optax's protocol,
# so the same objects drive a 2-vector here and an MLP below.

# %%
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxmlp
from jaxmlp import datasets, optim, optim_check

key = jax.random.key(0)

# %% [markdown]
# ## Trajectories on two 2-D loss surfaces
#
# The parameters are a pytree holding one 2-vector, `{"theta": θ}`. Two classic surfaces:
#
# - an **elongated quadratic** $f(\theta) = \tfrac12(\theta_1^2 + 25\,\theta_2^2)$: curvature 25 times
#   larger along $\theta_2$ (condition number κ = 25), so a step size small enough for $\theta_2$ is tiny
#   for $\theta_1$;
# - the **Rosenbrock** valley $f(\theta) = (1-\theta_1)^2 + 100(\theta_2 - \theta_1^2)^2$, minimum at $(1, 1)$
#   at the end of a long, curved, nearly flat valley.
#
# "SGD" here is GD with Gaussian noise added to every gradient, standing in for minibatch noise.
# The whole trajectory is one `lax.scan`, compiled once per optimizer. Each optimizer gets its own panel,
# its path in colour over the others in grey, so that no path hides another.
#
# **Tuning on the quadratic.** With curvatures $\lambda_\min = 1$ and $\lambda_\max = 25$, the best fixed
# step of GD is $\eta = 2/(\lambda_\min + \lambda_\max) = 1/13 \approx 0.077$ (we use 0.075), and the error
# then shrinks by at best $(\kappa - 1)/(\kappa + 1) = 12/13$ per step. Momentum (the "heavy ball") is best
# at $\eta = 4/(\sqrt{\lambda_\max} + \sqrt{\lambda_\min})^2 = 1/9$ and
# $\mu = \big((\sqrt\kappa - 1)/(\sqrt\kappa + 1)\big)^2 = 4/9$, where the error shrinks by
# $(\sqrt\kappa - 1)/(\sqrt\kappa + 1) = 2/3$ per step: over 100 steps, $f$ (a square) falls by about
# $(2/3)^{200} \approx 10^{-35}$ against GD's $(12/13)^{200} \approx 10^{-7}$. We also run momentum with
# the common μ = 0.9, which is too much here: underdamped, it overshoots and spirals in.

# %%
def quadratic(p):
    t1, t2 = p["theta"]
    return 0.5 * (t1 ** 2 + 25.0 * t2 ** 2)


def rosenbrock(p):
    t1, t2 = p["theta"]
    return (1.0 - t1) ** 2 + 100.0 * (t2 - t1 ** 2) ** 2


def trajectory(f, optimizer, theta0, steps, noise=0.0, apply_updates=optim.apply_updates):
    """θ after each of ``steps`` updates of ``optimizer`` on ``f``, starting from ``theta0``."""
    def step(carry, k):
        p, state = carry
        g = jax.grad(f)(p)
        g = {"theta": g["theta"] + noise * jax.random.normal(k, (2,))}  # noise = 0: plain GD
        u, state = optimizer.update(g, state, p)
        p = apply_updates(p, u)
        return (p, state), p["theta"]

    p0 = {"theta": jnp.asarray(theta0)}
    run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), jax.random.split(key, steps))[1])
    return np.concatenate([np.asarray(theta0)[None], np.asarray(run(p0))])


def f_along(f, path):
    return np.asarray(jax.vmap(lambda t: f({"theta": t}))(jnp.asarray(path)))


def draw_paths(axes, f, paths, theta0, minimum, box, colors):
    """One panel per path: that path in colour over the others in grey, so that none hides another."""
    x0, x1, y0, y1 = box
    g1, g2 = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    values = f_along(f, np.stack([g1.ravel(), g2.ravel()], axis=1)).reshape(g1.shape)
    for ax, color, (name, path) in zip(axes, colors, paths.items()):
        ax.contour(g1, g2, values, levels=np.geomspace(1e-2, values.max(), 20), colors="0.85", linewidths=0.6)
        for other in paths.values():
            ax.plot(*other.T, "-", color="0.6", lw=0.7, alpha=0.5)
        ax.plot(*path.T, "-", color=color, lw=1.5)
        ax.plot(*path[-1], "o", color=color, mec="k", ms=8)  # where it ended
        ax.plot(*theta0, "ko", ms=6)
        ax.plot(*minimum, "k*", ms=14)
        final = float(f_along(f, path[-1:])[0])
        ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="θ₁", title=f"{name}\nends at f = {final:.1e}")
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("θ₂")


quadratic_runs = {
    "GD, η = 0.075": (optim.gd(0.075), 0.0),
    "SGD, η = 0.075": (optim.sgd(0.075), 1.0),
    "momentum, η = 1/9, μ = 4/9": (optim.sgd(1 / 9, momentum=4 / 9), 0.0),
    "momentum, η = 0.02, μ = 0.9": (optim.sgd(0.02, momentum=0.9), 0.0),
    "Adam, η = 0.3": (optim.adam(0.3), 0.0),
}
theta0, steps = [-4.0, 1.5], 100
q_paths = {name: trajectory(quadratic, opt, theta0, steps, noise) for name, (opt, noise) in quadratic_runs.items()}
q_final = {name: float(f_along(quadratic, path[-1:])[0]) for name, path in q_paths.items()}

colors = ["C0", "C1", "C2", "C4", "C3"]
fig, panels = plt.subplot_mosaic([list("abcde"), list("fffff")], figsize=(16, 7.8),
                                  gridspec_kw=dict(height_ratios=[1, 1.1]))
top, bottom = [panels[k] for k in "abcde"], panels["f"]
draw_paths(top, quadratic, q_paths, theta0, (0.0, 0.0), (-4.5, 2.0, -2.0, 2.0), colors)
for color, (name, path) in zip(colors, q_paths.items()):
    bottom.plot(np.arange(steps + 1), f_along(quadratic, path), "-", color=color, lw=1.5, label=name)
bottom.set(xlabel="step t", ylabel="f(θ_t)", yscale="log", ylim=(1e-32, 1e3),
           title="f along each path (log scale)")
bottom.legend(fontsize=8, loc="lower left")
fig.suptitle(f"elongated quadratic: {steps} steps from ●, ★ the minimum; each panel one optimizer, the others in grey")
fig.tight_layout()
plt.show()

# %% [markdown]
# GD at its best step zigzags across the narrow axis while creeping along the wide one; noise throws
# SGD around the minimum, where it never settles at a constant η (it ends at $f$ above $10^{-2}$). Tuned
# momentum does *not* remove the zigzag: its η = 1/9 is a step too large for θ₂ alone ($\eta\lambda_\max =
# 25/9 > 2$, where GD would diverge), and its first swings across the valley are wider than GD's. What
# the trace τ does is damp those swings while it accumulates speed along θ₁, so that both directions
# shrink by about the same factor 2/3 per step (measured below over the last 50 steps): it reaches $f$
# below $10^{-25}$, more than fifteen orders of
# magnitude below GD. With μ = 0.9 momentum carries too much speed: underdamped, it overshoots, loops
# around the minimum, and ends *above* GD. Adam divides each coordinate by its own $\sqrt{\hat v}$, so both
# coordinates take steps of about η at first, whatever their curvature (its first step is exactly
# ±η in each, at 45°). At a constant η it cannot settle either: it ends near the minimum ($f$ below
# $10^{-2}$) but above tuned GD. On a quadratic whose curvatures are known, tuned GD and momentum win;
# Adam's strength is that it needs no such tuning, as the next surface shows.

# %%
q = q_final
assert q["momentum, η = 1/9, μ = 4/9"] < 1e-25 and q["momentum, η = 1/9, μ = 4/9"] < 1e-15 * q["GD, η = 0.075"]
assert q["GD, η = 0.075"] < 1e-5 < 1e-2 < q["SGD, η = 0.075"]
assert q["momentum, η = 0.02, μ = 0.9"] > q["GD, η = 0.075"]
assert q["GD, η = 0.075"] < q["Adam, η = 0.3"] < 1e-2
tuned, gd_path = q_paths["momentum, η = 1/9, μ = 4/9"], q_paths["GD, η = 0.075"]
assert np.abs(tuned[:, 1]).max() > np.abs(gd_path[:, 1]).max()  # wider first swings than GD's
f_tuned = f_along(quadratic, tuned)
rate = float(np.sqrt(f_tuned[-1] / f_tuned[-51]) ** (1 / 50))  # per-step factor of the distance, ~ √f
print(f"tuned momentum: the distance to the minimum shrinks by {rate:.3f} per step over the last 50 steps")
assert 0.6 < rate < 0.72
first = q_paths["Adam, η = 0.3"][1] - q_paths["Adam, η = 0.3"][0]
assert np.allclose(np.abs(first), 0.3, rtol=1e-3)  # Adam's first step is ±η in every coordinate

# %% [markdown]
# ### The Rosenbrock valley
#
# 2,000 steps from $(-1.5, 2)$, drawn as above. η must be small for GD here: the valley's walls are steep
# (the Hessian's largest eigenvalue along GD's path reaches about 2,000, so GD needs η below
# 2/2000 = 1e-3 there), while along the floor the curvature is much smaller.

# %%
rosenbrock_runs = {
    "GD, η = 1e-3": (optim.gd(1e-3), 0.0),
    "SGD, η = 1e-3": (optim.sgd(1e-3), 5.0),
    "momentum, η = 2e-4, μ = 0.9": (optim.sgd(2e-4, momentum=0.9), 0.0),
    "Adam, η = 0.05": (optim.adam(0.05), 0.0),
}
theta0, steps = [-1.5, 2.0], 2000
r_paths = {name: trajectory(rosenbrock, opt, theta0, steps, noise) for name, (opt, noise) in rosenbrock_runs.items()}
r_final = {name: float(f_along(rosenbrock, path[-1:])[0]) for name, path in r_paths.items()}
r_distance = {name: float(np.linalg.norm(path[-1] - 1.0)) for name, path in r_paths.items()}
hessian = jax.vmap(jax.hessian(lambda t: rosenbrock({"theta": t})))
curvature = np.linalg.eigvalsh(np.asarray(hessian(jnp.asarray(r_paths["GD, η = 1e-3"]))))
print(f"along GD's path: largest Hessian eigenvalue {curvature.max():.0f}, "
      f"smallest {curvature.min():.1f}; 2 / largest = {2 / curvature.max():.1e}")
assert 1500 < curvature.max() < 2500 and curvature.min() < 100

fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), sharex=True, sharey=True)
draw_paths(axes, rosenbrock, r_paths, theta0, (1.0, 1.0), (-2.0, 2.0, -1.0, 3.0), ["C0", "C1", "C2", "C3"])
for ax, name in zip(axes, r_paths):
    ax.set_title(f"{ax.get_title()}, {r_distance[name]:.1e} from ★", fontsize=9)
    ax.set_xticks([-1.5, -0.5, 0.5, 1.5])  # no label at the shared edges
fig.suptitle(f"Rosenbrock: {steps} steps from ●, ★ the minimum (1, 1); each panel one optimizer, the others in grey")
fig.tight_layout()
plt.show()

# %% [markdown]
# In the valley GD and SGD crawl: after 2,000 steps both are still more than 0.5 from the minimum.
# Momentum gets much further with a five times smaller η (it ends within 0.3), and Adam, whose steps do not
# shrink with the flat floor's small gradient, reaches the minimum to within $10^{-4}$.

# %%
d = r_distance
assert d["GD, η = 1e-3"] > 0.5 and d["SGD, η = 1e-3"] > 0.5
assert d["momentum, η = 2e-4, μ = 0.9"] < 0.3 < 0.5
assert d["Adam, η = 0.05"] < 1e-4

# %% [markdown]
# ## On digits: loss curves of an MLP
#
# Now GD, SGD and Adam train `[64, 64, 32, 10]` (ReLU hidden layers) on scikit-learn's 8×8 digits with
# `jaxmlp.fit`. The output is the softmax of the logits $z = z[L]$, and the loss the cross-entropy of the
# $B$ examples with one-hot labels $y$:
#
# $$a_c = \operatorname{softmax}(z)_c = \frac{e^{z_c}}{\sum_{k} e^{z_k}}, \qquad
#   L = -\frac1B \sum_{b=1}^{B} \sum_{c=1}^{10} y_{bc} \log a_{bc} \quad (L3)$$
#
# computed from the logits as $\frac1B \sum_b [\log \sum_k e^{z_{bk}} - \sum_c y_{bc} z_{bc}]$ (L5), the same
# number without overflow. GD runs on the full training set (1 step per epoch), the others on minibatches
# of 64 (22 steps per epoch).

# %%
x_tr, y_tr, x_te, y_te = datasets.load("digits")
params0 = jaxmlp.init_mlp(key, [64, 64, 32, 10], init="he")
runs = {
    "GD, η = 0.3 (full batch)": (optim.gd(0.3), None),
    "SGD, η = 0.05": (optim.sgd(0.05), 64),
    "Adam, η = 1e-3": (optim.adam(1e-3), 64),
}
epochs = 30
evaluate = jax.jit(partial(jaxmlp.evaluate, loss="ce", activation="relu"))  # compiled once, used 3 times
histories, trained = {}, {}
for name, (optimizer, batch_size) in runs.items():
    params, history = jaxmlp.fit(params0, x_tr, y_tr, optimizer=optimizer, loss="ce", activation="relu",
                                 epochs=epochs, batch_size=batch_size, key=key)
    steps_per_epoch = 1 if batch_size is None else len(x_tr) // batch_size
    histories[name], trained[name] = (history, steps_per_epoch), params
    test = evaluate(params, x_te, y_te)
    print(f"{name:>36}: train loss {history['loss'][-1]:.4f}, test accuracy {float(test['accuracy']):.1%}")

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for name, (history, steps_per_epoch) in histories.items():
    axes[0].plot(history["epoch"], history["loss"], label=name)
    axes[1].plot(history["epoch"] * steps_per_epoch, history["loss"], label=name)
axes[0].set(xlabel="epoch", ylabel="training loss (CE)", yscale="log", title="per epoch")
axes[1].set(xlabel="optimizer step", ylabel="training loss (CE)", yscale="log", xscale="log", title="per step")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Per **epoch**, minibatches win by far: after 30 epochs SGD's and Adam's training losses are more than five
# times lower than GD's, because they took 22 steps for each of GD's one. Per **step**, with the learning
# rates used here, GD's full-batch steps make more progress: after 22 steps GD's loss is below both SGD's
# and Adam's after their first epoch of 22 steps. But each of GD's steps costs as much as 22 of theirs.

# %%
gd_loss, sgd_loss, adam_loss = (np.asarray(h["loss"]) for h, _ in histories.values())
assert sgd_loss[-1] < gd_loss[-1] / 5 and adam_loss[-1] < gd_loss[-1] / 5
spe = len(x_tr) // 64
assert spe == 22 and gd_loss[spe - 1] < sgd_loss[0] and gd_loss[spe - 1] < adam_loss[0]  # after 22 steps each

# %% [markdown]
# ## jaxmlp's Adam against optax's
#
# `jaxmlp.optim.adam` is written line by line from (O4)–(O7), in optax's order of operations, so it
# should agree with `optax.adam` to the last bit. `jaxmlp.fit` accepts either optimizer. We train the
# network of the Adam run above again, same key and minibatches, with `optax.adam`, overlay the two loss
# curves, and run both Adams on the Rosenbrock surface. Every difference printed is exactly 0.

# %%
params_ours, (hist_ours, _) = trained["Adam, η = 1e-3"], histories["Adam, η = 1e-3"]
params_optax, hist_optax = jaxmlp.fit(params0, x_tr, y_tr, optimizer=optax.adam(1e-3), loss="ce",
                                      activation="relu", epochs=epochs, batch_size=64, key=key)
loss_diff = float(np.max(np.abs(hist_ours["loss"] - hist_optax["loss"])))
param_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(params_ours),
                                                                 jax.tree.leaves(params_optax)))
path_ours = r_paths["Adam, η = 0.05"]  # optim.adam(0.05), 2000 steps from (-1.5, 2), above
path_optax = trajectory(rosenbrock, optax.adam(0.05), [-1.5, 2.0], 2000, apply_updates=optax.apply_updates)
path_diff = float(np.max(np.abs(path_ours - path_optax)))
print(f"digits, {epochs} epochs: max |loss diff| = {loss_diff:.1e}, max |param diff| = {param_diff:.1e}")
print(f"Rosenbrock, 2000 steps: max |θ diff| along the path = {path_diff:.1e}")
assert loss_diff == 0.0 and param_diff == 0.0 and path_diff == 0.0

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
axes[0].plot(hist_ours["epoch"], hist_ours["loss"], "-", lw=4, alpha=0.4, label="jaxmlp.optim.adam")
axes[0].plot(hist_optax["epoch"], hist_optax["loss"], "k.", label="optax.adam")
axes[0].set(xlabel="epoch", ylabel="training loss (CE)", yscale="log",
            title=f"digits: max |Δ loss| = {loss_diff:.1e}, max |Δθ| = {param_diff:.1e}")
axes[1].plot(*path_ours.T, "-", lw=4, alpha=0.4, label="jaxmlp.optim.adam")
axes[1].plot(*path_optax[::40].T, "k.", label="optax.adam (every 40th step)")
axes[1].set(xlabel="θ₁", ylabel="θ₂", title=f"Rosenbrock: max |Δθ| = {path_diff:.1e}")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Step by step, including the moments: `jaxmlp.optim_check.adam_trace` feeds both Adams the same
# sequence of gradients (here 200 random ones shaped like the MLP's parameters) and reports, after every
# step, the largest difference in θ and in the debiased moments $\hat m$, $\hat v$ of (O6)
# ($\hat m = m/(1-\beta_1^t)$, $\hat v = v/(1-\beta_2^t)$). Again every difference is 0.

# %%
T = 200
rng = np.random.default_rng(0)
grads_sequence = jax.tree.map(lambda leaf: jnp.asarray(0.1 * rng.standard_normal((T,) + leaf.shape), leaf.dtype),
                              params0)
trace = optim_check.adam_trace(params0, grads_sequence, learning_rate=1e-2)
print(trace)
assert trace.max_param_diff == 0.0 and float(np.max(trace.m_hat_diff)) == 0.0 and float(np.max(trace.v_hat_diff)) == 0.0
