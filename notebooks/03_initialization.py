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
#    same δ from (B2) and so the same update: the units stay identical forever, and a layer of eight
#    units acts as one.
# 2. **Scale.** Each layer multiplies the variance of its input by $n_\text{in} \operatorname{Var}(W)$
#    (times what σ keeps of it). Over ten layers a factor of ½ per layer is $2^{-10} \approx 10^{-3}$:
#    the signal, and with it the gradient, vanishes (or, above 1, explodes).
#
# The schemes of `jaxmlp.initializers`, for $W$ of shape $(n_\text{out}, n_\text{in})$ (biases start at 0):
#
# | scheme | $W \sim$ | | designed for |
# |---|---|---|---|
# | zeros | $0$ | (I1) | nothing: the counter-example |
# | Xavier (Glorot) | $\mathcal N\!\left(0, \frac{2}{n_\text{in} + n_\text{out}}\right)$ | (I2) | tanh, sigmoid |
# | He (Kaiming) | $\mathcal N\!\left(0, \frac{2}{n_\text{in}}\right)$ | (I4) | ReLU |
#
# The backward pass of notebook 2, for reference: $\delta[L] = a[L] - y$ for a sigmoid output with the
# binary cross-entropy (B1-bce), $\delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l])$ (B2),
# $\partial L/\partial W[l] = \delta[l]\, a[l-1]^\top$ (B3), $\partial L/\partial b[l] = \delta[l]$ (B4)
# (summed over the examples of a batch, with the mean's $1/n$ in $\delta[L]$).

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
# ## Zero initialization, one step at a time
#
# Take `[2, 8, 8, 1]` ($L = 3$), a sigmoid output and the binary cross-entropy, on the two moons. With
# every $W[l] = 0$ and $b[l] = 0$, each hidden unit has $z = 0$, so $a[l] = \sigma(0)$ in every hidden layer:
# ½ for the sigmoid, 0 for tanh and ReLU. The output is $\sigma(0) = \tfrac12$ for every input. Then, at the
# first step:
#
# - **Output layer.** $\delta[L] = \tfrac1n(a[L] - y) = \tfrac1n(\tfrac12 - y)$ is not 0, so
#   $\partial L / \partial b[L] = \sum \delta[L]$ is not 0 (unless exactly half the labels are 1) and
#   $\partial L / \partial W[L] = \sum \delta[L]\, a[L-1]^\top$ is the same number in every entry:
#   $\sigma(0) \sum \delta[L]$. For tanh and ReLU, $a[L-1] = 0$, so **$W[L]$ gets no gradient either**: only
#   $b[L]$ moves.
# - **Hidden layers.** $\delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l]) = 0$ **because $W[l+1] = 0$**,
#   whatever σ' is. So $\partial L/\partial W[l] = \delta[l]\, a[l-1]^\top = 0$ and $\partial L/\partial b[l] = 0$
#   for every $l < L$. For $l = 1$ the input $a[0] = x$ is not 0; the gradient is 0 because $\delta[1]$ is.
#
# What happens next depends on σ(0):
#
# - **tanh, ReLU** ($\sigma(0) = 0$): after step 1 only $b[L]$ has changed, so every $W$ is still 0 and
#   every hidden $a$ is still 0, and step 2 is step 1 again. By induction, **no weight ever moves**: the
#   network is the constant $\sigma(b[L])$, with any optimizer whose update is 0 for a zero gradient
#   (GD, momentum and Adam all are).
# - **sigmoid** ($\sigma(0) = \tfrac12$): step 1 sets $W[L]$ to a nonzero constant row, so at step 2
#   $\delta[L-1] = W[L]^\top \delta[L] \odot \sigma'(0)$ is nonzero, the same in every unit, and $W[L-1]$
#   moves (every entry alike, since $a[L-2] = \tfrac12$ in every unit); $\delta[1]$ is still 0 because
#   $W[2]$ still is. At step 3, $W[2] \ne 0$ and $W[1]$ moves too, every row by $\delta[1]_j x^\top$ with the
#   same $\delta[1]_j$ in every unit $j$. The weights move, but every unit of a layer moves identically.
#
# We check every one of these claims on a minibatch of 32 examples with three steps of plain gradient
# descent, $\theta \leftarrow \theta - \eta\, \partial L/\partial \theta$, where η = 0.5 is the learning rate.

