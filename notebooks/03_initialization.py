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
# The lesson's section 7 makes three claims: weights initialized to zero cannot learn ("no symmetry
# breaking"); Xavier (Glorot) initialization suits sigmoid and tanh; He initialization suits ReLU. This
# notebook checks each of them on the MLP of notebook 2, whose forward and backward passes we import in
# plain `jax.numpy` from `mlp_by_hand.py`:
#
# 1. **Zeros, step by step**: which gradients are exactly 0, and why every unit of a layer stays a copy
#    of the others.
# 2. **Zeros against Xavier, trained**: what the copies cost, and why the boundary is exactly a line.
# 3. **Ten layers**: the variance of the activations going forward and of the deltas δ going backward,
#    layer by layer, for tanh and ReLU under Xavier and He, with histograms.
# 4. **Vanishing gradients, measured**: the gradient norm of every layer during the training of
#    10-layer sigmoid, tanh and ReLU networks.
#
# The equations of notebook 2 that we need, for one example, with $a[0] = x$ and $\delta[l] = \partial L/\partial z[l]$:
#
# $$z[l] = W[l]\, a[l-1] + b[l], \qquad a[l] = \sigma(z[l]) \qquad (1)$$
#
# $$\delta[L] = a[L] - y \quad \text{(sigmoid output with binary cross-entropy, or softmax with cross-entropy)} \qquad (2)$$
#
# $$\delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l]) \qquad (3)$$
#
# $$\frac{\partial L}{\partial W[l]} = \delta[l]\, a[l-1]^\top, \qquad \frac{\partial L}{\partial b[l]} = \delta[l] \qquad (4)$$
#
# For a batch, the loss is the mean over the examples: (2) gets a factor $1/n$ and (4) sums over the
# examples. Gradient descent with learning rate η then updates every parameter θ:
#
# $$\theta \leftarrow \theta - \eta\, \frac{\partial L}{\partial \theta} \qquad (5)$$
#
# The initialization schemes, for $W[l]$ of shape $(n_\text{out}, n_\text{in})$ and biases at 0:
#
# $$\text{Xavier: } W \sim \mathcal N\!\left(0, \tfrac{2}{n_\text{in} + n_\text{out}}\right) \qquad (6)
# \qquad\qquad \text{He: } W \sim \mathcal N\!\left(0, \tfrac{2}{n_\text{in}}\right) \qquad (7)$$

# %%
import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import mlp_by_hand as mh  # notebook 2's forward and backward, in plain jax.numpy
import numpy as np

from jaxmlp import datasets  # only to load the data sets

FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
print(inspect.getsource(mh.backward))

# %% [markdown]
# That is the whole backward pass: `delta` starts as (2) (with the batch mean's $1/n$), each loop turn
# applies (4) and then (3). `params` is a list of `(W, b)` pairs, `W` of shape $(n_\text{out}, n_\text{in})$,
# and a batch `X` has one example per row, so a layer computes `X @ W.T + b`.
#
# **Random numbers in JAX.** JAX has no hidden global random state. A *key*, `jax.random.key(0)`, goes
# into every random function; `jax.random.split(key, n)` makes `n` new independent keys. The same key
# always gives the same numbers, so every figure below is reproducible. Here are (6) and (7) in code:

# %%
def init_params(key, sizes, scheme):
    """A list of (W, b), one per layer: W of shape (n_out, n_in) drawn by `scheme`, b = 0."""
    params = []
    for k, n_in, n_out in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
        std = {"zeros": 0.0, "xavier": np.sqrt(2 / (n_in + n_out)), "he": np.sqrt(2 / n_in)}[scheme]  # (6), (7)
        params.append((std * jax.random.normal(k, (n_out, n_in)), jnp.zeros(n_out)))
    return params


key = jax.random.key(0)
W, _ = init_params(key, [784, 256], "xavier")[0]
print(f"Xavier, 784 -> 256: std of W = {float(W.std()):.4f}, sqrt(2 / (784 + 256)) = {np.sqrt(2 / 1040):.4f}")

# %% [markdown]
# ## 1. Zero initialization, one step at a time
#
# Take `[2, 8, 8, 1]` ($L = 3$) on the two moons, with a sigmoid output and the binary cross-entropy.
# With every $W[l] = 0$ and $b[l] = 0$, each hidden unit has $z = 0$, so $a[l] = \sigma(0)$ in every
# hidden layer: ½ for the sigmoid, 0 for tanh and ReLU. The output is $\sigma(0) = \tfrac12$ for every
# input. Then, at the first step:
#
# - **Output layer.** $\delta[L] = a[L] - y = \tfrac12 - y$ is not 0, so $\partial L / \partial b[L]$, the
#   mean of $\delta[L]$, is not 0 (unless exactly half the labels are 1), and $\partial L / \partial W[L]$,
#   the mean of $\delta[L]\, a[L-1]^\top$, is the same number in every entry, $\sigma(0)$ times that mean.
#   For tanh and ReLU, $a[L-1] = 0$, so **$W[L]$ gets no gradient either**: only $b[L]$ moves.
# - **Hidden layers.** By (3), $\delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l]) = 0$ **because
#   $W[l+1] = 0$**, whatever σ' is. So by (4) the gradients of $W[l]$ and $b[l]$ are 0 for every $l < L$.
#   For $l = 1$ the input $a[0] = x$ is not 0; the gradient is 0 because $\delta[1]$ is.
#
# What happens next depends on σ(0):
#
# - **tanh, ReLU** ($\sigma(0) = 0$): after step 1 only $b[L]$ has changed, so every $W$ is still 0 and
#   every hidden $a$ is still 0, and step 2 is step 1 again. By induction **no weight ever moves**: the
#   network is the constant $\sigma(b[L])$, with any optimizer whose update is 0 for a zero gradient
#   (gradient descent, momentum and Adam all are).
# - **sigmoid** ($\sigma(0) = \tfrac12$): step 1 sets $W[L]$ to a nonzero constant row, so at step 2
#   $\delta[L-1] = W[L]^\top \delta[L] \odot \sigma'(0)$ is nonzero, the same in every unit, and $W[L-1]$
#   moves (every entry alike, since $a[L-2] = \tfrac12$ in every unit); $\delta[1]$ is still 0 because
#   $W[2]$ still is. At step 3, $W[2] \ne 0$ and $W[1]$ moves too, every row by the same $\delta[1]_j x^\top$,
#   since $\delta[1]_j$ is the same in every unit $j$. The weights move, but every unit of a layer moves
#   identically.
#
# We check every one of these claims on a minibatch of 32 examples with three steps of (5), η = 0.5.
# `params` is a list of tuples of arrays, what JAX calls a **pytree**; `jax.tree.map(f, params, grads)`
# applies `f` to each pair of matching arrays (leaves) of two pytrees of the same structure, so (5) for
# every parameter at once is one line. And `jax.jit(f)` compiles `f` with XLA the first time it is called
# for given argument shapes (and given values of the arguments declared static, here the activation and
# loss names); later calls run the compiled code. Without it, JAX runs (and compiles) one operation at a time.

# %%
x_tr, y_tr, x_te, y_te = datasets.load("moons")  # y: (N, 1) of 0/1
sizes = [2, 8, 8, 1]
xb, yb = x_tr[:32], y_tr[:32]
print(f"{len(x_tr)} training examples, fraction with y = 1: {float(jnp.mean(y_tr)):.3f}; "
      f"in the minibatch: {float(jnp.mean(yb)):.3f}")
assert len(x_tr) == 320 and float(jnp.mean(y_tr)) == 0.5 and float(jnp.mean(yb)) != 0.5


