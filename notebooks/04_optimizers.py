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
# $\theta \leftarrow \theta + u$. The equations of `jaxmlp.optim` (every operation elementwise):
#
# | | | |
# |---|---|---|
# | GD / SGD | $u = -\eta\, g$ | (O1) |
# | momentum | $\tau \leftarrow g + \mu \tau$, $\; u = -\eta\, \tau$ | (O2) |
# | Adam, moments | $m \leftarrow \beta_1 m + (1-\beta_1) g$, $\; v \leftarrow \beta_2 v + (1-\beta_2) g^2$ | (O4) |
# | Adam, debias | $\hat m = m / (1-\beta_1^t)$, $\; \hat v = v / (1-\beta_2^t)$ | (O6) |
# | Adam, update | $u = -\eta\, \hat m / (\sqrt{\hat v} + \varepsilon)$ | (O7) |
#
# GD and SGD are the same update: GD's $g$ is the gradient of the whole training set, SGD's that of
# a minibatch, a noisy but far cheaper estimate. Each optimizer is a pair of pure functions
# `init(params)`, `update(grads, state, params)` over *any* pytree, optax's protocol, so the same objects
# drive a 2-vector here and an MLP below.

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
#   larger along $\theta_2$, so a step size small enough for $\theta_2$ is tiny for $\theta_1$;
# - the **Rosenbrock** valley $f(\theta) = (1-\theta_1)^2 + 100(\theta_2 - \theta_1^2)^2$, minimum at $(1, 1)$
#   at the end of a long, curved, nearly flat valley.
#
# "SGD" here is GD with Gaussian noise added to every gradient, standing in for minibatch noise.
# The whole trajectory is one `lax.scan`, compiled once per optimizer.

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


surfaces = [
    ("elongated quadratic", quadratic, [-4.0, 1.5], 100, (-4.5, 2.0, -2.0, 2.0), (0.0, 0.0), {
        "GD, η = 0.075": (optim.gd(0.075), 0.0),
        "SGD, η = 0.075": (optim.sgd(0.075), 1.0),
        "momentum, η = 0.02, μ = 0.9": (optim.sgd(0.02, momentum=0.9), 0.0),
        "Adam, η = 0.3": (optim.adam(0.3), 0.0)}),
    ("Rosenbrock", rosenbrock, [-1.5, 2.0], 2000, (-2.0, 2.0, -1.0, 3.0), (1.0, 1.0), {
        "GD, η = 1e-3": (optim.gd(1e-3), 0.0),
        "SGD, η = 1e-3": (optim.sgd(1e-3), 5.0),
        "momentum, η = 2e-4, μ = 0.9": (optim.sgd(2e-4, momentum=0.9), 0.0),
        "Adam, η = 0.05": (optim.adam(0.05), 0.0)}),
]

paths = {}  # (surface, run) -> the path, reused below for the optax comparison
fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
for ax, (title, f, theta0, steps, (x0, x1, y0, y1), minimum, runs) in zip(axes, surfaces):
    g1, g2 = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    values = jax.vmap(lambda t: f({"theta": t}))(jnp.stack([g1.ravel(), g2.ravel()], axis=1)).reshape(g1.shape)
    ax.contour(g1, g2, values, levels=np.geomspace(1e-2, float(values.max()), 20), colors="0.75", linewidths=0.7)
    for color, (name, (optimizer, noise)) in zip(["C0", "C1", "C2", "C3"], runs.items()):
        path = paths[(title, name)] = trajectory(f, optimizer, theta0, steps, noise)
        ax.plot(*path.T, "-", color=color, lw=1.2, alpha=0.85, label=f"{name}: f = {float(f({'theta': path[-1]})):.1e}")
        ax.plot(*path[-1], "o", color=color, mec="k", ms=8)  # where it ended
    ax.plot(*theta0, "ko", ms=6)
    ax.plot(*minimum, "k*", ms=14)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="θ₁", ylabel="θ₂", title=f"{title}: {steps} steps from ●, ★ the minimum")
    ax.legend(fontsize=8, loc="lower left" if title == "Rosenbrock" else "lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# On the quadratic, GD at the largest stable step zigzags across the narrow axis while creeping along
# the wide one; noise throws SGD around the minimum, where it never settles at a constant η. Momentum
# averages the zigzag away and accelerates along the consistent direction. Adam divides each
# coordinate by its own $\sqrt{\hat v}$, so both axes take steps of about η: it heads for the minimum
# almost regardless of the curvature. In the Rosenbrock valley GD and SGD crawl; momentum and Adam get
# much further in the same number of steps (the coloured dots are where each one ended).

# %% [markdown]
# ## On digits: loss curves of an MLP
#
# Now GD, SGD and Adam train `[64, 64, 32, 10]` (ReLU, softmax output, cross-entropy (L5)) on
# scikit-learn's 8×8 digits with `jaxmlp.fit`: GD on the full training set (1 step per epoch), the
# others on minibatches of 64 (22 steps per epoch). Per **epoch**, minibatches win by far; per
# **step**, the full-batch gradient is the better one, but each costs 22 times more.

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
axes[1].set(xlabel="optimizer step", yscale="log", xscale="log", title="per step")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## jaxmlp's Adam against optax's
#
# `jaxmlp.optim.adam` is written line by line from (O4)–(O7), in optax's order of operations, so it
# should agree with `optax.adam` to the last bit. `jaxmlp.fit` accepts either optimizer. We train the
# network of the Adam run above again, same key and minibatches, with `optax.adam`, overlay the two loss
# curves, and run both Adams on the Rosenbrock surface.

# %%
params_ours, (hist_ours, _) = trained["Adam, η = 1e-3"], histories["Adam, η = 1e-3"]
params_optax, hist_optax = jaxmlp.fit(params0, x_tr, y_tr, optimizer=optax.adam(1e-3), loss="ce",
                                      activation="relu", epochs=epochs, batch_size=64, key=key)
loss_diff = float(np.max(np.abs(hist_ours["loss"] - hist_optax["loss"])))
param_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(params_ours),
                                                                 jax.tree.leaves(params_optax)))
path_ours = paths[("Rosenbrock", "Adam, η = 0.05")]  # optim.adam(0.05), 2000 steps from (-1.5, 2), above
path_optax = trajectory(rosenbrock, optax.adam(0.05), [-1.5, 2.0], 2000, apply_updates=optax.apply_updates)
path_diff = float(np.max(np.abs(path_ours - path_optax)))
print(f"digits, {epochs} epochs: max |loss diff| = {loss_diff:.1e}, max |param diff| = {param_diff:.1e}")
print(f"Rosenbrock, 2000 steps: max |θ diff| along the path = {path_diff:.1e}")

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
# step, the largest difference in θ and in the debiased moments $\hat m$, $\hat v$ of (O6).

# %%
T = 200
rng = np.random.default_rng(0)
grads_sequence = jax.tree.map(lambda leaf: jnp.asarray(0.1 * rng.standard_normal((T,) + leaf.shape), leaf.dtype),
                              params0)
print(optim_check.adam_trace(params0, grads_sequence, learning_rate=1e-2))
