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
# # 1. From the perceptron to the MLP
#
# A single neuron takes an input $x \in \mathbb{R}^{n}$, forms a weighted sum and squashes it:
#
# $$z = w^\top x + b, \qquad \hat y = \sigma(z).$$
#
# In jaxmlp a network is a tuple of `Layer(W, b)` with `W` of shape `(n_out, n_in)`, so a neuron is the
# one-layer network `sizes = [n_in, 1]` and the same line is (F1)–(F2) of `jaxmlp.backprop`:
# $z[1] = W[1] a[0] + b[1]$, $a[1] = \sigma(z[1])$, with $a[0] = x$.
#
# This notebook draws the activations σ and their derivatives, shows that stacking layers *without*
# an activation buys nothing, and that one hidden layer *with* an activation solves XOR, which a
# single neuron cannot.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp
from jaxmlp import activations, datasets, optim

key = jax.random.key(0)

# %% [markdown]
# ## The single neuron
#
# `init_mlp(key, [2, 1])` is one neuron with two inputs: `W` is `(1, 2)` (the row $w^\top$), `b` is `(1,)`.
# With a sigmoid output, $\hat y = \sigma(w^\top x + b)$ is a probability, and the set $\hat y = \tfrac12$,
# i.e. $w^\top x + b = 0$, is a straight line: the decision boundary of a perceptron is always a line
# (a hyperplane in $n$ dimensions).

# %%
neuron = jaxmlp.init_mlp(key, [2, 1], init="xavier")
(W, b), = neuron
x = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]])

y_hat = jaxmlp.forward(neuron, x, output_activation="sigmoid")  # (F1)-(F2)
by_hand = jax.nn.sigmoid(x @ W.T + b[None, :])                  # z = wᵀx + b, ŷ = σ(z), batch-first
print("W =", W, " b =", b)
print("ŷ =", y_hat.ravel(), " by hand:", by_hand.ravel())

# %% [markdown]
# ## Activations and their derivatives
#
# Backpropagation needs σ'(z) in every layer ((B1)–(B2)). jaxmlp writes each derivative by hand next
# to its function (equations (A1)–(A5) in `jaxmlp.activations`):
#
# | | $\sigma(z)$ | $\sigma'(z)$ | |
# |---|---|---|---|
# | sigmoid | $1/(1+e^{-z})$ | $\sigma(z)(1-\sigma(z))$ | (A1) |
# | tanh | $\tanh z$ | $1-\tanh^2 z$ | (A2) |
# | ReLU | $\max(z, 0)$ | $1$ if $z>0$ else $0$ | (A3) |
# | leaky ReLU | $z$ if $z \ge 0$ else $\alpha z$ | $1$ if $z \ge 0$ else $\alpha$ | (A4) |
# | GELU | $z\,\Phi(z)$ | $\Phi(z) + z\,\varphi(z)$ | (A5) |
#
# Below, the solid line is σ, the dashed line the hand-written `activations.get(name).grad`, and the
# dots are `jax.grad(σ)` evaluated point by point: they must lie on the dashed line. (Leaky ReLU's
# α = 0.01 is hard to see; its left branch is nearly flat.)