def gd_step(params, grads, eta):
    return jax.tree.map(lambda p, g: p - eta * g, params, grads)  # (5)


backward = jax.jit(mh.backward, static_argnums=(3, 4))  # mh.backward(params, X, Y, activation, loss), compiled


steps = {}  # activation -> [(params before the step, grads of the step)] for steps 1, 2, 3
for act in ("sigmoid", "tanh", "relu"):
    params, steps[act] = init_params(key, sizes, "zeros"), []
    for t in (1, 2, 3):
        grads = backward(params, xb, yb, act, "bce")
        steps[act].append((params, grads))
        print(f"{act:>7} step {t}: max |dL/dW[l]|, max |dL/db[l]| for l = 1, 2, 3:  "
              + "   ".join(f"{float(jnp.abs(dW).max()):.1e}, {float(jnp.abs(db).max()):.1e}" for dW, db in grads))
        params = gd_step(params, grads, 0.5)

# %%
nonzero = lambda a: bool(jnp.any(a != 0))
# Step 1, every σ: hidden layers get exactly zero gradient (δ[l] = 0 because W[l+1] = 0), b[L] does not.
for act in steps:
    _, g = steps[act][0]
    assert not any(nonzero(dW) or nonzero(db) for dW, db in g[:2]) and nonzero(g[2][1])
# sigmoid: step 1 moves W[3] (all entries equal), step 2 also W[2], step 3 also W[1], with identical rows.
(_, g1), (_, g2), (_, g3) = steps["sigmoid"]
assert nonzero(g1[2][0]) and bool(jnp.all(g1[2][0] == g1[2][0][0, 0]))
assert not nonzero(g2[0][0]) and nonzero(g2[1][0]) and bool(jnp.all(g2[1][0] == g2[1][0][0, 0]))
assert nonzero(g3[0][0]) and bool(jnp.all(g3[0][0] == g3[0][0][:1]))
# tanh and ReLU: a[L-1] = 0, so W[L] is frozen too, at every step; only b[L] moves.
for act in ("tanh", "relu"):
    for params, g in steps[act]:
        assert not any(nonzero(dW) for dW, _ in g) and not any(nonzero(W) for W, _ in params)
        assert not any(nonzero(db) for _, db in g[:2]) and nonzero(g[2][1])
# On the whole (balanced) training set even δ[L] sums to 0: zero init is a stationary point there.
g_full = backward(init_params(key, sizes, "zeros"), x_tr, y_tr, "sigmoid", "bce")
largest = max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(g_full))
print(f"whole training set, step 1, sigmoid: largest |gradient| = {largest:.1e}")
assert largest < 1e-8  # 0 up to the float32 rounding of the sum

# %% [markdown]
# The training set holds exactly as many 1s as 0s, so on all of it the mean of $\delta[L] = \tfrac12 - y$
# is 0: full-batch gradient descent from zeros would not move at all (the printed number is the float32
# rounding of that sum of 320 terms $\pm\tfrac{1}{640}$). Minibatches are not balanced, which is why the
# steps above used one.
#
# ## 2. Zeros against Xavier, trained
#
# Now we train the sigmoid network `[2, 8, 8, 1]` from zeros and from Xavier (the scheme the lesson gives
# for sigmoid) with **minibatch stochastic gradient descent** (SGD): each **epoch** shuffles the 320
# training examples into 10 minibatches of 32 and applies (5) once per minibatch, with the gradient of that
# minibatch's mean loss. Notebook 4 treats optimizers in detail; here (5) is all we need.
#
# The loop is compiled whole: `jax.lax.scan(step, carry, xs)` runs `carry, out = step(carry, x)` for every
# `x` in `xs` and stacks the `out`s, as one compiled loop, and `jax.jit` compiles the whole of `train`.
# Our `train` scans over epochs, and inside each epoch over its minibatches. It records, at every step,
# the norm of each layer's weight gradient, and after each epoch the mean loss on the whole training set and
# the mean square $\mathbb E[a[l]^2]$ of every hidden layer's activations on it (we use these in section 4). The loss is computed from the output layer's $z[L]$ (the logits): the same
# number as `mh.loss_value`, without taking the log of a probability that has rounded to 0.

# %%
def loss_from_logits(params, X, Y, act, loss):
    """mh.loss_value(params, X, Y, act, loss), computed from z[L]: no log(0) when a probability rounds to 0."""
    z = mh.forward(params, X, act, loss)[0][-1]
    if loss == "bce":  # -y log σ(z) - (1 - y) log(1 - σ(z)) = log(1 + e^z) - y z
        return jnp.mean(jnp.logaddexp(0.0, z) - Y * z)
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.sum(Y * z, axis=1))  # softmax cross-entropy


def train(params, X, Y, key, *, act, loss, eta, epochs, batch):
    """Minibatch SGD with mh.backward: (params, per-step gradient norm of each W[l], loss after each epoch,
    E[a[l]²] of each hidden layer l on X after each epoch)."""
    n_batches = len(X) // batch

    def sgd_step(params, idx):
        grads = mh.backward(params, X[idx], Y[idx], act, loss)
        norms = jnp.stack([jnp.linalg.norm(dW) for dW, _ in grads])
        return gd_step(params, grads, eta), norms

    def epoch(params, k):
        order = jax.random.permutation(k, len(X))[: n_batches * batch].reshape(n_batches, batch)
        params, norms = jax.lax.scan(sgd_step, params, order)
        hidden = mh.forward(params, X, act, loss)[1][1:-1]  # a[1], ..., a[L-1] on the whole of X
        mean_squares = jnp.stack([jnp.mean(A ** 2) for A in hidden])
        return params, (norms, loss_from_logits(params, X, Y, act, loss), mean_squares)

    params, (norms, losses, mean_squares) = jax.lax.scan(epoch, params, jax.random.split(key, epochs))
    return params, norms.reshape(epochs * n_batches, -1), losses, mean_squares


train = jax.jit(train, static_argnames=("act", "loss", "epochs", "batch"))
p0 = init_params(key, sizes, "xavier")
print("loss_from_logits - mh.loss_value:",
      float(loss_from_logits(p0, x_tr, y_tr, "sigmoid", "bce") - mh.loss_value(p0, x_tr, y_tr, "sigmoid", "bce")))


def distinct_units(params):
    """Per hidden layer, how many units differ: distinct rows of [W[l] | b[l]] (incoming weights and bias)."""
    return tuple(len(np.unique(np.column_stack([W, b]), axis=0)) for W, b in params[:-1])


def accuracy(params, X, Y, act):
    return float(jnp.mean((mh.forward(params, X, act, "bce")[1][-1] > 0.5) == (Y > 0.5)))


trained = {}
for scheme in ("zeros", "xavier"):
    params = init_params(key, sizes, scheme)
    before = distinct_units(params)
    trained[scheme], _, losses, _ = train(params, x_tr, y_tr, jax.random.key(1), act="sigmoid", loss="bce",
                                          eta=1.0, epochs=200, batch=32)
    print(f"{scheme:>6}: distinct hidden units per layer before {before}, after {distinct_units(trained[scheme])}; "
          f"training loss {float(losses[-1]):.3f}, test accuracy {accuracy(trained[scheme], x_te, y_te, 'sigmoid'):.1%}")
assert distinct_units(trained["zeros"]) == (1, 1) and distinct_units(trained["xavier"]) == (8, 8)
acc_zeros, acc_xavier = (accuracy(trained[s], x_te, y_te, "sigmoid") for s in ("zeros", "xavier"))
assert acc_xavier > acc_zeros + 0.05

tanh_params, _, _, _ = train(init_params(key, sizes, "zeros"), x_tr, y_tr, jax.random.key(1), act="tanh",
                             loss="bce", eta=1.0, epochs=200, batch=32)
