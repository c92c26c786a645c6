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
# # 3. Initialization: breaking symmetry and keeping the signal alive
#
# Two things go wrong when the weights start badly:
#
# 1. **Symmetry.** With $W = 0$ (I1), every hidden unit of a layer computes the same $z$, receives the
#    same δ from (B2) and so the same update (B3): the units stay identical forever, and a layer of
#    eight units acts as one.
# 2. **Scale.** Each layer multiplies the variance of its input by $n_\text{in} \operatorname{Var}(W)$
#    (times what σ keeps of it). Over ten layers a factor of ½ per layer is $2^{-10} \approx 10^{-3}$:
#    the signal, and with it the gradient, vanishes (or, above 1, explodes).
#
# The schemes of `jaxmlp.initializers`, for $W$ of shape $(n_\text{out}, n_\text{in})$:
#
# | scheme | $W \sim$ | | designed for |
# |---|---|---|---|
# | zeros | $0$ | (I1) | nothing: the counter-example |
# | Xavier (Glorot) | $\mathcal N\!\left(0, \frac{2}{n_\text{in} + n_\text{out}}\right)$ | (I2) | tanh, sigmoid |
# | He (Kaiming) | $\mathcal N\!\left(0, \frac{2}{n_\text{in}}\right)$ | (I4) | ReLU |

# %%
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp
from jaxmlp import datasets, optim

key = jax.random.key(0)

# %% [markdown]
# ## Zero initialization keeps hidden units identical
#
# `jaxmlp.symmetry(params, grads)` groups the hidden units whose incoming weights, bias and gradients
# are all equal, and counts the *distinct* units per hidden layer. We train `[2, 8, 8, 1]` with sigmoid
# hidden units on the two moons, from zeros and from He, and look before and after 20 epochs of
# minibatch Adam.

# %%
x_tr, y_tr, x_te, y_te = datasets.load("moons")
sizes, act = [2, 8, 8, 1], "sigmoid"
evaluate = jax.jit(partial(jaxmlp.evaluate, loss="bce", activation=act))
trained = {}
for init in ("zeros", "he"):
    params = jaxmlp.init_mlp(key, sizes, init=init)
    _, grads = jaxmlp.backward(params, x_tr, y_tr, activation=act, loss="bce")
    before = jaxmlp.symmetry(params, grads)
    params, history = jaxmlp.fit(params, x_tr, y_tr, optimizer=optim.adam(0.05), loss="bce",
                                 activation=act, epochs=20, batch_size=32, key=key)
    _, grads = jaxmlp.backward(params, x_tr, y_tr, activation=act, loss="bce")
    after = jaxmlp.symmetry(params, grads)
    trained[init] = params
    test = evaluate(params, x_te, y_te)
    print(f"init={init!r}: distinct hidden units per layer before {before.distinct}, after {after.distinct}; "
          f"test accuracy {float(test['accuracy']):.1%}")
    print(after, end="\n\n")

# %% [markdown]
# With zeros the weights *do* move (sigmoid(0) = ½ is not 0, so (B3) is not 0), but every row of
# $W[1]$ moves the same way: the network is in effect `[2, 1, 1, 1]`, and its boundary is nearly a line.
# (With tanh or ReLU, σ(0) = 0, so $a[l] = 0$, every $\partial L/\partial W[l] = \delta[l] a[l-1]^\top$
# below the output is 0, and the hidden weights do not move at all.)

# %%
grid = jnp.linspace(-2.5, 2.5, 201)
gx, gy = jnp.meshgrid(grid, grid)
points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)

fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), gridspec_kw=dict(width_ratios=[1, 2]))
for row, (init, params) in zip(axes, trained.items()):
    W1b1 = np.concatenate([np.asarray(params[0].W), np.asarray(params[0].b)[:, None]], axis=1)
    im = row[0].imshow(W1b1, cmap="RdBu_r", vmin=-np.abs(W1b1).max(), vmax=np.abs(W1b1).max())
    row[0].set(xticks=[0, 1, 2], xticklabels=["$W[1]_{j1}$", "$W[1]_{j2}$", "$b[1]_j$"], ylabel="hidden unit j",
               title=f"init={init!r}: layer 1 after training")
    fig.colorbar(im, ax=row[0], fraction=0.08)
    p = jaxmlp.forward(params, points, activation=act, output_activation="sigmoid").reshape(gx.shape)
    row[1].contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
    row[1].contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    row[1].scatter(*x_tr.T, c=y_tr.ravel(), cmap="coolwarm", edgecolors="k", s=10)
    row[1].set(title=f"init={init!r}: decision boundary", aspect="equal")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Variance through ten layers
#
# For $z[l] = W[l] a[l-1]$ with independent zero-mean weights,
# $\operatorname{Var}(z[l]) = n_\text{in} \operatorname{Var}(W[l])\, \mathbb E[a[l-1]^2]$.
#
# - **Xavier** sets $n_\text{in}\operatorname{Var}(W) = 1$ for square layers: right for tanh near 0,
#   where tanh(z) ≈ z keeps the variance.
# - **ReLU** zeroes half of $z$, so $\mathbb E[a^2] = \tfrac12 \operatorname{Var}(z)$: with Xavier the
#   variance halves in every layer. **He** doubles $\operatorname{Var}(W)$ to compensate, so
#   $\operatorname{Var}(z[l])$ stays constant.
#
# We push $x \sim \mathcal N(0, I)$ through eleven square layers of width 256 (`forward_with_cache`) and
# measure the variance of every hidden $a[l]$ (solid) and $z[l]$ (dotted), $l = 1..10$.

# %%
n, depth = 256, 10
x = jax.random.normal(jax.random.key(1), (2048, n))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, activation in zip(axes, ["tanh", "relu"]):
    for color, init in zip(["C0", "C3"], ["xavier", "he"]):
        params = jaxmlp.init_mlp(key, [n] * (depth + 2), init=init)
        _, cache = jaxmlp.forward_with_cache(params, x, activation=activation)
        var_a = [float(jnp.var(cache.a[l])) for l in range(depth + 1)]
        var_z = [float(jnp.var(cache.z[l])) for l in range(1, depth + 1)]
        ax.plot(range(depth + 1), var_a, "o-", color=color, label=f"{init}: Var(a[l])")
        ax.plot(range(1, depth + 1), var_z, ":", color=color, label=f"{init}: Var(z[l])")
        print(f"{activation:>4} {init:>6}: Var(a[10]) = {var_a[-1]:.2e}, Var(z[10]) = {var_z[-1]:.2e}")
    ax.set(yscale="log", xlabel="layer l", title=f"{activation}, width {n}", xticks=range(depth + 1))
    ax.legend(fontsize=8)
axes[0].set_ylabel("variance over batch and units")
fig.tight_layout()
plt.show()

# %% [markdown]
# ReLU with Xavier loses half its variance per layer (≈ $10^{-3}$ after ten); with He it holds steady.
# tanh with Xavier decays slowly (tanh shrinks everything but the smallest $z$); with He its
# pre-activations are larger, closer to saturation, where σ' is small. Match the scheme to the
# activation: Xavier for tanh and sigmoid, He for the ReLU family.