# %%
x_tr, y_tr, x_te, y_te = datasets.load("moons")
sizes = [2, 8, 8, 1]
xb, yb = x_tr[:32], y_tr[:32]
print(f"{len(x_tr)} training examples, fraction with y = 1: {float(jnp.mean(y_tr)):.3f}; "
      f"in the minibatch: {float(jnp.mean(yb)):.3f}")
assert len(x_tr) == 320 and float(jnp.mean(y_tr)) == 0.5 and float(jnp.mean(yb)) != 0.5


def largest(tree):
    return [(float(jnp.max(jnp.abs(layer.W))), float(jnp.max(jnp.abs(layer.b)))) for layer in tree]


steps = {}  # activation -> [(params before the step, grads of the step)] for steps 1, 2, 3
for act in ("sigmoid", "tanh", "relu"):
    params, gd = jaxmlp.init_mlp(key, sizes, init="zeros"), optim.gd(0.5)
    state, steps[act] = gd.init(params), []
    for t in (1, 2, 3):
        _, grads = jaxmlp.backward(params, xb, yb, activation=act, output_activation="sigmoid", loss="bce")
        steps[act].append((params, grads))
        print(f"{act:>7} step {t}: max |∂L/∂W[l]|, max |∂L/∂b[l]| for l = 1, 2, 3: "
              + "  ".join(f"{w:.1e}, {b:.1e}" for w, b in largest(grads)))
        updates, state = gd.update(grads, state, params)
        params = optim.apply_updates(params, updates)

# %%
nonzero = lambda a: bool(jnp.any(a != 0))
# Step 1, every σ: hidden layers get exactly zero gradient (δ[l] = 0 because W[l+1] = 0), b[L] does not.
for act in steps:
    _, g = steps[act][0]
    assert all(not nonzero(g[l].W) and not nonzero(g[l].b) for l in (0, 1)) and nonzero(g[2].b)
# sigmoid: step 1 moves W[3] (all entries equal), step 2 also W[2], step 3 also W[1], with identical rows.
(_, g1), (_, g2), (_, g3) = steps["sigmoid"]
assert nonzero(g1[2].W) and bool(jnp.all(g1[2].W == g1[2].W[0, 0]))
assert not nonzero(g2[0].W) and nonzero(g2[1].W) and bool(jnp.all(g2[1].W == g2[1].W[0, 0]))
assert nonzero(g3[0].W) and bool(jnp.all(g3[0].W == g3[0].W[:1]))
# tanh and ReLU: a[L-1] = 0, so W[L] is frozen too, at every step; only b[L] moves.
for act in ("tanh", "relu"):
    for params, g in steps[act]:
        assert not any(nonzero(layer.W) for layer in g) and not any(nonzero(layer.W) for layer in params)
        assert not any(nonzero(layer.b) for layer in g[:2]) and nonzero(g[2].b)
# On the whole (balanced) training set even δ[L] sums to 0: zero init is a stationary point there.
_, g_full = jaxmlp.backward(jaxmlp.init_mlp(key, sizes, init="zeros"), x_tr, y_tr, activation="sigmoid",
                            output_activation="sigmoid", loss="bce")
print("full training set, step 1, sigmoid: max |gradient| =", max(max(wb) for wb in largest(g_full)))
assert max(max(wb) for wb in largest(g_full)) < 1e-8  # 0 up to the float32 rounding of the sum