moved = [(nonzero(W), nonzero(b)) for W, b in tanh_params]
print("tanh from zeros after 200 epochs, (W[l] moved, b[l] moved) for l = 1, 2, 3:", moved)
assert moved == [(False, False), (False, False), (False, True)]

# %% [markdown]
# From zeros, the sigmoid network's weights *do* move, but its 8 + 8 hidden units remain 1 + 1 distinct
# units after 2,000 steps: the network is in effect `[2, 1, 1, 1]`, and it classifies the test set worse
# than the Xavier network, whose 8 + 8 units all differ. The tanh network from zeros never moves a weight,
# as derived.
#
# The zero-initialized network's decision boundary is **exactly a straight line**, not nearly one: with
# identical rows $w^\top$ and biases $c$ in layer 1, every hidden unit computes the same number
# $s = w^\top x + c$, so the output depends on $x$ only through $s$. It is
# $\hat y = \sigma(u_3\, \sigma(u_2\, \sigma(s) + c_2) + c_3)$ for some scalars $u_2, u_3, c_2, c_3$, a
# composition of monotone maps, hence monotone in $s$: $\hat y = \tfrac12$ at (at most) one value $s^*$,
# and the boundary is the line $w^\top x + c = s^*$. The check: moving any input along the line's direction
# $d \perp w$ leaves ŷ unchanged, to float32 rounding.

# %%
@jax.jit
def predict(params, X):
    return mh.forward(params, X, "sigmoid", "bce")[1][-1]


w = trained["zeros"][0][0][0]  # row 0 of W[1]; every row is the same
d = (jnp.array([-w[1], w[0]]) / jnp.linalg.norm(w))[None, :]  # ⊥ w, as a row
shift = {s: max(float(jnp.abs(predict(trained[s], x_tr + t * d) - predict(trained[s], x_tr)).max())
                for t in (-2.0, -0.5, 0.5, 2.0)) for s in trained}
print(f"max |ŷ(x + t d) - ŷ(x)| over the training inputs, |t| <= 2: zeros {shift['zeros']:.1e}, "
      f"xavier {shift['xavier']:.2f}")
assert shift["zeros"] < 1e-5 and shift["xavier"] > 0.1

# %%
grid = jnp.linspace(-2.5, 2.5, 121)
gx, gy = jnp.meshgrid(grid, grid)
points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)

fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), gridspec_kw=dict(width_ratios=[1, 1.7]))
for row, (scheme, params) in zip(axes, trained.items()):
    W1b1 = np.column_stack([params[0][0], params[0][1]])
    vmax = np.abs(W1b1).max()
    im = row[0].imshow(W1b1, cmap="PuOr_r", vmin=-vmax, vmax=vmax, aspect="auto")
    row[0].set_xticks([0, 1, 2], ["$W_{j1}$", "$W_{j2}$", "$b_j$"])
    row[0].set_yticks(range(W1b1.shape[0]))
    row[0].set(ylabel="hidden unit j of layer 1", title=f"{scheme}: layer 1 after training")
    fig.colorbar(im, ax=row[0], label="weight or bias value")
    p = predict(params, points).reshape(gx.shape)
    filled = row[1].contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
    row[1].contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    row[1].scatter(*x_tr.T, c=y_tr.ravel(), cmap="coolwarm", edgecolors="k", s=10)
    row[1].set(xlabel="$x_1$", ylabel="$x_2$", aspect="equal",
               title=f"{scheme}: ŷ = P(y = 1 | x), black line ŷ = 0.5")
    fig.colorbar(filled, ax=row[1], label="ŷ = P(y = 1 | x)")
fig.tight_layout()
fig.savefig(FIGURES / "03_zeros_vs_xavier.png", dpi=110)
plt.show()

# %% [markdown]
# Top: from zeros, the eight rows of $W[1]$ are one row repeated, and the boundary is a line. Bottom:
# Xavier's random start gives eight different units, which bend the boundary around the moons.
#
# ## 3. Ten layers: the signal forward and the deltas backward
#
# Symmetry is broken by any random start. The *scale* of that start decides what reaches the deep
# layers. Take independent zero-mean weights, biases 0, and $a[l-1]$ independent of $W[l]$. Each
# $z[l]_j = \sum_k W[l]_{jk}\, a[l-1]_k$ is a sum of $n_\text{in}$ independent terms of mean 0, so
#
# $$\operatorname{Var}(z[l]_j) = n_\text{in} \operatorname{Var}(W[l])\; \mathbb E\big[a[l-1]^2\big] \qquad (8)$$
#
# Backwards, by (3), $\delta[l]_j = \sigma'(z[l]_j) \sum_k W[l+1]_{kj}\, \delta[l+1]_k$, a sum over the
# $n_\text{out}$ units that $W[l+1]$ feeds, and the same argument (treating the weights as independent of the
# δs, which holds well for wide layers, as the measurements below confirm) gives
#
# $$\mathbb E\big[\delta[l]_j^2\big] = n_\text{out} \operatorname{Var}(W[l+1])\; \mathbb E\big[\sigma'(z[l])^2\big]\;
#   \mathbb E\big[\delta[l+1]^2\big] \qquad (9)$$
#
# For σ(z) = z, keeping the forward signal asks $n_\text{in}\operatorname{Var}(W) = 1$ and keeping the
# backward one $n_\text{out}\operatorname{Var}(W) = 1$; both can hold only when $n_\text{in} = n_\text{out}$.
# **Xavier** (Glorot and Bengio) compromises with the average, $\tfrac12(n_\text{in} + n_\text{out})
# \operatorname{Var}(W) = 1$: that is (6). **He** (He et al.) keeps the forward condition for ReLU, which
# zeroes half of $z$: $\tfrac12 n_\text{in} \operatorname{Var}(W) = 1$, that is (7).
#
# Below every hidden layer is square, $n_\text{in} = n_\text{out} = n$, so each layer multiplies the forward
# signal by $n\operatorname{Var}(W)\, \mathbb E[\sigma(z)^2] / \operatorname{Var}(z)$ and the backward one by
# $\chi = n\operatorname{Var}(W)\, \mathbb E[\sigma'(z)^2]$. Both factors contain $n\operatorname{Var}(W)$,
# which is **1 for Xavier and 2 for He**; what σ keeps is the second factor, and it is the *mean square* of
# σ', not its mean, that counts.
#
# - **ReLU**: $\mathbb E[\mathrm{relu}(z)^2] = \tfrac12 \operatorname{Var}(z)$ and $\sigma'(z)^2 = 1$ on
#   half the units, so both factors are $\tfrac12 n\operatorname{Var}(W)$: ½ per layer with Xavier, exactly
#   1 with He.
# - **tanh**: $\tanh(z)^2 < z^2$ and $\tanh'(z)^2 < 1$, so with Xavier both factors are below 1; they
#   approach 1 as the signal shrinks, since tanh(z) ≈ z near 0. With He they are $2\times$ those
#   numbers: the forward variance settles where tanh loses exactly half of it, and whether δ grows or
#   shrinks depends on $\mathbb E[\tanh'(z)^2]$ at that variance. We measure it.
#
# We push 512 inputs $x \sim \mathcal N(0, I)$ through ten hidden layers of width 256 and a 10-class softmax
# output, with random labels and the cross-entropy loss. To see δ for **each example**, we use
# `jax.vmap`: `jax.vmap(f)` turns a function of one example into a function of a batch, mapping over the
# leading axis of its arguments. Run on a batch of one example, `mh.backward` returns
# $\partial \ell/\partial b[l] = \delta[l]$ of that example (4), and its weight gradient
# $\delta[l]\, a[l-1]^\top$. `jax.vmap` does this for the 512 examples at once.