# %%
names = ["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]
z = jnp.linspace(-4.0, 4.0, 401)
z_dots = jnp.linspace(-4.0, 4.0, 33)

fig, axes = plt.subplots(1, len(names), figsize=(16, 3.2), sharex=True)
for ax, name in zip(axes, names):
    act = activations.get(name)
    autodiff = jax.vmap(jax.grad(act.fn))(z)
    ax.plot(z, act.fn(z), lw=2, label="σ(z)")
    ax.plot(z, act.grad(z), "--", lw=2, label="σ'(z), by hand")
    ax.plot(z_dots, jax.vmap(jax.grad(act.fn))(z_dots), "k.", ms=4, label="jax.grad(σ)")
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_title(f"{name}\nmax |by hand - jax.grad| = {float(jnp.max(jnp.abs(act.grad(z) - autodiff))):.1e}",
                 fontsize=9)
    ax.set_xlabel("z")
axes[0].legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# Sigmoid and tanh saturate: for $|z| \gtrsim 4$ their derivative is almost 0, so the δ of (B2), which
# multiplies one σ'(z) per layer, shrinks geometrically with depth (the vanishing gradient). ReLU's
# derivative is exactly 1 on the positive side; leaky ReLU and GELU keep a little gradient on the
# negative side too. At the kink z = 0 jaxmlp follows `jax.nn`: relu'(0) = 0, leaky_relu'(0) = 1.

# %% [markdown]
# ## Without an activation, depth collapses
#
# With σ the identity, the layers compose into one affine map:
#
# $$a[L] = W[L](\cdots(W[1]x + b[1])\cdots) + b[L] = W x + b, \qquad W = W[L]\cdots W[1].$$
#
# `jaxmlp.collapse_linear(params)` computes that single `Layer(W, b)`. A five-layer identity network and
# its collapse give the same outputs, to float32 rounding: however deep, it is linear regression.

# %%
deep = jaxmlp.init_mlp(key, [2, 16, 16, 16, 16, 3], init="xavier")
x = jax.random.normal(jax.random.key(1), (1000, 2))

deep_out = jaxmlp.forward(deep, x, activation="identity", output_activation="identity")
one = jaxmlp.collapse_linear(deep)
one_out = x @ one.W.T + one.b[None, :]

print("layers:", [l.W.shape for l in deep], "-> one layer W", one.W.shape, "b", one.b.shape)
print(f"max |deep(x) - (W x + b)| over {len(x)} inputs = {float(jnp.max(jnp.abs(deep_out - one_out))):.2e}")

# %% [markdown]
# ## XOR: one neuron fails, one hidden layer succeeds
#
# `datasets.load("xor")` fills the four quadrants; $y = 1$ where $x_1 x_2 > 0$. No line separates
# the two classes, so the perceptron `[2, 1]` can at best get three quadrants right (75 %). Trained
# on the cross-entropy it does worse still: the data are symmetric, so the line that minimizes the loss
# is the one that commits to nothing, ŷ ≈ ½ everywhere (loss ≈ ln 2 ≈ 0.693, accuracy near chance).
# The MLP `[2, 8, 1]` with tanh hidden units bends the boundary. Both are trained with binary
# cross-entropy (L4) and Adam by `jaxmlp.fit`, full batch, with the hand-written backprop (hidden
# activation tanh; the perceptron has no hidden layer, so only its sigmoid output is used).

# %%
x_tr, y_tr, x_te, y_te = datasets.load("xor")
models = {}
for sizes in ([2, 1], [2, 8, 1]):
    params = jaxmlp.init_mlp(key, sizes, init="xavier")
    params, history = jaxmlp.fit(params, x_tr, y_tr, optimizer=optim.adam(0.05), loss="bce",
                                 activation="tanh", epochs=300)
    test = jaxmlp.evaluate(params, x_te, y_te, loss="bce", activation="tanh")
    models[str(sizes)] = params
    print(f"{str(sizes):>10}: train accuracy {history['accuracy'][-1]:.1%}, "
          f"test accuracy {float(test['accuracy']):.1%}, final loss {history['loss'][-1]:.3f}")

# %%
grid = jnp.linspace(-2.0, 2.0, 201)
gx, gy = jnp.meshgrid(grid, grid)
points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for ax, (name, params) in zip(axes, models.items()):
    p = jaxmlp.forward(params, points, activation="tanh", output_activation="sigmoid").reshape(gx.shape)
    ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(*x_tr.T, c=y_tr.ravel(), cmap="coolwarm", edgecolors="k", s=14)
    ax.set_title(f"{name}: ŷ = P(y = 1), boundary ŷ = 0.5")
    ax.set_xlabel("$x_1$")
    ax.set_aspect("equal")
axes[0].set_ylabel("$x_2$")
fig.tight_layout()
plt.show()

# %% [markdown]
# The perceptron's boundary is a line, as it must be; the hidden layer maps the four quadrants to a
# space where they *are* linearly separable, and the output neuron draws its line there. The next
# notebook follows a deeper network layer by layer, forward and backward.