# %% [markdown]
# The training set holds exactly as many 1s as 0s, so on all of it $\sum \delta[L] = \sum(\tfrac12 - y)/n = 0$:
# full-batch gradient descent from zeros would not move at all (the printed 5e-10 is the float32 rounding
# of that sum of 320 terms, each $\pm\tfrac{1}{640}$). Minibatches are not balanced, which is why the steps
# above used one.
#
# ## Zeros against Xavier, trained
#
# `jaxmlp.symmetry(params, grads)` groups the hidden units whose incoming weights, bias and gradients
# are all equal, and counts the *distinct* units per hidden layer. We train `[2, 8, 8, 1]` with sigmoid
# hidden units from zeros and from Xavier (the scheme designed for sigmoid), and look before and after
# 20 epochs of minibatch Adam. As in notebook 1: an **epoch** is one pass over the 320 training examples,
# here shuffled into **minibatches** of 32, one optimizer step per minibatch (10 steps per epoch);
# **Adam** is the optimizer that scales each coordinate's step by the running root mean square of its
# gradients (notebook 4), here with learning rate η = 0.05. We also train the tanh network from zeros,
# to see that its weights indeed never move.

# %%
act = "sigmoid"
evaluate = jax.jit(partial(jaxmlp.evaluate, loss="bce", activation=act))
trained, distinct = {}, {}
for init in ("zeros", "xavier"):
    params = jaxmlp.init_mlp(key, sizes, init=init)
    _, grads = jaxmlp.backward(params, x_tr, y_tr, activation=act, loss="bce")
    before = jaxmlp.symmetry(params, grads)
    params, history = jaxmlp.fit(params, x_tr, y_tr, optimizer=optim.adam(0.05), loss="bce",
                                 activation=act, epochs=20, batch_size=32, key=key)
    _, grads = jaxmlp.backward(params, x_tr, y_tr, activation=act, loss="bce")
    after = jaxmlp.symmetry(params, grads)
    trained[init], distinct[init] = params, (before.distinct, after.distinct)
    test = evaluate(params, x_te, y_te)
    print(f"init={init!r}: distinct hidden units per layer before {before.distinct}, after {after.distinct}; "
          f"test accuracy {float(test['accuracy']):.1%}")
    print(after, end="\n\n")
assert distinct["zeros"] == ((1, 1), (1, 1)) and distinct["xavier"] == ((8, 8), (8, 8))

zeros = jaxmlp.init_mlp(key, sizes, init="zeros")
tanh_params, _ = jaxmlp.fit(zeros, x_tr, y_tr, optimizer=optim.adam(0.05), loss="bce", activation="tanh",
                            epochs=20, batch_size=32, key=key)
moved = [(bool(jnp.any(p.W != 0)), bool(jnp.any(p.b != 0))) for p in tanh_params]
print("tanh from zeros after 20 epochs, (W[l] moved, b[l] moved) for l = 1, 2, 3:", moved)
assert moved == [(False, False), (False, False), (False, True)]

# %% [markdown]
# With zeros, the sigmoid network's weights *do* move, but every row of $W[1]$ moves the same way: the
# network is in effect `[2, 1, 1, 1]`. Its decision boundary is then **exactly a straight line**, not
# nearly one: with identical rows $w^\top$ and biases $c$ in layer 1, every hidden unit computes the same
# number $s = w^\top x + c$, so the output depends on $x$ only through $s$. It is
# $\hat y = \sigma(u_3\, \sigma(u_2\, \sigma(s) + c_2) + c_3)$ for some scalars $u, c$, a composition of
# monotone maps, hence monotone in $s$: $\hat y = \tfrac12$ at (at most) one value $s^*$, and the boundary
# is the line $w^\top x + c = s^*$. The check: moving any input along the line's direction
# $d \perp w$ leaves ŷ unchanged, to float32 rounding.

# %%
w = trained["zeros"][0].W[0]
d = (jnp.array([-w[1], w[0]]) / jnp.linalg.norm(w))[None, :]  # ⊥ w, as a row
predict = jax.jit(lambda params, x: jaxmlp.forward(params, x, activation=act, output_activation="sigmoid"))
shift = max(float(jnp.max(jnp.abs(predict(trained["zeros"], x_tr + t * d) - predict(trained["zeros"], x_tr))))
            for t in (-2.0, -0.5, 0.5, 2.0))
shift_xavier = max(float(jnp.max(jnp.abs(predict(trained["xavier"], x_tr + t * d) - predict(trained["xavier"], x_tr))))
                   for t in (-2.0, -0.5, 0.5, 2.0))
print(f"max |ŷ(x + t d) - ŷ(x)| over the training inputs, |t| <= 2: zeros {shift:.1e}, xavier {shift_xavier:.2f}")
assert shift < 1e-5 and shift_xavier > 0.1