# %%
n, depth, B = 256, 10, 512
X = jax.random.normal(jax.random.key(1), (B, n))
Y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (B,), 0, 10), 10)


def per_example_grads(params, X, Y, act, loss):
    """mh.backward on each example alone: every leaf gets a leading axis of length B."""
    return jax.vmap(lambda x, y: mh.backward(params, x[None], y[None], act, loss))(X, Y)


@jax.jit
def signals(params_by_act):
    """For each activation: Var(z[l]), E[a[l]²] and Var(a[l]) (a[0] = x), E[δ[l]²], rms per-example |∂ℓ/∂W[l]|,
    E[σ'(z[l])²]."""
    out = {}
    for act, params in params_by_act.items():
        Zs, As = mh.forward(params, X, act, "ce")
        grads = per_example_grads(params, X, Y, act, "ce")
        dsigma = mh.ACTIVATIONS[act][1]
        out[act] = dict(
            var_z=jnp.stack([jnp.var(Z) for Z in Zs[:depth]]),                    # l = 1..10
            ms_a=jnp.stack([jnp.mean(A ** 2) for A in As[:depth + 1]]),           # E[a[l]²], l = 0..10, as in (8)
            var_a=jnp.stack([jnp.var(A) for A in As[:depth + 1]]),                # Var(a[l]), l = 0..10
            delta_sq=jnp.stack([jnp.mean(db ** 2) for _, db in grads[:depth]]),   # l = 1..10
            # |δ aᵀ| = |δ| |a| for an outer product: the per-example weight gradient's norm, from (4)
            grad_norm=jnp.stack([jnp.sqrt(jnp.mean(jnp.sum(db ** 2, axis=1) * jnp.sum(A ** 2, axis=1)))
                                 for (_, db), A in zip(grads[:depth], As[:depth])]),
            dsigma_sq=jnp.stack([jnp.mean(dsigma(Z) ** 2) for Z in Zs[:depth]]),
            deltas=[db for _, db in grads[:depth]], activations=As[1:depth + 1])
    return out


sig = {}
for scheme in ("xavier", "he"):
    params = init_params(jax.random.key(3), [n] * (depth + 1) + [10], scheme)
    for act, s in signals({"tanh": params, "relu": params}).items():
        sig[act, scheme] = jax.tree.map(np.asarray, s)
        gain = float(n * jnp.var(params[1][0]))  # n Var(W) of a hidden layer: 1 (Xavier) or 2 (He)
        s = sig[act, scheme]
        s["gain"] = gain
        s["chi_measured"] = s["delta_sq"][:-1] / s["delta_sq"][1:]     # E[δ[l]²] / E[δ[l+1]²], l = 1..9
        s["chi_predicted"] = gain * s["dsigma_sq"][:-1]                # (9): n Var(W) E[σ'(z[l])²]
        s["forward_factor"] = s["ms_a"][1:] / s["ms_a"][:-1]           # E[a[l]²] / E[a[l-1]²]
print(f"{'':13} {'n Var(W)':>8} {'E[a[10]²]':>10} {'Var(z[10])/Var(z[1])':>20} {'E[δ[1]²]/E[δ[10]²]':>18} "
      f"{'rms |∂ℓ/∂W[1]| / |∂ℓ/∂W[10]|':>28} {'χ in layers 5-9, measured / (9)':>31}")
for (act, scheme), s in sig.items():
    print(f"{act + ', ' + scheme:13} {s['gain']:8.2f} {s['ms_a'][-1]:10.3f} {s['var_z'][-1] / s['var_z'][0]:20.2e} "
          f"{s['delta_sq'][0] / s['delta_sq'][-1]:18.2e} {s['grad_norm'][0] / s['grad_norm'][-1]:28.2f} "
          f"{s['chi_measured'][4:].mean():15.2f} / {s['chi_predicted'][4:].mean():.2f}")

# %%
def tidy_log_axis(ax, ticks=None):
    """A log-scale y axis labelled on its decades only, or on `ticks` written plainly (0.5, 1, 2)."""
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    if ticks is not None:
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])


fig, axes = plt.subplots(3, 2, figsize=(12, 11), sharex=True)
styles = {"xavier": ("C0", "Xavier, n Var(W) = 1"), "he": ("C3", "He, n Var(W) = 2")}
for col, act in enumerate(("tanh", "relu")):
    for scheme, (color, label) in styles.items():
        s = sig[act, scheme]
        axes[0, col].plot(range(depth + 1), s["ms_a"], "o-", color=color, label=f"{label}: E[a[l]²]")
        axes[0, col].plot(range(1, depth + 1), s["var_z"], ":", color=color, label=f"{label}: Var(z[l])")
        axes[1, col].plot(range(1, depth + 1), s["delta_sq"] / s["delta_sq"][-1], "o-", color=color, label=label)
        axes[2, col].plot(range(1, depth + 1), s["grad_norm"] / s["grad_norm"][-1], "o-", color=color, label=label)
    axes[0, col].set_title(f"{act}: forward, E[a[l]²] (the input of (8)) and Var(z[l])")
    axes[1, col].set_title(f"{act}: backward, E[δ[l]²] relative to layer 10")
    axes[2, col].set_title(f"{act}: per-example |∂ℓ/∂W[l]| (rms) relative to layer 10")
    axes[2, col].set_xlabel("layer l")
    for ax in axes[:, col]:
        ax.set(yscale="log", xticks=range(depth + 1))
        ax.axhline(1.0, color="0.5", lw=0.6)
        ax.legend(fontsize=9)
        tidy_log_axis(ax)
    axes[2, col].set_ylim(0.5, 2)
    tidy_log_axis(axes[2, col], ticks=[0.5, 1, 2])
fig.suptitle("Ten hidden layers of width 256 at initialization, 512 Gaussian inputs", fontsize=12)
fig.tight_layout()
fig.savefig(FIGURES / "03_variance_ten_layers.png", dpi=110)
plt.show()

