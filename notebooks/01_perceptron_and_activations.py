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
# one-layer network `sizes = [n_in, 1]`, and the same line is the forward pass of `jaxmlp.backprop`,
# with $a[0] = x$:
#
# $$z[l] = W[l]\, a[l-1] + b[l] \quad (F1), \qquad a[l] = \sigma(z[l]) \quad (F2).$$
#
# This notebook draws the activations σ and their derivatives, shows that stacking layers *without*
# an activation buys nothing, that one hidden layer *with* an activation solves XOR, which a single
# neuron cannot, and what the universal approximation theorem does and does not promise.
#
# Every number the text quotes is checked by an `assert` on the numbers just computed: if a change
# to the library made the text false, the notebook would stop with an error.

# %%
import math

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
assert jnp.allclose(y_hat, by_hand, rtol=1e-6)

# %% [markdown]
# ## Activations and their derivatives
#
# Backpropagation (notebook 2) multiplies by σ'(z) once per layer, so every activation comes with its
# derivative. jaxmlp writes each derivative by hand next to its function (`jaxmlp.activations`):
#
# | | $\sigma(z)$ | $\sigma'(z)$ | |
# |---|---|---|---|
# | sigmoid | $1/(1+e^{-z})$ | $\sigma(z)(1-\sigma(z))$ | (A1) |
# | tanh | $\tanh z$ | $1-\tanh^2 z$ | (A2) |
# | ReLU | $\max(z, 0)$ | $1$ if $z>0$ else $0$ | (A3) |
# | leaky ReLU | $z$ if $z \ge 0$ else $\alpha z$ | $1$ if $z \ge 0$ else $\alpha$ | (A4) |
# | GELU | $z\,\Phi(z)$ | $\Phi(z) + z\,\varphi(z)$ | (A5) |
#
# For GELU, $\Phi(z) = \tfrac12\left(1 + \operatorname{erf}(z/\sqrt2)\right)$ is the standard normal
# cumulative distribution function and $\varphi(z) = e^{-z^2/2}/\sqrt{2\pi}$ its density
# ($\Phi' = \varphi$, so $\sigma'$ is the product rule). Leaky ReLU's slope is $\alpha = 0.01$.
#
# Below, the solid line is σ, the dashed line the hand-written `activations.get(name).grad`, and the
# dots are `jax.grad(σ)` evaluated point by point: they must lie on the dashed line. (Leaky ReLU's
# α = 0.01 is hard to see; its left branch is nearly flat.)