# %%
grid = jnp.linspace(-2.5, 2.5, 201)
gx, gy = jnp.meshgrid(grid, grid)
points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)

fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), gridspec_kw=dict(width_ratios=[1, 1.7]))
for row, (init, params) in zip(axes, trained.items()):
    W1b1 = np.concatenate([np.asarray(params[0].W), np.asarray(params[0].b)[:, None]], axis=1)
    vmax = np.abs(W1b1).max()
    im = row[0].imshow(W1b1, cmap="PuOr_r", vmin=-vmax, vmax=vmax, aspect="auto")
    row[0].set_xticks([0, 1, 2], ["$W_{j1}$", "$W_{j2}$", "$b_j$"])
    row[0].set_yticks(range(W1b1.shape[0]))
    row[0].set(ylabel="hidden unit j of layer 1", title=f"{init}: layer 1 after training")
    fig.colorbar(im, ax=row[0], label="weight or bias value")
    p = predict(params, points).reshape(gx.shape)
    filled = row[1].contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
    row[1].contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    row[1].scatter(*x_tr.T, c=y_tr.ravel(), cmap="coolwarm", edgecolors="k", s=10)
    row[1].set(xlabel="$x_1$", ylabel="$x_2$", aspect="equal",
               title=f"{init}: ŷ = P(y = 1 | x), black line ŷ = 0.5")
    fig.colorbar(filled, ax=row[1], label="ŷ = P(y = 1 | x)")
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

var = {}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, activation in zip(axes, ["tanh", "relu"]):
    for color, init in zip(["C0", "C3"], ["xavier", "he"]):
        params = jaxmlp.init_mlp(key, [n] * (depth + 2), init=init)
        _, cache = jaxmlp.forward_with_cache(params, x, activation=activation)
        var_a = [float(jnp.var(cache.a[l])) for l in range(depth + 1)]
        var_z = [float(jnp.var(cache.z[l])) for l in range(1, depth + 1)]
        slope = float(jnp.mean(jaxmlp.activations.get(activation).grad(cache.z[depth])))
        var[activation, init] = (var_a, var_z, slope)
        ax.plot(range(depth + 1), var_a, "o-", color=color, label=f"{init}: Var(a[l])")
        ax.plot(range(1, depth + 1), var_z, ":", color=color, label=f"{init}: Var(z[l])")
        print(f"{activation:>4} {init:>6}: Var(a[10]) = {var_a[-1]:.2e}, Var(z[10]) = {var_z[-1]:.2e}, "
              f"Var(z[10]) / Var(z[1]) = {var_z[-1] / var_z[0]:.2e}, mean σ'(z[10]) = {slope:.2f}")
    ax.set(yscale="log", xlabel="layer l", title=f"{activation}, width {n}", xticks=range(depth + 1))
    ax.legend(fontsize=8)
axes[0].set_ylabel("variance over batch and units")
fig.tight_layout()
plt.show()

# %% [markdown]
# ReLU with Xavier loses half its variance per layer: nine halvings from $z[1]$ to $z[10]$ are
# $2^{-9} \approx 2 \times 10^{-3}$; with He the variance of $z[l]$ holds steady (within a factor of 2 over
# the ten layers). tanh with Xavier decays slowly (tanh shrinks everything but the smallest $z$, yet
# $\operatorname{Var}(a[10])$ stays above $10^{-2}$); with He its pre-activations are larger, closer to
# saturation, where σ' is small: the mean σ'(z[10]) is lower than with Xavier. Match the scheme to the
# activation: Xavier for tanh and sigmoid, He for the ReLU family.

# %%
var_a, var_z, _ = var["relu", "xavier"]
assert 2 ** -9 / 3 < var_z[-1] / var_z[0] < 3 * 2 ** -9
var_a, var_z, _ = var["relu", "he"]
assert 0.5 < var_z[-1] / var_z[0] < 2
var_a, var_z, slope_xavier = var["tanh", "xavier"]
assert 1e-2 < var_a[-1] < var_a[1]
assert var["tanh", "he"][2] < slope_xavier