# %% [markdown]
# What the figure and the table show. The forward panels plot $\mathbb E[a[l]^2]$, the quantity that (8)
# carries from one layer to the next, not $\operatorname{Var}(a[l])$: for tanh, whose outputs average about 0,
# the two are nearly equal, but a ReLU output is never negative, and for $z \sim \mathcal N(0, v)$
# $\mathbb E[\mathrm{relu}(z)^2] = v/2$ while $\operatorname{Var}(\mathrm{relu}(z)) = v\,(\tfrac12 - \tfrac1{2\pi})
# \approx 0.34\, v$ (both measured below, on average over the layers of the ReLU network with He).
#
# - **ReLU with Xavier** halves both signals in every layer, as (8) and (9) predict: from $z[1]$ to
#   $z[10]$ the variance falls by about $2^{-9} \approx 2 \times 10^{-3}$, and so does $\mathbb E[\delta^2]$
#   from layer 10 down to layer 1. The output then hardly depends on the input: the logits $z[11]$ are so
#   small that every example's softmax output is within 0.012 of the uniform 1/10 (with He it strays up to 0.48
#   from it; printed below), and every weight gradient is scaled down with the signal. **ReLU with He** keeps both within a factor of 2 over the ten layers: the
#   doubled $\operatorname{Var}(W)$ exactly pays for the half of the units that ReLU zeroes.
# - **tanh with Xavier** does lose signal: $\mathbb E[a^2]$ falls from 1 (the input) to about 0.05
#   at layer 10, some 20 times less, and $\mathbb E[\delta^2]$ at layer 1 is about 12 times smaller than at
#   layer 10. But the loss slows down as the signal shrinks (tanh(z) ≈ z near 0): the forward factor per
#   layer rises from 0.4 at layer 1 to about 0.9 at layer 10 (printed below), and χ is about 0.85 in
#   layers 5–9. And the two losses cancel in the weight gradient $\delta[l]\, a[l-1]^\top$ of (4): going
#   down, $\delta$ shrinks while $a[l-1]$ grows, and each layer's per-example weight gradient has about the
#   same norm (bottom row, within a factor 1.5).
# - **tanh with He** holds $\mathbb E[a^2]$ near 0.3, but this is not the fix it is for ReLU: (9)
#   has $n \operatorname{Var}(W) = 2$ times $\mathbb E[\tanh'(z)^2] \approx 0.55$ at that variance, so in
#   the deep layers each layer *multiplies* $\mathbb E[\delta^2]$ by χ ≈ 1.1 going down, a geometric
#   growth that compounds with depth (Exercise 4 measures it over 30 layers). Near the input, where
#   $\operatorname{Var}(z[1]) = 2$ saturates more units, χ is below 1, so at ten layers the net effect is small.
#   (For tanh the forward factor is the $\mathbb E[\sigma(z)^2]/\operatorname{Var}(z)$ of (8), measured as
#   $\mathbb E[a[l]^2] / \mathbb E[a[l-1]^2]$.)
#
# For tanh, then, Xavier's $n\operatorname{Var}(W) = 1$ keeps every layer's backward factor below 1 and rising
# toward 1, so nothing grows geometrically with depth, and the weight gradients stay balanced across layers;
# He's $n\operatorname{Var}(W) = 2$ trades a steady forward variance for deltas that grow layer by layer.
# (The theory of signal propagation in deep random networks, Poole et al. 2016 and Schoenholz et al. 2017, puts
# the boundary between the two behaviours at exactly $n\operatorname{Var}(W) = 1$ for tanh with zero biases; Exercise 4 also measures the gain 5/3 that PyTorch recommends
# for tanh.) At ten layers both are usable, as section 4 shows in training; the difference is one of depth.
# For ReLU, He is the right choice and Xavier is not: Xavier's signal halves at every layer, so a ReLU network
# under Xavier starts with an output that ignores its input and gradients scaled down with depth; section 4
# shows what that costs in training.

# %%
print("tanh, Xavier: forward factor E[a[l]²] / E[a[l-1]²], l = 1..10:",
      np.round(sig["tanh", "xavier"]["forward_factor"], 2))
print("tanh, He: E[tanh'(z[l])²], l = 1..10:", np.round(sig["tanh", "he"]["dsigma_sq"], 2))
s = sig["relu", "he"]
ms_ratio, var_ratio = s["ms_a"][1:] / s["var_z"], s["var_a"][1:] / s["var_z"]
print(f"relu, He, mean over the ten layers: E[a[l]²] / Var(z[l]) = {ms_ratio.mean():.3f} (½), "
      f"Var(a[l]) / Var(z[l]) = {var_ratio.mean():.3f} (½ - 1/2π = {0.5 - 0.5 / np.pi:.3f})")
assert abs(ms_ratio.mean() - 0.5) < 0.03 and abs(var_ratio.mean() - (0.5 - 0.5 / np.pi)) < 0.03
uniform_gap = {}
for scheme in ("xavier", "he"):
    p_out = mh.forward(init_params(jax.random.key(3), [n] * (depth + 1) + [10], scheme), X, "relu", "ce")[1][-1]
    uniform_gap[scheme] = float(jnp.abs(p_out - 0.1).max())
print(f"relu: largest |softmax output - 1/10| over the 512 examples and 10 classes: Xavier "
      f"{uniform_gap['xavier']:.4f}, He {uniform_gap['he']:.2f}")
assert 0.01 < uniform_gap["xavier"] < 0.0125 and 0.45 < uniform_gap["he"] < 0.5
s = sig["relu", "xavier"]
assert 2 ** -9 / 3 < s["var_z"][-1] / s["var_z"][0] < 3 * 2 ** -9
assert 2 ** -9 / 3 < s["delta_sq"][0] / s["delta_sq"][-1] < 3 * 2 ** -9
s = sig["relu", "he"]
assert 0.5 < s["var_z"][-1] / s["var_z"][0] < 2 and 0.5 < s["delta_sq"][0] / s["delta_sq"][-1] < 2
s = sig["tanh", "xavier"]
assert 0.04 < s["ms_a"][-1] < 0.065  # 1 / 0.05 = 20
assert 1 / 15 < s["delta_sq"][0] / s["delta_sq"][-1] < 1 / 10  # about 1/12
assert 0.3 < s["forward_factor"][0] < 0.5 and 0.85 < s["forward_factor"][-1] < 0.95
assert 0.8 < s["chi_measured"][4:].mean() < 0.9
assert np.all(s["grad_norm"] / s["grad_norm"][-1] < 1.5) and np.all(s["grad_norm"] / s["grad_norm"][-1] > 1 / 1.5)
s = sig["tanh", "he"]
assert np.all((0.25 < s["ms_a"][4:]) & (s["ms_a"][4:] < 0.35))
assert np.all((0.5 < s["dsigma_sq"][4:]) & (s["dsigma_sq"][4:] < 0.6))
assert 1.05 < s["chi_measured"][4:].mean() < 1.15 and 1.05 < s["chi_predicted"][4:].mean() < 1.15
assert s["chi_measured"][0] < 1

# %% [markdown]
# ### Histograms per layer
#
# The variances summarize distributions. Here are the distributions themselves, for the same four
# networks: the activations $a[l]$ of every layer (left), and the size of every example's deltas,
# $\log_{10} |\delta[l]_j|$ (right), one curve per layer from light (layer 1) to dark (layer 10).

# %%
fig, axes = plt.subplots(4, 2, figsize=(11, 12))
cmap = plt.get_cmap("viridis_r")
for row, (act, scheme) in zip(axes, [("tanh", "xavier"), ("tanh", "he"), ("relu", "xavier"), ("relu", "he")]):
    s = sig[act, scheme]
    bins = np.linspace(-1, 1, 81) if act == "tanh" else np.linspace(0, 3, 61)
    for l in range(depth):
        color = cmap(0.15 + 0.85 * l / (depth - 1))
        a = s["activations"][l].ravel()
        row[0].hist(a[a != 0], bins=bins, histtype="step", density=True, color=color,
                    label=f"l = {l + 1}" if l in (0, depth - 1) else None)
        row[1].hist(np.log10(np.abs(s["deltas"][l]).ravel() + 1e-30), bins=np.linspace(-5, 0, 76),
                    histtype="step", density=True, color=color, label=f"l = {l + 1}" if l in (0, depth - 1) else None)
    row[0].set(title=f"{act}, {scheme}: activations a[l]", xlabel="a", ylabel="density", yscale="log")
    row[1].set(title=f"{act}, {scheme}: per-example deltas", xlabel="log10 |δ[l]_j|", ylabel="density")
    row[0].legend(fontsize=9)
    row[1].legend(fontsize=9)
    tidy_log_axis(row[0])
fig.tight_layout()
fig.savefig(FIGURES / "03_histograms.png", dpi=110)
plt.show()