# %%
names = ["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]
z = jnp.linspace(-4.0, 4.0, 401)
z_dots = jnp.linspace(-4.0, 4.0, 33)

fig, axes = plt.subplots(1, len(names), figsize=(16, 3.4), sharex=True)
for ax, name in zip(axes, names):
    act = activations.get(name)
    autodiff = jax.vmap(jax.grad(act.fn))(z)
    gap = float(jnp.max(jnp.abs(act.grad(z) - autodiff)))
    assert gap < 1e-6, (name, gap)  # the hand-written σ' is jax.grad's, to float32 rounding
    ax.plot(z, act.fn(z), lw=2, label="σ(z)")
    ax.plot(z, act.grad(z), "--", lw=2, label="σ'(z), by hand")
    ax.plot(z_dots, jax.vmap(jax.grad(act.fn))(z_dots), "k.", ms=4, label="jax.grad(σ)")
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_title(f"{name}\nmax |by hand - jax.grad| = {gap:.1e}", fontsize=9)
    ax.set_xlabel("z")
axes[0].set_ylabel("σ(z) and σ'(z)")
axes[0].legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# Sigmoid and tanh saturate: for $|z| \gtrsim 4$ their derivative is almost 0. At the kink z = 0
# jaxmlp follows `jax.nn`: relu'(0) = 0, leaky_relu'(0) = 1.
#
# ## Why ReLU is the usual default for hidden layers
#
# Notebook 2 derives that the error signal δ of layer $l$ is that of layer $l+1$ multiplied by
# $W[l+1]^\top$ and by $\sigma'(z[l])$, once per layer. Over ten layers, ten factors σ' multiply:
#
# - sigmoid: $\sigma'(z) = \sigma(1-\sigma) \le \tfrac14$, so the ten factors shrink δ by at least
#   $4^{10} \approx 10^6$: the lower layers of a deep sigmoid network barely learn (the vanishing gradient);
# - tanh: $\sigma'(0) = 1$ but $\sigma' < 1$ everywhere else, and near 0 once the unit saturates;
# - ReLU: $\sigma'(z) = 1$ exactly for every active unit ($z > 0$), however large $z$ is: the product of
#   σ' along an active path is 1, and nothing saturates on the positive side.
#
# ReLU is also the cheapest activation (a comparison, no exponential), and with He initialization
# (notebook 3) the signal keeps its variance through many layers. Its weakness is the other side: a unit
# whose $z$ is negative for every input has σ' = 0 and receives no gradient at all (a "dead" unit).
# Leaky ReLU and GELU keep a little slope there, at a small cost; that is why they exist.

# %%
sigmoid, tanh, relu = (activations.get(n) for n in ("sigmoid", "tanh", "relu"))
z = jnp.linspace(-10.0, 10.0, 20001)  # contains z = 0
max_sigmoid_grad = float(jnp.max(sigmoid.grad(z)))
print(f"max σ'(z) over z in [-10, 10]: sigmoid {max_sigmoid_grad:.4f}, tanh {float(jnp.max(tanh.grad(z))):.4f}; "
      f"relu'(z) for z > 0: {np.unique(np.asarray(relu.grad(z[z > 0])))}")
print(f"ten sigmoid layers shrink δ by at least 1 / {1 / max_sigmoid_grad ** 10:.2e}")
assert abs(max_sigmoid_grad - 0.25) < 1e-6 and max_sigmoid_grad ** 10 < 1e-6
assert bool(jnp.all(relu.grad(z[z > 0]) == 1.0)) and float(relu.grad(jnp.array(0.0))) == 0.0
assert float(activations.get("leaky_relu").grad(jnp.array(0.0))) == 1.0
print(f"at z = 4: sigmoid' = {float(sigmoid.grad(jnp.array(4.0))):.4f}, tanh' = {float(tanh.grad(jnp.array(4.0))):.4f}")
assert float(sigmoid.grad(jnp.array(4.0))) < 0.02 and float(tanh.grad(jnp.array(4.0))) < 0.002  # saturated

# %% [markdown]
# ## Without an activation, depth collapses
#
# With σ the identity, the layers compose into one affine map:
#
# $$a[L] = W[L](\cdots(W[1]x + b[1])\cdots) + b[L] = W x + b, \qquad W = W[L]\cdots W[1].$$
#
# `jaxmlp.collapse_linear(params)` computes that single `Layer(W, b)`. A five-layer identity network and
# its collapse give the same outputs, to float32 rounding (below $10^{-5}$ here): however deep, it is
# linear regression.

# %%
deep = jaxmlp.init_mlp(key, [2, 16, 16, 16, 16, 3], init="xavier")
x = jax.random.normal(jax.random.key(1), (1000, 2))

deep_out = jaxmlp.forward(deep, x, activation="identity", output_activation="identity")
one = jaxmlp.collapse_linear(deep)
one_out = x @ one.W.T + one.b[None, :]
collapse_gap = float(jnp.max(jnp.abs(deep_out - one_out)))

print("layers:", [l.W.shape for l in deep], "-> one layer W", one.W.shape, "b", one.b.shape)
print(f"max |deep(x) - (W x + b)| over {len(x)} inputs = {collapse_gap:.2e}")
assert collapse_gap < 1e-5

# %% [markdown]
# ## XOR: one neuron fails, one hidden layer succeeds
#
# `datasets.load("xor")` fills the four quadrants; $y = 1$ where $x_1 x_2 > 0$. No line separates
# the two classes, so the perceptron `[2, 1]` can at best get three quadrants right (75 %). Trained
# on the cross-entropy it does worse still: the data are symmetric, so the line that minimizes the loss
# is the one that commits to nothing, ŷ ≈ ½ everywhere (loss ≈ ln 2 ≈ 0.693, accuracy near chance).
# The MLP `[2, 8, 1]` with tanh hidden units bends the boundary.
#
# **Training, in brief** (notebook 4 treats it in full). Both networks minimize the *binary
# cross-entropy* of the $n$ training examples, with $\hat y_i = \sigma(z[L]_i)$ the sigmoid output:
#
# $$L = -\frac1n \sum_{i=1}^{n} \left[ y_i \log \hat y_i + (1 - y_i) \log (1 - \hat y_i) \right] \quad (L2)$$
#
# (jaxmlp computes it from the logit $z$ as $\frac1n\sum_i [\operatorname{softplus}(z_i) - y_i z_i]$, the same
# number without overflow, (L4)). An *optimizer* repeatedly moves the parameters θ against the gradient
# $g = \partial L / \partial \theta$ that backpropagation computes. The simplest, gradient descent, takes
# $\theta \leftarrow \theta - \eta\, g$, where **η is the learning rate** (the step size). Here we use
# **Adam**, which divides each coordinate's step by a running root mean square of its past gradients, so
# that every parameter moves by about η per step whatever the scale of its gradient (its equations and its
# defaults, η = 1e-3, β₁ = 0.9, β₂ = 0.999, ε = 1e-8, are in notebook 4); η = 0.05 here. An **epoch** is one
# pass over the training set. `jaxmlp.fit` without a `batch_size` is *full batch*: each epoch is one
# step on the gradient of all $n$ examples (with `batch_size=32`, as in notebook 3, an epoch is instead a
# pass over shuffled *minibatches* of 32 examples, one step per minibatch). 300 epochs here are 300 steps.
# The backward pass is jaxmlp's hand-written one (hidden activation tanh; the perceptron has no hidden
# layer, so only its sigmoid output is used).

# %%
x_tr, y_tr, x_te, y_te = datasets.load("xor")
models, results = {}, {}
for sizes in ([2, 1], [2, 8, 1]):
    params = jaxmlp.init_mlp(key, sizes, init="xavier")
    params, history = jaxmlp.fit(params, x_tr, y_tr, optimizer=optim.adam(0.05), loss="bce",
                                 activation="tanh", epochs=300)
    test = jaxmlp.evaluate(params, x_te, y_te, loss="bce", activation="tanh")
    models[str(sizes)] = params
    results[str(sizes)] = (float(history["accuracy"][-1]), float(test["accuracy"]), float(history["loss"][-1]))
    print(f"{str(sizes):>10}: train accuracy {history['accuracy'][-1]:.1%}, "
          f"test accuracy {float(test['accuracy']):.1%}, final loss {history['loss'][-1]:.3f}")

train_acc, test_acc, final_loss = results["[2, 1]"]
assert train_acc <= 0.75 and test_acc <= 0.75       # no line gets more than three quadrants right
assert abs(final_loss - math.log(2)) < 0.01         # ŷ ≈ ½ everywhere: loss ≈ ln 2
train_acc, test_acc, final_loss = results["[2, 8, 1]"]
assert train_acc == 1.0 and test_acc >= 0.95         # one hidden layer solves XOR

# %%
grid = jnp.linspace(-2.0, 2.0, 201)
gx, gy = jnp.meshgrid(grid, grid)
points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
for ax, (name, params) in zip(axes, models.items()):
    p = jaxmlp.forward(params, points, activation="tanh", output_activation="sigmoid").reshape(gx.shape)
    filled = ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(*x_tr.T, c=y_tr.ravel(), cmap="coolwarm", edgecolors="k", s=14)
    ax.set_title(f"{name}: ŷ = P(y = 1 | x); black line ŷ = 0.5")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
fig.colorbar(filled, ax=axes, label="ŷ = P(y = 1 | x)", fraction=0.03)
plt.show()

# %% [markdown]
# The perceptron's boundary is a line, as it must be, and its ŷ stays near ½ (pale) everywhere; the hidden
# layer maps the four quadrants to a space where they *are* linearly separable, and the output neuron
# draws its line there.
#
# ## What one hidden layer can do: universal approximation
#
# The **universal approximation theorem** (Cybenko 1989, Hornik 1991; Leshno et al. 1993 for any
# non-polynomial σ, ReLU included) says: for any continuous function $f$ on a closed bounded set
# $K \subset \mathbb R^n$ and any tolerance $\varepsilon > 0$, there is a network with *one* hidden layer
# of $N$ units such that $|\,\text{net}(x) - f(x)| < \varepsilon$ for every $x \in K$.
#
# What it does **not** promise:
#
# - **how many units**: $N$ depends on $f$ and ε, and can be enormous;
# - **that training finds them**: it is a statement of existence, about weights, not about gradient
#   descent from a random start;
# - **anything outside $K$**, nor anything about generalization from finitely many samples.
#
# For ReLU in one dimension the existence is easy to see: a sum of ramps $c_k \max(x - x_k, 0)$ is
# the piecewise-linear interpolation of $f$ at the knots $x_k$, whose error shrinks like $1/N^2$. We build
# those weights by hand (no training) for $f(x) = \sin 2x$ on $K = [-\pi, \pi]$ as a `[1, N, 1]`
# jaxmlp network: $W[1] = \mathbf 1$, $b[1]_k = -x_k$, $W[2]_k = c_k$ (the change of slope at $x_k$),
# $b[2] = f(x_0)$.

# %%
def interpolating_relu_net(f, knots):
    """[1, N, 1] ReLU network equal to the piecewise-linear interpolation of f at the knots (N = len - 1)."""
    values = f(knots)
    slopes = np.diff(values) / np.diff(knots)
    c = np.diff(slopes, prepend=0.0)  # the first ramp starts with slope slopes[0], each next one bends it
    hidden = jaxmlp.Layer(jnp.ones((len(c), 1)), jnp.asarray(-knots[:-1], jnp.float32))
    out = jaxmlp.Layer(jnp.asarray(c[None, :], jnp.float32), jnp.asarray(values[:1], jnp.float32))
    return (hidden, out)


f = lambda x: np.sin(2 * x)
x_in = np.linspace(-np.pi, np.pi, 2001)[:, None]
x_all = np.linspace(-2 * np.pi, 2 * np.pi, 4001)[:, None]
outside = np.abs(x_all[:, 0]) > np.pi
errors = {}
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
axes[0].plot(x_all, f(x_all), "k", lw=3, alpha=0.3, label="f(x) = sin 2x")
for N in (8, 32, 128):
    net = interpolating_relu_net(f, np.linspace(-np.pi, np.pi, N + 1))
    y_in = np.asarray(jaxmlp.forward(net, jnp.asarray(x_in, jnp.float32), activation="relu"))
    y_all = np.asarray(jaxmlp.forward(net, jnp.asarray(x_all, jnp.float32), activation="relu"))
    errors[N] = (float(np.max(np.abs(y_in - f(x_in)))), float(np.max(np.abs(y_all - f(x_all))[outside])))
    print(f"N = {N:>2} hidden ReLU units: max |net - f| on [-π, π] = {errors[N][0]:.4f}, "
          f"outside it (|x| up to 2π) = {errors[N][1]:.1f}")
    axes[0].plot(x_all, y_all, lw=1.2, label=f"N = {N}")
    axes[1].plot(x_in, np.abs(y_in - f(x_in)), lw=1, label=f"N = {N}")
axes[0].axvspan(-np.pi, np.pi, color="C2", alpha=0.08, label="K = [-π, π]")
axes[0].set(xlabel="x", ylabel="output", ylim=(-3, 3), title="one hidden ReLU layer, weights built by hand")
axes[1].set(xlabel="x", ylabel="|net(x) - f(x)|", yscale="log", ylim=(1e-6, 30),
            title="error on K: falls as N grows")
axes[0].legend(fontsize=8, loc="lower left")
axes[1].legend(fontsize=8, loc="upper center", ncol=3)
fig.tight_layout()
plt.show()

# %% [markdown]
# On $K$, each fourfold increase of $N$ divides the worst error by more than 8, and by nearly 16 once $N$
# is large: it falls like $1/N^2$, the promise kept.
# Outside $K$ the network continues with its last straight ramp and is off by more than 1 (the
# function's whole range is $[-1, 1]$): the theorem never said otherwise.

# %%
assert errors[8][0] > errors[32][0] > errors[128][0] and errors[128][0] < 1e-2
assert 8 < errors[8][0] / errors[32][0] < 32 and 8 < errors[32][0] / errors[128][0] < 32  # about 1/N²
assert all(err_out > 1 for _, err_out in errors.values())

# %% [markdown]
# ## Takeaways
#
# - A neuron is $\sigma(w^\top x + b)$; its decision boundary is a hyperplane, so it cannot learn XOR.
# - Without a nonlinearity, any depth collapses to one affine map.
# - One hidden layer with a nonlinearity can approximate any continuous function on a bounded set
#   (universal approximation), but the theorem says nothing about the number of units, about whether
#   training finds the weights, or about inputs outside the set.
# - ReLU is the usual hidden activation: its derivative is exactly 1 where the unit is active, so δ does
#   not shrink through saturating factors (sigmoid's σ' is at most ¼ per layer), and it is cheap; dead
#   units are its failure mode, which leaky ReLU and GELU soften.
#
# The next notebook follows a deeper network layer by layer, forward and backward, and derives the
# backward pass from the chain rule.