# %% [markdown]
# - **tanh, Xavier**: the activations narrow layer by layer around 0 (the variance loss above), and the
#   delta histograms move left, layer 1's by about half a decade from layer 10's.
# - **tanh, He**: the activations keep their spread; a visible share of them sits near ±1, where
#   $\tanh' \approx 0$ (the printed shares below). The delta histograms stay nearly in place
#   ($\mathbb E[\delta^2]$ varies by less than a factor 2 across the layers).
# - **ReLU**: about half the units have $z \le 0$, so $a = 0$ exactly and, by (3), $\delta = 0$ (neither is
#   drawn: the histograms show the other half). The positive activations shrink layer by layer with Xavier
#   and keep their spread with He; the nonzero deltas move left by about 1.4 decades from layer 10 to layer 1
#   with Xavier ($\sqrt{2}^{\,-9} \approx 10^{-1.35}$: E[δ²] halves per layer) and stay in place with He.

# %%
for act, scheme in [("tanh", "xavier"), ("tanh", "he")]:
    a = sig[act, scheme]["activations"]
    print(f"{act}, {scheme}: share of |a| > 0.9 in layers 1, 5, 10: "
          + ", ".join(f"{float(np.mean(np.abs(a[l]) > 0.9)):.1%}" for l in (0, 4, 9)))
sat_he = float(np.mean(np.abs(sig["tanh", "he"]["activations"][9]) > 0.9))
sat_xavier = float(np.mean(np.abs(sig["tanh", "xavier"]["activations"][9]) > 0.9))
zero_share = [float(np.mean(sig["relu", s]["activations"][9] == 0)) for s in ("xavier", "he")]
print(f"relu: share of a[10] exactly 0: Xavier {zero_share[0]:.1%}, He {zero_share[1]:.1%}")
median_shift = {s: float(np.median(np.log10(np.abs(sig["relu", s]["deltas"][9][sig["relu", s]["deltas"][9] != 0])))
                         - np.median(np.log10(np.abs(sig["relu", s]["deltas"][0][sig["relu", s]["deltas"][0] != 0]))))
                for s in ("xavier", "he")}
print("relu: median log10|δ| of layer 10 minus layer 1:", {s: round(v, 2) for s, v in median_shift.items()})
assert sat_he > 0.05 > sat_xavier and all(0.4 < z < 0.6 for z in zero_share)
assert sig["tanh", "he"]["delta_sq"].max() / sig["tanh", "he"]["delta_sq"].min() < 2
assert 1.1 < median_shift["xavier"] < 1.7 and abs(median_shift["he"]) < 0.3

# %% [markdown]
# ## 4. Vanishing gradients, measured during training
#
# The last question is what these scales do to learning. Notebook 1 measured the gradient reaching each layer
# of an untrained network; here we follow every layer's gradient through training, with the initialization as
# the variable. We train five networks with ten hidden layers of
# width 64 on scikit-learn's 8×8 digits (64 inputs, 10 classes, softmax output with cross-entropy, so (2)
# holds), with minibatch SGD at the same η = 0.1, minibatches of 64, for 20 epochs (440 steps):
# sigmoid with Xavier (the lesson's pairing), tanh with Xavier, tanh with He, ReLU with Xavier and ReLU with
# He. For every step we record $\|\partial L / \partial W[l]\|$ (the Frobenius norm, the root of the sum of
# squares) of every layer, the speed at which that layer learns: by (5), the step of $W[l]$ is η times that
# norm; and after every epoch the mean square $\mathbb E[a[l]^2]$ of each hidden layer's activations, to see
# whether the forward signal of section 3 survives training.

# %%
xd_tr, yd_tr, xd_te, yd_te = datasets.load("digits")  # y: integer labels 0..9
Yd_tr = jax.nn.one_hot(yd_tr, 10)  # mh's cross-entropy takes one-hot targets
deep = [64] + [64] * 10 + [10]
runs = [("sigmoid", "xavier"), ("tanh", "xavier"), ("tanh", "he"), ("relu", "xavier"), ("relu", "he")]
epochs, batch = 20, 64
history = {}
for act, scheme in runs:
    params = init_params(jax.random.key(4), deep, scheme)
    loss0 = float(loss_from_logits(params, xd_tr, Yd_tr, act, "ce"))
    norms0 = np.array([float(jnp.linalg.norm(dW)) for dW, _ in backward(params, xd_tr, Yd_tr, act, "ce")])
    ms0 = np.array([float(jnp.mean(A ** 2)) for A in mh.forward(params, xd_tr, act, "ce")[1][1:-1]])
    params, norms, losses, mean_squares = train(params, xd_tr, Yd_tr, jax.random.key(5), act=act, loss="ce",
                                                eta=0.1, epochs=epochs, batch=batch)
    test_acc = float(jnp.mean(jnp.argmax(mh.forward(params, xd_te, act, "ce")[1][-1], axis=1) == yd_te))
    history[act, scheme] = dict(norms0=norms0, norms=np.asarray(norms), losses=np.r_[loss0, np.asarray(losses)],
                                test_acc=test_acc, mean_squares=np.vstack([ms0, np.asarray(mean_squares)]))
    print(f"{act:>7}, {scheme:>6}: at init |dW[1]| / |dW[10]| = {norms0[0] / norms0[9]:.1e}; "
          f"training loss {loss0:.2f} -> {float(losses[-1]):.4f}, test accuracy {test_acc:.1%}")

# %%
steps_per_epoch = len(xd_tr) // batch
fig, axes = plt.subplots(2, 3, figsize=(16, 9))
cmap = plt.get_cmap("viridis_r")
for ax, (act, scheme) in zip(axes.ravel(), runs):
    per_epoch = history[act, scheme]["norms"].reshape(epochs, steps_per_epoch, -1).mean(axis=1)
    for l in range(10):
        ax.plot(range(1, epochs + 1), per_epoch[:, l], color=cmap(0.15 + 0.85 * l / 9),
                label=f"W[{l + 1}]" if l in (0, 4, 9) else None)
    ax.set(yscale="log", xlabel="epoch", ylabel="|∂L/∂W[l]|, mean over the epoch's steps", ylim=(1e-8, 1e2),
           xticks=[1, 5, 10, 15, 20], title=f"{act}, {scheme}: gradient norm of each layer")
    ax.legend(loc="lower right", ncol=3)
    tidy_log_axis(ax)
loss_ax = axes[1, 2]
loss_ax.axhline(np.log(10), color="k", ls="-", lw=0.6, label="log 10 (uniform guess)")
for act, scheme in runs:
    loss_ax.plot(range(epochs + 1), history[act, scheme]["losses"], {"sigmoid": ":", "tanh": "-", "relu": "--"}[act],
                 color=styles[scheme][0], lw=2, label=f"{act}, {scheme}")
loss_ax.set(yscale="log", xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss",
            xticks=[0, 5, 10, 15, 20])
loss_ax.legend()
tidy_log_axis(loss_ax)
fig.suptitle("Ten hidden layers of width 64 on digits, SGD η = 0.1 (gradient norms: light W[1], dark W[10]; "
             "losses: blue Xavier, red He)", fontsize=12)
fig.tight_layout()
fig.savefig(FIGURES / "03_gradient_norms_training.png", dpi=110)
plt.show()

# %% [markdown]
# - **sigmoid with Xavier: the gradients vanish.** At initialization the first layer's gradient is a few
#   $10^{-6}$ times the tenth's, and it stays below $10^{-4}$ times it: in 440 steps $W[1]$ barely moves. (9) explains it:
#   $\sigma'(z) \le \tfrac14$, so with $n\operatorname{Var}(W) = 1$ each layer multiplies $\mathbb E[\delta^2]$
#   by at most $\tfrac1{16}$ (Exercise 3). The loss stays within 0.02 of $\log 10 \approx 2.30$, a uniform guess over
#   ten classes: this network does not learn in 20 epochs.
# - **tanh, either scheme, and ReLU with He** learn: at initialization and in every epoch, every layer's
#   gradient is within a factor of 5 of every other's (printed below), and the training loss falls below 0.05.
# - For **ReLU with He**, the first layer's gradient starts about 2.5 times smaller than the tenth's, though
#   in section 3 (Gaussian inputs, width 256) each *example's* gradient had about the same size in every
#   layer. The difference is in
#   the sum over the batch in (4): ReLU's outputs are all ≥ 0, and layer after layer they make different
#   examples' activations more alike (printed below: the mean cosine between two examples' $a[l]$ grows
#   from 0 for the inputs to about 0.8), so the per-example gradients of the deep layers point in more
#   similar directions and add up instead of cancelling.

# %%
h = history["sigmoid", "xavier"]
ratio_sigmoid = h["norms"][:, 0] / h["norms"][:, 9]
print(f"sigmoid, Xavier: |dW[1]| / |dW[10]| over all steps: {ratio_sigmoid.min():.1e} .. {ratio_sigmoid.max():.1e}; "
      f"final loss {h['losses'][-1]:.3f}, log 10 = {np.log(10):.3f}")
assert 1e-7 < h["norms0"][0] / h["norms0"][9] < 1e-5 and ratio_sigmoid.max() < 1e-4
assert abs(h["losses"][-1] - np.log(10)) < 0.02
for run in [("tanh", "xavier"), ("tanh", "he"), ("relu", "he")]:
    h = history[run]
    per_epoch = h["norms"].reshape(epochs, steps_per_epoch, -1).mean(axis=1)
    spread = max(h["norms0"].max() / h["norms0"].min(), (per_epoch.max(axis=1) / per_epoch.min(axis=1)).max())
    print(f"{run}: largest ratio between two layers' gradient norms, at init and in any epoch: {spread:.1f}")
    assert h["losses"][-1] < 0.05 and spread < 5
h = history["relu", "he"]
Zs, As = mh.forward(init_params(jax.random.key(4), deep, "he"), xd_tr, "relu", "ce")
cosines = []
for A in As[:10]:  # a[0] = x, ..., a[9]: the inputs of W[1], ..., W[10]
    U = A / jnp.linalg.norm(A, axis=1, keepdims=True)
    C = U @ U.T
    cosines.append(float((C.sum() - jnp.trace(C)) / (C.size - len(C))))  # mean over pairs of examples
print("relu, He: |dW[1]| / |dW[10]| at init:", round(h["norms0"][0] / h["norms0"][9], 2),
      "; mean cosine between two examples' a[l-1], l = 1..10:", np.round(cosines, 2))
assert 0.3 < h["norms0"][0] / h["norms0"][9] < 0.5 and abs(cosines[0]) < 0.05 and 0.75 < cosines[-1] < 0.9

# %% [markdown]
# - **ReLU with Xavier** starts where section 3 said it would: every layer's gradient is about 1 to 3 % of He's
#   (the same network with hidden-layer weights $\sqrt 2$ times smaller), and the output hardly depends on the input, so the
#   loss sits at $\log 10$ through the first epoch (2.296 after it, against He's 1.99). It is not stuck, as the
#   sigmoid network is: the gradients, small as they are, reach every layer alike (within a factor 5, like He's),
#   and SGD grows the weights until the signal passes. But it loses epochs doing what He's scale gives from the
#   start: after 5 epochs its loss is 1.68 against He's 0.21, and it ends 8 times higher (0.008 against 0.001).
#   Both end at about the same test accuracy (95.8 % and 95.3 %): at ten layers Xavier costs ReLU time, not the
#   result. Deeper, what Xavier loses compounds: the forward signal shrinks as $2^{-\text{depth}}$ (Exercise 5).
# - **The activations during training** (printed below: $\mathbb E[a[l]^2]$ of layers 1, 5 and 10). The
#   initialization sets the forward signal at the start only. In the sigmoid network, which does not learn, it
#   stays where it was. In the others the deep layers' activations grow as the weights grow: with tanh and
#   Xavier, $\mathbb E[a[10]^2]$ rises from 0.05 to 0.46 in 20 epochs, undoing the shrinking of section 3; with
#   ReLU it grows without bound (a tanh unit saturates at 1, a ReLU does not), from 0.25 to 14 with He and from
#   0.00025 to 9 with Xavier.

# %%
for act, scheme in runs:
    ms = history[act, scheme]["mean_squares"]
    print(f"{act:>7}, {scheme:>6}: E[a[l]²] for l = 1, 5, 10 at init " + ", ".join(f"{ms[0, l]:.2g}" for l in (0, 4, 9))
          + "; after epoch 1 " + ", ".join(f"{ms[1, l]:.2g}" for l in (0, 4, 9))
          + "; after epoch 20 " + ", ".join(f"{ms[-1, l]:.2g}" for l in (0, 4, 9)))
xavier, he = history["relu", "xavier"], history["relu", "he"]
print("relu: |dW[l]| at init, Xavier / He, l = 1..11:", np.round(xavier["norms0"] / he["norms0"], 3))
print("relu: training loss after epochs 1, 5, 10, 20: Xavier", np.round(xavier["losses"][[1, 5, 10, 20]], 3),
      "He", np.round(he["losses"][[1, 5, 10, 20]], 3), f"; test accuracy Xavier {xavier['test_acc']:.1%}, "
      f"He {he['test_acc']:.1%}")
per_epoch = xavier["norms"].reshape(epochs, steps_per_epoch, -1).mean(axis=1)
spread = max(xavier["norms0"].max() / xavier["norms0"].min(), (per_epoch.max(axis=1) / per_epoch.min(axis=1)).max())
print(f"relu, Xavier: largest ratio between two layers' gradient norms, at init and in any epoch: {spread:.1f}")
ratio = xavier["norms0"] / he["norms0"]
assert np.all((0.008 < ratio) & (ratio < 0.035)) and spread < 5
assert round(float(xavier["losses"][1]), 3) == 2.296 and abs(xavier["losses"][1] - np.log(10)) < 0.01
assert round(float(he["losses"][1]), 2) == 1.99 and round(float(xavier["losses"][5]), 2) == 1.68
assert round(float(he["losses"][5]), 2) == 0.21 and round(float(xavier["losses"][20]), 3) == 0.008
assert round(float(he["losses"][20]), 3) == 0.001 and 7 < xavier["losses"][20] / he["losses"][20] < 9
assert round(xavier["test_acc"], 3) == 0.958 and round(he["test_acc"], 3) == 0.953
ms = {run: history[run]["mean_squares"] for run in runs}
assert np.allclose(ms["sigmoid", "xavier"][-1], ms["sigmoid", "xavier"][0], rtol=0.1)
assert round(float(ms["tanh", "xavier"][0, 9]), 2) == 0.05 and round(float(ms["tanh", "xavier"][-1, 9]), 2) == 0.46
assert round(float(ms["relu", "he"][0, 9]), 2) == 0.25 and round(float(ms["relu", "he"][-1, 9])) == 14
assert round(float(ms["relu", "xavier"][0, 9]), 5) == 0.00025 and round(float(ms["relu", "xavier"][-1, 9])) == 9

# %% [markdown]
# ## Summary
#
# - Zero weights keep every unit of a layer identical forever (sigmoid) or never move at all (tanh, ReLU):
#   randomness is what breaks the symmetry (any equal start has the same problem, Exercise 2).
# - The scale of the random start decides what reaches the deep layers. Forward and backward, each layer
#   multiplies the signal by a factor that contains $n\operatorname{Var}(W)$ — 1 for Xavier, 2 for He —
#   times what σ keeps, $\mathbb E[\sigma(z)^2]/\operatorname{Var}(z)$ forward and $\mathbb E[\sigma'(z)^2]$
#   backward, (8)–(9).
# - ReLU keeps half: He's factor 2 makes both passes neutral on average. tanh keeps nearly everything of a
#   small signal: Xavier's factor 1 loses signal only slowly (not geometrically), with balanced weight
#   gradients, while He's 2 makes the deltas grow geometrically with depth. The sigmoid keeps at most $\tfrac1{16}$ of
#   $\mathbb E[\delta^2]$ per layer: our ten-layer sigmoid network did not learn at all in 20 epochs of SGD.
#   ReLU under Xavier loses half per layer: at ten layers it learns, but only after epochs spent growing its
#   weights to the scale He starts from.
# - Initialization fixes the scale at the start; training then moves it (the deep activations grew in every
#   network that learned).

# %% [markdown]
# ## Exercises
#
# 1. **Check (6) and (7) by sampling.** Draw the weights of a 512 → 256 layer with `init_params` for each
#    scheme, and check that their sample variance is within 2 % of $2/(n_\text{in} + n_\text{out})$ and
#    $2/n_\text{in}$.
# 2. **Symmetry is about equality, not zero.** Initialize the sigmoid network `[2, 8, 8, 1]` with every
#    weight equal to 0.3 (biases 0) and train it as in section 2. How many distinct hidden units does each
#    layer have at the end? Why?
# 3. **The sigmoid's bound.** Show that $\sigma'(z) = \sigma(z)(1 - \sigma(z)) \le \tfrac14$, so that with
#    Xavier on square layers (9) gives $\chi \le \tfrac1{16}$. Measure $\mathbb E[\delta[l]^2] /
#    \mathbb E[\delta[l+1]^2]$ for $l = 1, \dots, 9$ in the sigmoid network of section 3 (ten layers of width
#    256, Xavier) and check that each is below $\tfrac1{16}$.
# 4. **Depth 30.** Repeat section 3's backward measurement for tanh with thirty hidden layers of width 256.
#    Compare $\mathbb E[\delta[1]^2] / \mathbb E[\delta[30]^2]$ under Xavier, He, and PyTorch's recommended
#    gain for tanh, $\operatorname{std}(W) = \tfrac53 / \sqrt{n_\text{in}}$ (so $n\operatorname{Var}(W) = 25/9
#    \approx 2.8$, the scaling used in *Zero to Hero*). Which ones grow geometrically with depth?
# 5. **A gain for ReLU.** With $\operatorname{Var}(W) = c / n_\text{in}$, (8) predicts that each ReLU layer
#    multiplies $\operatorname{Var}(z)$ by $c/2$. Check $\operatorname{Var}(z[10]) / \operatorname{Var}(z[1])
#    \approx (c/2)^9$ for $c = 1, 2, 3$ at width 512.

# %% [markdown]
# ## Solutions

# %% [markdown]
# **1.** The sample variance of $512 \times 256 = 131{,}072$ draws is within about 0.4 % (its standard
# error, $\sqrt{2/131072}$) of the true one.

# %%
for scheme, target in [("xavier", 2 / (512 + 256)), ("he", 2 / 512)]:
    W, _ = init_params(jax.random.key(10), [512, 256], scheme)[0]
    print(f"{scheme}: sample Var(W) = {float(jnp.var(W)):.3e}, formula {target:.3e}")
    assert abs(float(jnp.var(W)) / target - 1) < 0.02

# %% [markdown]
# **2.** All the weights of a layer are equal, so every hidden unit of that layer computes the same $z$, receives
# the same δ by (3) and the same update by (4)–(5): the units start equal and stay equal, exactly as from
# zeros. The only difference with zeros is that the hidden layers get a gradient from the first step.

# %%
constant = [(jnp.full_like(W, 0.3), b) for W, b in init_params(key, sizes, "zeros")]
params, _, _, _ = train(constant, x_tr, y_tr, jax.random.key(1), act="sigmoid", loss="bce", eta=1.0, epochs=200, batch=32)
print("constant 0.3: distinct hidden units per layer after training:", distinct_units(params))
assert distinct_units(params) == (1, 1)

# %% [markdown]
# **3.** With $s = \sigma(z) \in (0, 1)$, $s(1 - s) = \tfrac14 - (s - \tfrac12)^2 \le \tfrac14$, so
# $\mathbb E[\sigma'(z)^2] \le \tfrac1{16}$ and with $n\operatorname{Var}(W) = 1$ (9) gives $\chi \le \tfrac1{16}$.
# Measured (each ratio is below 1/16 = 0.0625; the sigmoid's $z$ are not all near 0, so σ' is often smaller):

# %%
params = init_params(jax.random.key(3), [n] * (depth + 1) + [10], "xavier")
delta_sq = np.asarray(signals({"sigmoid": params})["sigmoid"]["delta_sq"])
ratios = delta_sq[:-1] / delta_sq[1:]
print("sigmoid, Xavier: E[δ[l]²] / E[δ[l+1]²], l = 1..9:", np.round(ratios, 4))
assert np.all(ratios < 1 / 16)

# %% [markdown]
# **4.** Over ten layers (section 3) the ratio was 0.08 with Xavier and 1.05 with He. Over thirty, He's deltas
# grow about ninefold from layer 30 down to layer 1: once the forward variance has settled, every layer
# multiplies E[δ²] by χ ≈ 1.1, geometrically. The gain 5/3 grows them faster still. Xavier's shrink to about
# 0.03, far less than a geometric decay at its rate over the first ten layers would give
# ($0.08^{29/9} \approx 3 \times 10^{-4}$): its per-layer factor keeps rising toward 1.

# %%
X30 = X[:256]


@jax.jit
def delta_sq_deep(params):
    grads = per_example_grads(params, X30, Y[:256], "tanh", "ce")
    return jnp.stack([jnp.mean(db ** 2) for _, db in grads[:-1]])


growth = {}
for scheme in ("xavier", "he", "gain 5/3"):
    params = init_params(jax.random.key(3), [n] * 31 + [10], "he" if scheme == "he" else "xavier")
    if scheme == "gain 5/3":  # Xavier's std on the square layers is 1/sqrt(n): scale it to (5/3)/sqrt(n)
        params = [(W * 5 / 3, b) if W.shape[0] == W.shape[1] else (W, b) for W, b in params]
    d = np.asarray(delta_sq_deep(params))
    growth[scheme] = d[0] / d[-1]
    print(f"tanh, {scheme}, 30 layers: E[δ[1]²] / E[δ[30]²] = {growth[scheme]:.2f}")
assert growth["gain 5/3"] > growth["he"] > 5 and 0.01 < growth["xavier"] < 0.06
assert growth["xavier"] > 10 * 0.08 ** (29 / 9)

# %% [markdown]
# **5.** The forward factor is $n\operatorname{Var}(W) \cdot \tfrac12 = c/2$ per layer, and by (9) so is the backward
# one, $n\operatorname{Var}(W)\, \mathbb E[\sigma'(z)^2] = c \cdot \tfrac12$: $c = 2$ (He) is the only gain that
# neither loses nor gains.

# %%
x512 = jax.random.normal(jax.random.key(6), (512, 512))
for c in (1.0, 2.0, 3.0):
    params = [(np.sqrt(c / 2) * W, b) for W, b in init_params(jax.random.key(7), [512] * 11, "he")]  # Var(W) = c / n
    Zs, _ = mh.forward(params, x512, "relu", "mse")
    measured, predicted = float(jnp.var(Zs[9]) / jnp.var(Zs[0])), (c / 2) ** 9
    print(f"c = {c}: Var(z[10]) / Var(z[1]) = {measured:.3g}, (c/2)^9 = {predicted:.3g}")
    assert 0.5 < measured / predicted < 2
