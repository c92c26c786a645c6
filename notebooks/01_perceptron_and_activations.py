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
# This notebook covers sections 1–3 of the lesson (the perceptron, activation functions, the multi-layer
# perceptron) and gives a first, short look at training, so that we can watch a network learn. Backpropagation,
# the algorithm that computes the gradients used for training, is derived in notebook 2; here JAX computes
# them for us.
#
# Contents:
#
# 1. The neuron
# 2. Why an activation: without one, depth collapses
# 3. Activation functions, their derivatives and their ranges
# 4. The multi-layer perceptron
# 5. Vanishing gradients, measured
# 6. Training, in brief
# 7. XOR: one neuron fails, one hidden layer succeeds
# 8. Watching a decision boundary form
# 9. Dead ReLUs, counted
# 10. What one hidden layer can do: universal approximation
# 11. Takeaways
# 12. Exercises, then their solutions
#
# Every number the text quotes is computed in a cell next to it and checked there by a short `assert`: if a change
# made the text false, the notebook would stop with an error.
#
# **JAX in one paragraph.** `jax.numpy` (imported as `jnp`) is NumPy's interface on arrays that JAX can
# differentiate (`jax.grad`), compile (`jax.jit`) and vectorize (`jax.vmap`); each is introduced where it is
# first used. JAX arrays are immutable, and randomness is explicit: a random function takes a *key*
# (`jax.random.key(seed)`), and the same key always gives the same numbers. To draw independent numbers, split a
# key into new ones, `jax.random.split(key, n)`, and use each once.

# %%
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax.scipy.special import erf

import jaxmlp

FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)


def show(fig, name):
    """Save the figure under notebooks/figures/ and display it."""
    fig.savefig(FIGURES / name, dpi=110, bbox_inches="tight")
    plt.show()


# %% [markdown]
# ## 1. The neuron
#
# A neuron (the lesson's *perceptron*) takes an input vector $x \in \mathbb R^n$, forms a weighted sum plus a bias,
# and passes it through an activation function σ:
#
# $$z = \sum_{i=1}^{n} w_i x_i + b = w^\top x + b \qquad (1)$$
#
# $$\hat y = \sigma(z) \qquad (2)$$
#
# The weights $w$ and the bias $b$ are the parameters that training adjusts. Here is one neuron with four
# inputs and the sigmoid $\sigma(z) = 1/(1+e^{-z})$, computed both as the sum and as the dot product:

# %%
x = jnp.array([1.0, -2.0, 0.5, 3.0])
w = jnp.array([0.5, -0.3, 0.8, 0.1])
b = -0.2


def sigmoid(z):
    return 1 / (1 + jnp.exp(-z))


z_sum = sum(w[i] * x[i] for i in range(4)) + b   # (1), term by term
z = w @ x + b                                     # (1), as a dot product
y_hat = sigmoid(z)                                # (2)
print(f"z = {float(z_sum):.4f} (sum) = {float(z):.4f} (w @ x + b);  ŷ = σ(z) = {float(y_hat):.4f}")
assert abs(float(z) - 1.6) < 1e-6

# %% [markdown]
# The same neuron as a diagram: each input arrives on an edge carrying its weight, the neuron sums them with the
# bias, and σ turns the sum into the output.

# %%
def draw_neuron(x, w, b, z, y_hat):
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ys = np.linspace(1.5, -1.5, len(x))
    for i, (xi, wi, yi) in enumerate(zip(x, w, ys), start=1):
        ax.add_patch(plt.Circle((0, yi), 0.32, fc="#dbe9f6", ec="k"))
        ax.text(0, yi, f"$x_{i}$\n{float(xi):g}", ha="center", va="center", fontsize=9)
        ax.annotate("", xy=(3.1, 0), xytext=(0.32, yi), arrowprops=dict(arrowstyle="->", color="0.3"))
        ax.text(1.2, yi + (0 - yi) * 0.3 + 0.1, f"$w_{i}$ = {float(wi):g}", fontsize=9, color="C0")
    ax.add_patch(plt.Circle((3.6, 0), 0.5, fc="#fde8c8", ec="k"))
    ax.text(3.6, 0, f"Σ\nz = {float(z):.3g}", ha="center", va="center", fontsize=9)
    ax.add_patch(plt.Circle((3.6, -1.9), 0.25, fc="white", ec="k"))
    ax.text(3.6, -1.9, "1", ha="center", va="center", fontsize=9)
    ax.annotate("", xy=(3.6, -0.5), xytext=(3.6, -1.65), arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.text(3.7, -1.15, f"b = {b:g}", fontsize=9, color="C0")
    ax.add_patch(plt.Rectangle((5.0, -0.4), 0.9, 0.8, fc="#e3f2d9", ec="k"))
    ax.text(5.45, 0, "σ", ha="center", va="center", fontsize=13)
    ax.annotate("", xy=(5.0, 0), xytext=(4.1, 0), arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.annotate("", xy=(7.0, 0), xytext=(5.9, 0), arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.text(7.1, 0, f"ŷ = σ(z)\n= {float(y_hat):.3g}", va="center", fontsize=10)
    ax.text(3.6, 0.75, "z = wᵀx + b   (1)", ha="center", fontsize=9)
    ax.text(5.45, 0.6, "ŷ = σ(z)   (2)", ha="center", fontsize=9)
    ax.set(xlim=(-0.6, 8.4), ylim=(-2.3, 2.0), aspect="equal")
    ax.axis("off")
    return fig


show(draw_neuron(x, w, b, z, y_hat), "01_neuron.png")

# %% [markdown]
# With a sigmoid, $\hat y \in (0, 1)$ can be read as a probability, and the neuron predicts class 1 where
# $\hat y > \tfrac12$, i.e. where $z > 0$. The *decision boundary* $w^\top x + b = 0$ is a straight line in two
# dimensions (a hyperplane in $n$): whatever its weights, one neuron can only separate classes that a line
# separates. Section 7 shows what that costs.
#
# ## 2. Why an activation: without one, depth collapses
#
# Stack two layers without an activation (σ the identity) and expand, as the lesson does:
#
# $$\hat y = W_2 (W_1 x + b_1) + b_2 = \underbrace{W_2 W_1}_{W'} x + \underbrace{W_2 b_1 + b_2}_{b'} \qquad (3)$$
#
# By induction, any number of linear layers is one affine map $W'x + b'$: linear regression. We check it on five
# random layers of widths 2 → 16 → 16 → 16 → 16 → 3 (in NumPy: nothing here needs JAX). The `@` operator is the
# matrix product; a batch of inputs is stored one example per row, `X` of shape `(B, n)`, so a layer computes
# `X @ W.T + b` (the row vector `b[None, :]` is added to every row).

# %%
rng = np.random.default_rng(0)
sizes = [2, 16, 16, 16, 16, 3]
layers = [(rng.standard_normal((n_out, n_in)) / math.sqrt(n_in), rng.standard_normal(n_out))
          for n_in, n_out in zip(sizes[:-1], sizes[1:])]
X = rng.standard_normal((1000, 2))

A = X
for W, b_l in layers:          # five linear layers, no activation
    A = A @ W.T + b_l[None, :]
W_one, b_one = np.eye(2), np.zeros(2)
for W, b_l in layers:          # fold them into one, by (3): W' = W W_one, b' = W b_one + b
    W_one, b_one = W @ W_one, W @ b_one + b_l
collapse_gap = float(np.max(np.abs(A - (X @ W_one.T + b_one[None, :]))))
print(f"five layers -> one W' of shape {W_one.shape}; max |deep(x) - (W'x + b')| over 1000 inputs = {collapse_gap:.1e}")
assert collapse_gap < 1e-12

# %% [markdown]
# The two agree to rounding (NumPy computes in float64). A nonlinear σ between the layers is what stops the
# collapse, and what lets a network bend its decision boundary.
#
# ## 3. Activation functions, their derivatives and their ranges
#
# Training needs the derivative σ' of every activation (notebook 2 shows that backpropagation multiplies by σ'(z)
# once per layer). The lesson's three, and the two modern alternatives it names:
#
# | | $\sigma(z)$ | $\sigma'(z)$ | output range | |
# |---|---|---|---|---|
# | sigmoid | $\dfrac{1}{1+e^{-z}}$ | $\sigma(z)\,(1-\sigma(z))$ | $(0, 1)$ | (4) |
# | tanh | $\dfrac{e^z - e^{-z}}{e^z + e^{-z}}$ | $1-\tanh^2 z$ | $(-1, 1)$, zero-centred | (5) |
# | ReLU | $\max(0, z)$ | $1$ if $z>0$, $0$ if $z<0$ | $[0, \infty)$ | (6) |
# | leaky ReLU | $z$ if $z \ge 0$, $\alpha z$ if $z<0$ ($\alpha = 0.01$) | $1$ if $z>0$, $\alpha$ if $z<0$ | $(-\infty, \infty)$ | (7) |
# | GELU | $z\,\Phi(z)$ | $\Phi(z) + z\,\varphi(z)$ | $[-0.17, \infty)$ | (8) |
#
# For GELU, $\Phi(z) = \tfrac12\big(1 + \operatorname{erf}(z/\sqrt2)\big)$ is the standard normal cumulative
# distribution function and $\varphi(z) = e^{-z^2/2}/\sqrt{2\pi}$ its density; σ' is the product rule with
# $\Phi' = \varphi$. GELU ("Gaussian error linear unit", Hendrycks and Gimpel 2016) is the activation of the
# feed-forward layers of Transformers such as BERT and GPT-2 (the lesson's "GELU (Transformers)"). Those models
# compute it with a cheaper **tanh approximation** of Φ,
#
# $$\operatorname{GELU}(z) \approx \tfrac12\, z \left(1 + \tanh\!\Big(\sqrt{2/\pi}\,\big(z + 0.044715\, z^3\big)\Big)\right)
#   \qquad (8')$$
#
# which is also what `jax.nn.gelu` computes by default (`approximate=True`); we use the exact form (8) and
# measure the gap below.
#
# ReLU and leaky ReLU have a kink at $z = 0$, where they have no derivative. Code returns some value there
# anyway, and *which* value depends on how the function is written, not on mathematics: the table's σ' leaves
# $z = 0$ out, and the cell after the next one shows what JAX returns.
#
# We write each function and derivative by hand, then check them against JAX's own (`jax.nn`) and against
# automatic differentiation. `jax.grad(f)` is a new function that returns the derivative of a scalar function
# `f`; `jax.vmap(g)` maps `g` over the leading axis of its input, so `jax.vmap(jax.grad(f))(zs)` is $f'$ at every
# point of the array `zs`.

# %%
def normal_cdf(z):
    return 0.5 * (1 + erf(z / math.sqrt(2)))


activations = {  # name: (σ, σ' written by hand, jax.nn's σ)
    "sigmoid": (sigmoid, lambda z: sigmoid(z) * (1 - sigmoid(z)), jax.nn.sigmoid),       # (4)
    "tanh": (jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2, jnp.tanh),                        # (5)
    "relu": (lambda z: jnp.where(z > 0, z, 0.0), lambda z: jnp.where(z > 0, 1.0, 0.0), jax.nn.relu),    # (6)
    "leaky_relu": (lambda z: jnp.where(z >= 0, z, 0.01 * z), lambda z: jnp.where(z >= 0, 1.0, 0.01),  # (7)
                   jax.nn.leaky_relu),
    "gelu": (lambda z: z * normal_cdf(z),                                               # (8)
             lambda z: normal_cdf(z) + z * jnp.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi),
             partial(jax.nn.gelu, approximate=False)),
}

zs = jnp.linspace(-4.0, 4.0, 801)  # contains z = 0
for name, (f, df, f_jax) in activations.items():
    value_gap = float(jnp.max(jnp.abs(f(zs) - f_jax(zs))))
    grad_gap = float(jnp.max(jnp.abs(df(zs) - jax.vmap(jax.grad(f_jax))(zs))))
    print(f"{name:>10}: max |σ - jax.nn| = {value_gap:.1e},  max |σ' by hand - jax.grad| = {grad_gap:.1e}")
    assert value_gap < 1e-6 and grad_gap < 1e-6


def gelu_tanh(z):
    """(8'), the tanh approximation of GELU."""
    return 0.5 * z * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


zs_wide = jnp.linspace(-10.0, 10.0, 20001)
approx_gap = float(jnp.max(jnp.abs(gelu_tanh(zs_wide) - activations["gelu"][0](zs_wide))))
jax_gap = float(jnp.max(jnp.abs(gelu_tanh(zs_wide) - jax.nn.gelu(zs_wide))))  # approximate=True by default
print(f"GELU: max |(8') - (8)| on [-10, 10] = {approx_gap:.1e};  max |(8') - jax.nn.gelu| = {jax_gap:.1e}")
assert 4e-4 < approx_gap < 5e-4 and jax_gap < 1e-6

# %% [markdown]
# Both gaps are float32 rounding, for every z of the grid, the kink z = 0 included: there, our `where(z > 0, …)`
# ReLU and `jax.nn.relu` both give slope 0, our leaky ReLU and `jax.nn.leaky_relu` (both `where(z >= 0, …)`) slope
# 1. The tanh approximation (8') stays within $5 \times 10^{-4}$ of the exact GELU on $[-10, 10]$ (and beyond, where
# both are 0 or z), far below what matters for training.
#
# That agreement at the kink is a convention shared by these implementations, not a fact about ReLU. The same
# function written another way gets another "derivative" at 0: `jax.grad` of `jnp.maximum(z, 0.)` returns ½
# (JAX splits a tie of `maximum` evenly between its two arguments), and `jax.grad(jnp.abs)(0.)` returns 1.
# Notebook 2's hand-written network, `mlp_by_hand.py`, computes ReLU as `jnp.maximum(z, 0)` but writes its
# derivative by hand as `(z > 0)`, which gives 0 at the kink:

# %%
import mlp_by_hand  # notebook 2's plain-JAX network; only its ReLU derivative is used here

at_kink = {
    "jax.grad(jax.nn.relu)(0.)": jax.grad(jax.nn.relu)(0.0),
    "jax.grad of where(z > 0, z, 0.) at 0": jax.grad(activations["relu"][0])(0.0),
    "jax.grad of jnp.maximum(z, 0.) at 0": jax.grad(lambda z: jnp.maximum(z, 0.0))(0.0),
    "jax.grad(jnp.abs)(0.)": jax.grad(jnp.abs)(0.0),
    "mlp_by_hand's hand-written relu' at 0": mlp_by_hand.ACTIVATIONS["relu"][1](jnp.array(0.0)),
}
for name, value in at_kink.items():
    print(f"{name:>38}: {float(value)}")
assert [float(v) for v in at_kink.values()] == [0.0, 0.0, 0.5, 1.0, 0.0]

# %% [markdown]
# This rarely matters in training, since a pre-activation exactly equal to 0.0 is rare (zero initialization is the
# exception: it puts every $z$ at 0, notebook 3). It matters when checking a gradient *at* a kink: two correct
# implementations can disagree there.
#
# The figure draws σ (solid), the hand-written σ' (dashed; for ReLU and leaky ReLU, whose σ' jumps at 0, the two
# sides are drawn separately, with a dot at the value our code takes at 0), and shades each function's output
# range. Leaky ReLU's slope α = 0.01 for $z < 0$ is too small to see at this scale: the inset magnifies it.

# %%
zs = jnp.linspace(-5.0, 5.0, 1001)
ranges = {"sigmoid": (0, 1, "(0, 1)"), "tanh": (-1, 1, "(-1, 1)"), "relu": (0, None, "[0, ∞)"),
          "leaky_relu": (None, None, "(-∞, ∞)"), "gelu": (-0.17, None, "[-0.17, ∞)")}
fig, axes = plt.subplots(1, 5, figsize=(18, 4), sharex=True, sharey=True)
for ax, (name, (f, df, _)) in zip(axes, activations.items()):
    lo, hi, range_text = ranges[name]
    ax.axhspan(-2 if lo is None else lo, 5 if hi is None else hi, color="C2", alpha=0.1, label="output range")
    ax.plot(zs, f(zs), lw=2, color="C0", label="σ(z)")
    if name in ("relu", "leaky_relu"):  # σ' jumps at 0: draw each side alone, no vertical segment, and σ'(0)
        for side in (zs[zs < 0], zs[zs > 0]):
            ax.plot(side, df(side), "--", lw=2, color="C1", label="σ'(z)" if side[0] > 0 else None)
        ax.plot(0, float(df(0.0)), "o", color="C1", ms=5, label="σ'(0) in our code")
    else:
        ax.plot(zs, df(zs), "--", lw=2, color="C1", label="σ'(z)")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_title(f"{name}: range {range_text}", fontsize=11)
    ax.set(xlabel="z", ylim=(-1.5, 3))
inset = axes[3].inset_axes([0.06, 0.5, 0.5, 0.42])  # leaky ReLU for z < 0, magnified
left = zs[zs < 0]
inset.plot(left, activations["leaky_relu"][0](left), lw=2, color="C0")
inset.plot(left, activations["leaky_relu"][1](left), "--", lw=2, color="C1")
inset.axhline(0, color="0.6", lw=0.8)
inset.set(xlim=(-5, 0), ylim=(-0.06, 0.02), yticks=[-0.05, 0, 0.01], title="z < 0, magnified: σ = 0.01 z, σ' = 0.01")
inset.title.set_fontsize(8)
inset.tick_params(labelsize=7)
axes[3].legend(fontsize=8, loc="lower right")
axes[0].legend(fontsize=8, loc="upper left")
fig.tight_layout()
show(fig, "01_activations.png")

# %% [markdown]
# The ranges, measured on $z \in [-10, 10]$: sigmoid stays in $(0, 1)$, tanh in $(-1, 1)$, ReLU is never
# negative, and GELU dips to its minimum $\approx -0.17$ near $z \approx -0.75$. Sigmoid and tanh *saturate*: for
# $|z| \gtrsim 4$ they are flat and their derivative is nearly 0. Sigmoid's derivative is at most $\tfrac14$
# (at $z = 0$); tanh's is at most 1.

# %%
zs = jnp.linspace(-10.0, 10.0, 20001)
sig, dsig = activations["sigmoid"][:2]
gelu = activations["gelu"][0]
print(f"sigmoid in [{float(sig(zs).min()):.2e}, {float(sig(zs).max()):.6f}], "
      f"tanh in [{float(jnp.tanh(zs).min()):.6f}, {float(jnp.tanh(zs).max()):.6f}], "
      f"min GELU = {float(gelu(zs).min()):.4f} at z = {float(zs[gelu(zs).argmin()]):.2f}")
print(f"max σ' : sigmoid {float(dsig(zs).max()):.4f}, tanh {float(activations['tanh'][1](zs).max()):.4f};"
      f"  at z = 4: sigmoid' = {float(dsig(4.0)):.4f}, tanh' = {float(activations['tanh'][1](4.0)):.4f}")
assert abs(float(dsig(zs).max()) - 0.25) < 1e-6 and abs(float(gelu(zs).min()) + 0.17) < 0.005
assert float(dsig(4.0)) < 0.02 and float(activations["tanh"][1](4.0)) < 0.002

# %% [markdown]
# ### Zero-centred outputs: tanh against sigmoid
#
# For pre-activations spread symmetrically around 0, tanh's outputs average about 0, sigmoid's about ½, ReLU's
# are all ≥ 0. Why it matters: a weight $W_{jk}$ of the next layer multiplies the activity $a_k$, so (by the chain
# rule, derived in notebook 2) its gradient for one example is $\partial L/\partial W_{jk} = \delta_j\, a_k$, with
# $\delta_j = \partial L / \partial z_j$ the same for the whole row $j$. If every $a_k > 0$ (sigmoid), every
# weight in row $j$ gets a gradient of the *same sign*: one example can only push them all up or all down together,
# and descent zig-zags. Below, 16 inputs $z \sim \mathcal N(0, 1)$ feed one more layer of 8 units; we take
# `jax.grad` of a squared error with respect to its weights and count the rows whose 16 gradient entries all have
# one sign.

# %%
k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
z_in = jax.random.normal(k1, (10_000,))
W_next = jax.random.normal(k2, (8, 16)) / 4
target = jax.random.normal(k3, (8,))
fig, axes = plt.subplots(1, 3, figsize=(16, 3.6), gridspec_kw=dict(width_ratios=[1.4, 1, 1]))
same_sign, rank_one = {}, {}
for name, color in (("sigmoid", "C0"), ("tanh", "C1"), ("relu", "C2")):
    f = activations[name][0]
    axes[0].hist(np.asarray(f(z_in)), bins=80, range=(-1, 3), density=True, alpha=0.5, color=color,
                 label=f"{name}: mean {float(f(z_in).mean()):.2f}")
    a = f(z_in[:16])                                       # one example's 16 activities
    g = jax.grad(lambda W: jnp.sum((W @ a - target) ** 2))(W_next)
    delta = 2 * (W_next @ a - target)                      # δ_j = ∂L/∂z_j for z = W a
    same_sign[name] = int(jnp.sum(jnp.all(g >= 0, axis=1) | jnp.all(g <= 0, axis=1)))
    rank_one[name] = bool(jnp.all(jnp.sign(g) == jnp.outer(jnp.sign(delta), jnp.sign(a))))
    if name != "relu":
        ax = axes[1 if name == "sigmoid" else 2]
        ax.imshow(np.sign(np.asarray(g)), cmap="coolwarm", vmin=-1, vmax=1)
        ax.set(title=f"{name}: sign of ∂L/∂W_jk (red +, blue −)\n{same_sign[name]} of 8 rows of one sign",
               xlabel="k (input a_k)", ylabel="j (unit, δ_j)")
axes[0].set(xlabel="a = σ(z), z ~ N(0, 1)", ylabel="density", title="activations (ReLU: half at 0)", ylim=(0, 4))
axes[0].legend(fontsize=9)
fig.tight_layout()
show(fig, "01_zero_centring.png")
print("rows of one sign (of 8):", same_sign)
print("sign(∂L/∂W_jk) = sign(δ_j) sign(a_k) for every entry:", rank_one)
negative = np.flatnonzero(np.asarray(jnp.tanh(z_in[:16])) < 0)
print(f"tanh: the activities a_k < 0 are those of columns k = {negative.tolist()}")
assert abs(float(jnp.tanh(z_in).mean())) < 0.02 and abs(float(sigmoid(z_in).mean()) - 0.5) < 0.01
assert same_sign["sigmoid"] == same_sign["relu"] == 8 and same_sign["tanh"] < 8 and all(rank_one.values())
assert len(negative) == 4

# %% [markdown]
# Both heat maps are an outer product of signs: since $\partial L/\partial W_{jk} = \delta_j\, a_k$, the sign of
# entry $(j, k)$ is $\operatorname{sign}(\delta_j) \cdot \operatorname{sign}(a_k)$ (checked on every entry above).
# Every row is therefore the same pattern of signs, $\operatorname{sign}(a_k)$ along $k$, or its negation, picked by
# $\operatorname{sign}(\delta_j)$: hence the stripes. With sigmoid every $a_k > 0$, so the pattern is all +
# and each row is uniform, red or blue; with tanh, 4 of this example's 16 activities $a_k$ are negative, and
# those 4 columns have the opposite colour to the rest of their row, in every row.
#
# ReLU's activities are ≥ 0 too, so its rows are of one sign as well (with zeros where $a_k = 0$).
# This is one reason tanh was preferred over sigmoid for hidden layers before ReLU; the next sections show the
# stronger one, the size of σ'.
#
# ## 4. The multi-layer perceptron
#
# An MLP stacks layers of neurons; every neuron of layer $l$ receives every output of layer $l-1$. With
# $a[0] = x$ and layers $l = 1, \dots, L$:
#
# $$z[l] = W[l]\, a[l-1] + b[l] \qquad (9)$$
#
# $$a[l] = \sigma(z[l]) \qquad (10)$$
#
# $W[l]$ has shape $(n_l, n_{l-1})$: row $j$ holds the weights of neuron $j$ of layer $l$, which is the neuron of
# (1)–(2). The output layer $L$ uses an activation suited to the task (sigmoid for a probability, none for
# regression). The lesson's network, `[5, 64, 32, 16, 1]`:

# %%
def draw_mlp(sizes, max_drawn=6):
    fig, ax = plt.subplots(figsize=(11, 5))
    columns = []
    for c, n in enumerate(sizes):
        shown = list(range(n)) if n <= max_drawn else [0, 1, 2, None, n - 2, n - 1]
        ys = np.linspace(2.5, -2.5, len(shown)) if len(shown) > 1 else np.array([0.0])
        columns.append([(c * 3.0, y) for y, i in zip(ys, shown) if i is not None])
        for y, i in zip(ys, shown):
            if i is None:
                ax.text(c * 3.0, y, "⋮", ha="center", va="center", fontsize=16)
    for left, right in zip(columns[:-1], columns[1:]):
        for p in left:
            for q in right:
                ax.plot([p[0], q[0]], [p[1], q[1]], color="0.75", lw=0.6, zorder=0)
    names = (["input x = a[0]"] + [f"hidden {l}: a[{l}]" for l in range(1, len(sizes) - 1)]
             + [f"output ŷ = a[{len(sizes) - 1}]"])
    colors = ["#dbe9f6"] + ["#fde8c8"] * (len(sizes) - 2) + ["#e3f2d9"]
    for c, (col, n) in enumerate(zip(columns, sizes)):
        for p in col:
            ax.add_patch(plt.Circle(p, 0.28, fc=colors[c], ec="k", zorder=2))
        ax.text(c * 3.0, -3.25, f"{names[c]}\n{n} unit{'s' if n > 1 else ''}", ha="center", va="top", fontsize=9)
        if c:
            ax.text(c * 3.0 - 1.5, 3.0, f"W[{c}]: {n}×{sizes[c - 1]}\nb[{c}]: {n}", ha="center", fontsize=9, color="C0")
    ax.annotate("", xy=(3 * len(sizes) - 3.5, 3.9), xytext=(0.5, 3.9), arrowprops=dict(arrowstyle="->"))
    ax.text(1.5 * len(sizes) - 1.5, 4.05, "forward propagation: z[l] = W[l] a[l-1] + b[l],  a[l] = σ(z[l])",
            ha="center", fontsize=9)
    ax.set(xlim=(-1, 3 * len(sizes) - 2), ylim=(-4.3, 4.5), aspect="equal")
    ax.axis("off")
    return fig


lesson_sizes = [5, 64, 32, 16, 1]
show(draw_mlp(lesson_sizes), "01_mlp.png")

# %% [markdown]
# In code, the network is a list of `(W, b)` pairs, one per layer. Weights start random (here
# $W_{jk} \sim \mathcal N(0, 1/n_{l-1})$, a scale notebook 3 explains) and biases at 0, drawn with one fresh key per
# layer. Forward propagation is a loop over the layers, (9)–(10), on a batch `X` of shape `(B, n_0)`.
#
# `@jax.jit` compiles `forward`: on its first call for given shapes JAX traces the Python function into a graph of
# array operations, XLA compiles that graph, and later calls with the same shapes run the compiled program (much
# faster than running the operations one by one). Arguments that are not arrays, like the functions `sigma` and
# `sigma_out`, must be declared *static*: a new value means a new compilation. Every `jax.jit` in these notebooks
# works this way.
#
# `params` is a *pytree*: a nested structure of Python containers (lists, tuples, dicts) whose leaves are arrays.
# JAX's functions accept pytrees: `jax.tree.leaves(params)` lists the arrays (here 8: a `W` and a `b` per layer),
# `jax.tree.map(f, params)` applies `f` to every leaf and keeps the structure, and `jax.grad` of a function of
# `params` returns a pytree of the same structure, one gradient array per parameter array.

# %%
def init_mlp(key, sizes, gain=1.0):
    """[(W[1], b[1]), ..., (W[L], b[L])], W[l] ~ N(0, gain² / n_{l-1}) of shape (n_l, n_{l-1}), b[l] = 0."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [(gain * jax.random.normal(k, (n_out, n_in)) / math.sqrt(n_in), jnp.zeros(n_out))
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


@partial(jax.jit, static_argnames=("sigma", "sigma_out"))
def forward(params, X, sigma=jnp.tanh, sigma_out=sigmoid):
    """The output a[L] for a batch X (B, n_0): (9)-(10) with σ in hidden layers, σ_out in the last."""
    A = X
    for W, b in params[:-1]:
        A = sigma(A @ W.T + b[None, :])        # (9), (10)
    W, b = params[-1]
    return sigma_out(A @ W.T + b[None, :])     # the output layer


params = init_mlp(jax.random.key(0), lesson_sizes)
X = jax.random.normal(jax.random.key(1), (4, 5))
print("shapes:", [(W.shape, b.shape) for W, b in params])
n_params = sum(p.size for p in jax.tree.leaves(params))
print(f"parameters: {n_params};  ŷ for a batch of 4: {np.round(np.asarray(forward(params, X)).ravel(), 4)}")
assert n_params == 5 * 64 + 64 + 64 * 32 + 32 + 32 * 16 + 16 + 16 + 1 == 3009

# %% [markdown]
# **The library does the same.** This is the only cell of the notebook that uses the library this project
# builds, `jaxmlp` (the appendix notebook tours it): it stores the same layers as `jaxmlp.Layer(W, b)` and
# computes the same forward pass.

# %%
as_layers = tuple(jaxmlp.Layer(W, b) for W, b in params)
library_gap = float(jnp.max(jnp.abs(jaxmlp.forward(as_layers, X, activation="tanh", output_activation="sigmoid")
                                    - forward(params, X))))
print(f"max |jaxmlp.forward - forward| = {library_gap:.1e}")
assert library_gap < 1e-6

# %% [markdown]
# ## 5. Vanishing gradients, measured
#
# How does the gradient reach the first layers? Two steps of the chain rule, for any layer $l$ below the output
# (notebook 2 derives them in full). The pre-activation $z[l+1] = W[l+1] a[l] + b[l+1]$ is linear in $a[l]$, and
# $a[l] = \sigma(z[l])$ acts entry by entry, so
#
# $$\frac{\partial L}{\partial a[l]} = W[l+1]^\top \frac{\partial L}{\partial z[l+1]} \qquad (11)$$
#
# $$\frac{\partial L}{\partial z[l]} = \frac{\partial L}{\partial a[l]} \odot \sigma'(z[l]) \qquad (12)$$
#
# ($\odot$: entrywise product). Going down one layer, the gradient is multiplied by $W[l+1]^\top$, then entrywise
# by $\sigma'(z[l])$. Sigmoid's $\sigma' \le \tfrac14$ makes step (12) shrink the norm by at least 4, whence the
# common shortcut "ten sigmoid layers shrink the gradient by $4^{10} \approx 10^6$". That ignores step (11): the
# matrix $W^\top$ can shrink or amplify, and only the product of the two steps matters.
#
# We measure both, at initialization, in 10-layer networks (9 hidden layers of 64 units, one output, a squared
# error against random targets, a batch of 256 random inputs): sigmoid and tanh with
# $W \sim \mathcal N(0, 1/n)$, and ReLU with $W \sim \mathcal N(0, 2/n)$ (gain $\sqrt2$, He initialization,
# notebook 3). Autodiff cannot return $\partial L/\partial z[l]$ directly, since $z[l]$ is not an input; the trick
# is to add a zero array `dz[l]` to every $z[l]$ (and `da[l]` to every $a[l]$) and differentiate with respect to
# it: adding `dz[l]` changes the loss exactly as changing $z[l]$ does, so $\partial L/\partial\, dz[l] =
# \partial L / \partial z[l]$. `jax.grad(loss, argnums=(0, 1))` differentiates with respect to both arguments,
# the list of `dz` and the list of `da`, and returns the two lists of gradients.

# %%
@partial(jax.jit, static_argnames="sigma")
def hidden_gradient_norms(params, X, Y, sigma):
    """‖∂L/∂z[l]‖ and ‖∂L/∂a[l]‖ for every hidden layer l, L the mean squared error of the network's output."""
    def loss(dz, da):
        A = X
        for l, (W, b) in enumerate(params[:-1]):
            A = sigma(A @ W.T + b[None, :] + dz[l]) + da[l]   # z[l] + dz[l], then a[l] + da[l]
        W, b = params[-1]
        return jnp.mean((A @ W.T + b[None, :] - Y) ** 2)

    zeros = [jnp.zeros((X.shape[0], W.shape[0])) for W, _ in params[:-1]]
    g_z, g_a = jax.grad(loss, argnums=(0, 1))(zeros, zeros)   # ∂L/∂dz[l] = ∂L/∂z[l], ∂L/∂da[l] = ∂L/∂a[l]
    return jnp.stack([jnp.linalg.norm(g) for g in g_z]), jnp.stack([jnp.linalg.norm(g) for g in g_a])


def deep_gradients(sigma, gain, depth=10, width=64, batch=256, seed=3):
    """hidden_gradient_norms of a fresh random network [width] * depth + [1], on random inputs and targets."""
    k_params, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = init_mlp(k_params, [width] * depth + [1], gain)
    X, Y = jax.random.normal(k_x, (batch, width)), jax.random.normal(k_y, (batch, 1))
    return hidden_gradient_norms(params, X, Y, sigma)


def layer_factors(dz, da):
    """Geometric means over the layers of the two steps down, and the largest σ' step:
    × Wᵀ = ‖∂L/∂a[l]‖ / ‖∂L/∂z[l+1]‖, × σ' = ‖∂L/∂z[l]‖ / ‖∂L/∂a[l]‖."""
    through_W, through_s = np.asarray(da[:-1] / dz[1:]), np.asarray(dz[:-1] / da[:-1])
    return float(np.exp(np.log(through_W).mean())), float(np.exp(np.log(through_s).mean())), float(through_s.max())


relu = activations["relu"][0]
nets = {"sigmoid": (sigmoid, 1.0), "tanh": (jnp.tanh, 1.0), "relu": (relu, math.sqrt(2))}
measured = {name: deep_gradients(f, gain) for name, (f, gain) in nets.items()}
factors = {name: layer_factors(dz, da) for name, (dz, da) in measured.items()}
shrink = {name: float(dz[0] / dz[-1]) for name, (dz, da) in measured.items()}
print(f"{'':>8}  one layer down: {'× Wᵀ (11)':>9} {'× σ′ (12)':>9} {'product':>8}   ‖∂L/∂z[1]‖ / ‖∂L/∂z[9]‖")
for name, (f_W, f_s, _) in factors.items():
    print(f"{name:>8}  {'':>15} {f_W:9.2f} {f_s:9.2f} {f_W * f_s:8.2f}   {shrink[name]:.1e}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for name, (dz, _) in measured.items():
    axes[0].plot(range(1, 10), dz / dz[-1], "o-", label=name)
axes[0].set(yscale="log", xlabel="hidden layer l (1 = first)", ylabel="‖∂L/∂z[l]‖ / ‖∂L/∂z[9]‖",
            title="gradient reaching each layer, relative to the last hidden one", xticks=range(1, 10))
axes[0].legend()
bars = np.array([[f[0], f[1], f[0] * f[1]] for f in factors.values()])
for i, label in enumerate(["× Wᵀ, step (11)", "× σ′(z), step (12)", "product: one layer down"]):
    axes[1].bar(np.arange(3) + (i - 1) * 0.27, bars[:, i], width=0.27, label=label)
axes[1].axhline(1, color="k", lw=0.8)
axes[1].axhline(0.25, color="C3", ls=":", lw=1.2, label="¼ = max of sigmoid′")
axes[1].set(xticks=range(3), xticklabels=list(factors), ylabel="factor on the norm (geometric mean)",
            title="what one layer down does to the gradient's norm")
axes[1].legend(fontsize=8)
fig.tight_layout()
show(fig, "01_vanishing_gradients.png")

# %% [markdown]
# What the measurement shows (the eight steps from layer 9 down to layer 1; the product of their factors is exactly
# the last column, since the norms telescope):
#
# - **sigmoid**: step (12) multiplies the norm by about 0.23 per layer, never by more than ¼ (it cannot: every entry
#   of σ' is at most ¼). Step (11) multiplies it by about 1.0: with $W \sim \mathcal N(0, 1/n)$, the product
#   $W^\top v$ keeps the length of a random vector $v$ on average. So the gradient reaching the first layer is
#   about $10^{-5}$ of the gradient reaching the ninth, and since a layer's weight gradient is built from it
#   (notebook 2), the first layers barely learn: the vanishing gradient. The $W^\top$ factor is part of the story:
#   larger weights amplify step (11), but they also push more $z$ into the flat tails of the sigmoid, where σ' is
#   nearly 0; exercise 4 measures that trade.
# - **tanh**: $\tanh'(0) = 1$, so step (12) costs much less (about 0.86 per layer), and about a third of the
#   gradient survives the eight steps at this initialization.
# - **ReLU** with He's gain: step (12) zeroes the entries of the inactive units (about half), which shrinks the
#   norm by about 0.73, near $1/\sqrt2$; the gain $\sqrt 2$ in $W$ makes step (11) amplify by about 1.43, near
#   $\sqrt2$, and the product is close to 1. Where a unit is active, σ' is exactly 1 however large $z$ is: nothing
#   saturates.

# %%
assert factors["sigmoid"][2] <= 0.25 and 0.2 < factors["sigmoid"][1] < 0.25 and 0.9 < factors["sigmoid"][0] < 1.1
assert 5e-6 < shrink["sigmoid"] < 2e-5 and 0.2 < shrink["tanh"] < 0.5 and 0.8 < factors["tanh"][1] < 0.9
assert 1.35 < factors["relu"][0] < 1.5 and 0.68 < factors["relu"][1] < 0.78 and 0.7 < shrink["relu"] < 2

# %% [markdown]
# ReLU's weakness is the other side of its derivative: a unit whose $z$ is negative for every input has σ' = 0
# everywhere and receives no gradient at all. Section 9 counts such "dead" units. Leaky ReLU and GELU keep a small
# slope for $z < 0$ for that reason.
#
# ## 6. Training, in brief
#
# Notebook 4 treats optimization in full; here is the minimum needed to watch networks learn. For a binary
# classification, the network's sigmoid output $\hat y_i$ is read as the probability that example $i$ is of
# class 1, and training minimizes the lesson's **binary cross-entropy**, the mean over the $n$ training examples of
# $-\log$ (the probability given to the right class):
#
# $$L = -\frac1n \sum_{i=1}^{n} \left[ y_i \log \hat y_i + (1 - y_i) \log (1 - \hat y_i) \right] \qquad (13)$$
#
# **Gradient descent** moves every parameter θ (every entry of every $W[l]$ and $b[l]$) a small step against the
# gradient of $L$, where the **learning rate** η sets the step size:
#
# $$\theta \leftarrow \theta - \eta\, \frac{\partial L}{\partial \theta} \qquad (14)$$
#
# Each step uses all the training examples. `jax.value_and_grad(loss)` returns the loss and its gradient
# (a pytree shaped like `params`), `jax.tree.map` applies (14) to every array, and `jax.jit` compiles the step, as
# in section 4 (`sigma` static).

# %%
def bce(y_hat, y):
    y_hat = jnp.clip(y_hat, 1e-7, 1 - 1e-7)  # keeps log away from log(0) = -inf, should ŷ round to 0 or 1
    return -jnp.mean(y * jnp.log(y_hat) + (1 - y) * jnp.log(1 - y_hat))   # (13)


def loss_fn(params, X, Y, sigma):
    return bce(forward(params, X, sigma), Y)


@partial(jax.jit, static_argnames="sigma")
def gd_step(params, X, Y, lr, sigma=jnp.tanh):
    loss, grads = jax.value_and_grad(loss_fn)(params, X, Y, sigma)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss    # (14), on every array


def train(params, X, Y, lr, steps, sigma=jnp.tanh):
    losses = []
    for _ in range(steps):
        params, loss = gd_step(params, X, Y, lr, sigma)
        losses.append(float(loss))
    return params, losses


def accuracy(params, X, Y, sigma=jnp.tanh):
    return float(jnp.mean((forward(params, X, sigma) > 0.5) == (Y > 0.5)))


# %% [markdown]
# ## 7. XOR: one neuron fails, one hidden layer succeeds
#
# The data: 400 points in the four quadrants, each coordinate a random sign times a number drawn uniformly in
# $[0.1, 1]$ (so the points keep a margin of 0.1 from the axes), with label $y = 1$ where $x_1 x_2 > 0$ (first and
# third quadrants). We keep 80 of them, 20 % of each class drawn at random, as a test set, train on the other 320,
# and standardize both with the training set's mean and standard deviation per input (the same points as the
# library's `xor` dataset). No line separates the two classes, so a single neuron,
# the network `[2, 1]`, gets at most three quadrants right. Trained on (13) it does worse: the data are symmetric,
# and the line that minimizes the cross-entropy is the one that commits to nothing, $\hat y \approx \tfrac12$
# everywhere, with loss $\approx \ln 2 \approx 0.693$. The MLP `[2, 8, 1]` with tanh hidden units bends the boundary.
# Both: 1000 steps of gradient descent with η = 1.

# %%
def make_xor(rng, n):
    x = rng.choice([-1.0, 1.0], size=(n, 2)) * rng.uniform(0.1, 1.0, size=(n, 2))  # a random sign times U(0.1, 1)
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)                              # y = 1 where x₁ x₂ > 0


def split_and_standardize(x, y, rng, test_fraction=0.2):
    """(x_train, y_train, x_test, y_test) as float32 JAX arrays, y of shape (N, 1): a stratified random split,
    and the inputs standardized with the training set's mean and standard deviation."""
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round(test_fraction * np.sum(y == c))]
                           for c in np.unique(y)])
    train = rng.permutation(np.setdiff1d(np.arange(len(y)), test))
    test = rng.permutation(test)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    as_jax = lambda a: jnp.asarray(a, jnp.float32)
    return (as_jax((x[train] - mean) / std), as_jax(y[train, None]),
            as_jax((x[test] - mean) / std), as_jax(y[test, None]))


rng = np.random.default_rng(0)
x_tr, y_tr, x_te, y_te = split_and_standardize(*make_xor(rng, 400), rng)
print(f"XOR: {len(x_tr)} training and {len(x_te)} test points, fraction with y = 1: {float(y_tr.mean()):.2f}")
assert (len(x_tr), len(x_te)) == (320, 80)

# %%
xor_models, xor_results = {}, {}
for sizes in ([2, 1], [2, 8, 1]):
    trained, losses = train(init_mlp(jax.random.key(0), sizes), x_tr, y_tr, lr=1.0, steps=1000)
    xor_models[str(sizes)] = trained
    xor_results[str(sizes)] = (accuracy(trained, x_tr, y_tr), accuracy(trained, x_te, y_te), losses[-1])
    print(f"{str(sizes):>9}: train accuracy {xor_results[str(sizes)][0]:.1%}, test accuracy "
          f"{xor_results[str(sizes)][1]:.1%}, final loss {losses[-1]:.3f}")
train_acc, test_acc, final_loss = xor_results["[2, 1]"]
assert train_acc <= 0.75 and test_acc <= 0.75 and abs(final_loss - math.log(2)) < 0.01
train_acc, test_acc, final_loss = xor_results["[2, 8, 1]"]
assert train_acc == 1.0 and test_acc == 1.0

# %% [markdown]
# How does the hidden layer do it? The output neuron of `[2, 8, 1]` is itself a perceptron: it draws a hyperplane,
# but in the 8-dimensional space of the hidden activities $a[1] = \tanh(W[1] x + b[1])$, not in the input plane. To
# look at that space we project $a[1]$ on two directions: $u_1 = W[2]^\top / \lVert W[2] \rVert$, the direction the
# output neuron reads (its hyperplane $W[2]\, a + b[2] = 0$ is then the vertical line
# $u_1^\top a = -b[2] / \lVert W[2] \rVert$), and $u_2$, the direction of largest remaining spread.

# %%
grid = jnp.linspace(-1.8, 1.8, 181)
gx, gy = jnp.meshgrid(grid, grid)
points = jnp.stack([gx.ravel(), gy.ravel()], axis=1)
quadrant = np.asarray(2 * (x_tr[:, 0] < 0) + (x_tr[:, 1] < 0))  # 0: Q1 (+,+), 1: Q4 (+,-), 2: Q2 (-,+), 3: Q3 (-,-)
markers = {0: ("o", "Q1: y = 1"), 3: ("s", "Q3: y = 1"), 2: ("^", "Q2: y = 0"), 1: ("v", "Q4: y = 0")}

fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
for ax, (name, trained) in zip(axes, xor_models.items()):
    p = forward(trained, points).reshape(gx.shape)
    filled = ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(*x_tr.T, c=y_tr.ravel(), cmap="coolwarm", edgecolors="k", s=12)
    ax.set(title=f"{name}: ŷ = P(y = 1 | x), black: ŷ = ½\ntrain accuracy {xor_results[name][0]:.0%}",
           xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
fig.colorbar(filled, ax=axes[1], fraction=0.046, label="ŷ")

(W1, b1), (W2, b2) = xor_models["[2, 8, 1]"]
H = np.tanh(np.asarray(x_tr @ W1.T + b1[None, :]))           # hidden activities a[1], (320, 8)
u1 = np.asarray(W2[0]) / np.linalg.norm(W2[0])
rest = H - np.outer(H @ u1, u1)
u2 = np.linalg.svd(rest - rest.mean(axis=0), full_matrices=False)[2][0]
h1, h2 = H @ u1, H @ u2
threshold = float(-b2[0] / np.linalg.norm(W2[0]))
for q, (m, label) in markers.items():
    sel = quadrant == q
    axes[2].scatter(h1[sel], h2[sel], marker=m, c="C3" if "y = 1" in label else "C0", edgecolors="k", s=22,
                    label=label)
axes[2].axvline(threshold, color="k", lw=1.5, label="output neuron's line")
axes[2].set(xlabel="$u_1^T a[1]$ (what the output neuron reads)", ylabel="$u_2^T a[1]$",
            title="[2, 8, 1]: the training points in hidden space")
axes[2].legend(fontsize=8)
fig.tight_layout()
show(fig, "01_xor.png")
separated = bool(np.all((h1 > threshold) == (np.asarray(y_tr).ravel() > 0.5)))
print(f"in hidden space, one line separates the classes: {separated}")
assert separated

# %% [markdown]
# In the input plane (left), the perceptron's boundary is a line and its ŷ stays pale (near ½) everywhere; the MLP
# (middle) curves its boundary around the quadrants. In hidden space (right), the first and third quadrants have
# moved to one side and the second and fourth to the other, and a single line (the output neuron) separates them:
# the hidden layer has made the problem linearly separable.
#
# ## 8. Watching a decision boundary form
#
# The two moons: 400 points, half on the upper half circle $(\cos t, \sin t)$ (label 0), half on a lower half circle
# shifted right and down, $(1 - \cos t, \tfrac12 - \sin t)$ (label 1), with $t$ uniform in $[0, \pi]$ and Gaussian
# noise of standard deviation 0.1 added to each coordinate (like scikit-learn's `make_moons`, with $t$ drawn at random), then split and
# standardized as above. We train `[2, 16, 16, 1]`, tanh, with gradient descent at η = 0.2. We stop at a few step counts and draw the boundary each
# time: it starts as a smooth, nearly linear curve (a random network) and bends around the moons as the loss falls.

# %%
def make_moons(rng, n):
    y = np.arange(n) % 2
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)              # y = 0
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)  # y = 1
    return np.where(y[:, None] == 0, upper, lower) + 0.1 * rng.standard_normal((n, 2)), y


rng = np.random.default_rng(0)
m_tr, my_tr, m_te, my_te = split_and_standardize(*make_moons(rng, 400), rng)
grid_x = jnp.linspace(-2.5, 2.5, 161)
mgx, mgy = jnp.meshgrid(grid_x, grid_x)
m_points = jnp.stack([mgx.ravel(), mgy.ravel()], axis=1)

moons_params = init_mlp(jax.random.key(0), [2, 16, 16, 1])
snapshots, all_losses, done = {}, [], 0
for step in (0, 20, 100, 500, 2000):
    moons_params, losses = train(moons_params, m_tr, my_tr, lr=0.2, steps=step - done)
    all_losses += losses
    done = step
    snapshots[step] = (moons_params, accuracy(moons_params, m_tr, my_tr))

fig, axes = plt.subplots(1, 6, figsize=(21, 3.6))
for ax, (step, (snap, acc)) in zip(axes, snapshots.items()):
    p = forward(snap, m_points).reshape(mgx.shape)
    ax.contourf(mgx, mgy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(mgx, mgy, p, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(*m_tr.T, c=my_tr.ravel(), cmap="coolwarm", edgecolors="k", s=8)
    ax.set(title=f"after {step} steps\ntrain accuracy {acc:.0%}", xticks=[], yticks=[], aspect="equal")
axes[-1].plot(np.arange(1, len(all_losses) + 1), all_losses)
for step in list(snapshots)[1:]:
    axes[-1].axvline(step, color="0.7", lw=0.8)
axes[-1].set(xscale="log", yscale="log", xlabel="step", ylabel="loss (13)", title="training loss")
fig.tight_layout()
show(fig, "01_moons_training.png")
test_acc = accuracy(moons_params, m_te, my_te)
print(f"after {done} steps: train loss {all_losses[-1]:.4f}, test accuracy {test_acc:.1%}")
assert all_losses[-1] < 0.05 * all_losses[0] and test_acc >= 0.95

# %% [markdown]
# ## 9. Dead ReLUs, counted
#
# A ReLU unit is *dead* on a dataset when its pre-activation $z$ is $\le 0$ for every example: its output is
# always 0, its σ' is always 0, so (by (12)) the gradient reaching its weights and bias is exactly 0, and gradient
# descent never changes them. A unit of the first layer sees fixed inputs $x$, so once dead it stays dead; a unit
# higher up can come back to life only if the layers below it change its inputs.
#
# We count the dead units of four `[2, 64, 64, 1]` ReLU networks (He's gain $\sqrt2$, four random initializations)
# on the moons training set: at initialization, and after 300 steps of gradient descent with η = 0.1 and with a
# learning rate ten times larger, η = 1.

# %%
def dead_units(params, X):
    """Per hidden layer: how many units have z <= 0 on every row of X."""
    counts, A = [], X
    for W, b in params[:-1]:
        Z = A @ W.T + b[None, :]
        counts.append(int(jnp.sum(jnp.all(Z <= 0, axis=0))))
        A = relu(Z)
    return counts


dead = {"at initialization": [], "η = 0.1, 300 steps": [], "η = 1, 300 steps": []}
final_loss = {0.1: [], 1.0: []}
for seed in range(4):
    relu_init = init_mlp(jax.random.key(seed), [2, 64, 64, 1], gain=math.sqrt(2))
    dead["at initialization"].append(dead_units(relu_init, m_tr))
    for lr in (0.1, 1.0):
        trained, losses = train(relu_init, m_tr, my_tr, lr=lr, steps=300, sigma=relu)
        dead[f"η = {lr:g}, 300 steps"].append(dead_units(trained, m_tr))
        final_loss[lr].append(losses[-1])
print(f"final training loss, mean of the four networks: η = 0.1: {np.mean(final_loss[0.1]):.4f}, "
      f"η = 1: {np.mean(final_loss[1.0]):.4f}")
print("dead units in hidden layers (1, 2), of 64 each, for the four networks:")
for name, counts in dead.items():
    print(f"{name:>19}: {counts}, total {np.sum(counts, axis=0).tolist()}")

# the gradient of a dead unit's incoming weights is exactly zero (the last network trained with η = 1)
grads = jax.grad(loss_fn)(trained, m_tr, my_tr, relu)
Z2 = relu(m_tr @ trained[0][0].T + trained[0][1][None, :]) @ trained[1][0].T + trained[1][1][None, :]
dead2 = jnp.all(Z2 <= 0, axis=0)
dead_dW, dead_db = float(jnp.max(jnp.abs(grads[1][0][dead2]))), float(jnp.max(jnp.abs(grads[1][1][dead2])))
print(f"layer 2: max |∂L/∂W[2]| over the rows of its {int(dead2.sum())} dead units = {dead_dW:.1f}, "
      f"and of ∂L/∂b[2] = {dead_db:.1f}")
totals = {name: int(np.sum(counts)) for name, counts in dead.items()}
assert totals["η = 1, 300 steps"] > 2 * totals["η = 0.1, 300 steps"]
assert totals["η = 0.1, 300 steps"] <= totals["at initialization"] and max(final_loss[1.0]) < min(final_loss[0.1])
assert int(dead2.sum()) > 0 and dead_dW == dead_db == 0.0

# %%
fig, ax = plt.subplots(figsize=(9, 3.4))
for i, (name, counts) in enumerate(dead.items()):
    ax.bar(np.arange(4) + (i - 1) * 0.27, np.asarray(counts)[:, 1], width=0.27, label=name)
ax.set(xticks=range(4), xticklabels=[f"network {s}" for s in range(4)], ylabel="dead units in layer 2 (of 64)",
       title="[2, 64, 64, 1] ReLU on moons: dead units in hidden layer 2")
ax.legend()
show(fig, "01_dead_relus.png")

# %% [markdown]
# Even at initialization some second-layer units are dead: their inputs are ReLU outputs, all ≥ 0, and a unit
# whose weights are mostly negative never fires. With η = 0.1 the count stays about the same (a few units even come
# back, as the first layer changes beneath them). With η = 1 training is faster (a lower final loss), but many more
# second-layer units end up dead: large steps push some units' pre-activations below 0 for every input, and from
# then on they receive no gradient of their own.
# This is one reason learning rates for ReLU networks are kept moderate, and why leaky ReLU (7) keeps a
# slope α for $z < 0$: its units always receive some gradient.
#
# ## 10. What one hidden layer can do: universal approximation
#
# The lesson calls the MLP a universal approximator. Precisely (Cybenko 1989 and Hornik 1991 for sigmoid-like σ;
# Leshno, Lin, Pinkus and Schocken 1993 for every continuous σ that is not a polynomial, ReLU included): for any
# continuous function $f$ on a closed and bounded set $K \subset \mathbb R^n$ and any tolerance ε > 0, there is a
# network with **one** hidden layer of some number $N$ of units and a linear output,
# $\text{net}(x) = \sum_{k=1}^{N} v_k\, \sigma(w_k^\top x + b_k) + d$ (output weights $v_k$, output bias $d$), such that
# $|\text{net}(x) - f(x)| < \varepsilon$ for **every** $x \in K$.
#
# What it does **not** say:
#
# - **how many units**: $N$ depends on $f$ and ε, and can be astronomically large (for some functions,
#   exponential in the input dimension $n$);
# - **that training finds them**: it is a statement of existence, about weights, not about gradient descent;
# - **anything outside $K$**, nor anything about learning from finitely many examples.
#
# In one dimension, with ReLU, the existence is easy to see. Place knots $x_0 < x_1 < \dots < x_N$ on
# $K = [x_0, x_N]$; the network
#
# $$\text{net}(x) = f(x_0) + \sum_{k=0}^{N-1} c_k \max(0,\ x - x_k) \qquad (15)$$
#
# with $c_0$ the slope of $f$'s chord on $[x_0, x_1]$ and each later $c_k$ the *change* of chord slope at $x_k$, is
# the piecewise-linear interpolation of $f$ at the knots; its error on $K$ shrinks like $1/N^2$ for a smooth $f$.
# It has $N$ hidden units: $W[1] = \mathbf 1$, $b[1]_k = -x_k$, $W[2]_k = c_k$, $b[2] = f(x_0)$. We build it by
# hand, without training, for $f(x) = \sin 2x$ on $K = [-\pi, \pi]$, and also evaluate it outside $K$.

# %%
def interpolating_relu_net(f, knots):
    """The [1, N, 1] ReLU network (15): the piecewise-linear interpolation of f at the N + 1 knots."""
    values = f(knots)
    slopes = np.diff(values) / np.diff(knots)
    c = np.diff(slopes, prepend=0.0)   # c_0 = first slope, then each change of slope
    return [(jnp.ones((len(c), 1)), jnp.asarray(-knots[:-1], jnp.float32)),
            (jnp.asarray(c[None, :], jnp.float32), jnp.asarray(values[:1], jnp.float32))]


identity = lambda z: z
f = lambda x: np.sin(2 * x)
x_in = np.linspace(-np.pi, np.pi, 2001)[:, None]
x_left = np.linspace(-2 * np.pi, -np.pi, 1001)[:, None]
x_right = np.linspace(np.pi, 2 * np.pi, 1001)[:, None]
x_all = np.linspace(-2 * np.pi, 2 * np.pi, 4001)[:, None]
errors = {}
fig, axes = plt.subplots(1, 2, figsize=(14, 4))
axes[0].plot(x_all, f(x_all), "k", lw=3, alpha=0.3, label="f(x) = sin 2x")
for N in (8, 32, 128):
    net = interpolating_relu_net(f, np.linspace(-np.pi, np.pi, N + 1))
    out = lambda xs: np.asarray(forward(net, jnp.asarray(xs, jnp.float32), relu, identity))
    errors[N] = [float(np.max(np.abs(out(xs) - f(xs)))) for xs in (x_in, x_left, x_right)]
    print(f"N = {N:>3} hidden units: max |net - f| on K = {errors[N][0]:.4f};  "
          f"left of K: {errors[N][1]:.2f}, right of K: {errors[N][2]:.2f}")
    axes[0].plot(x_all, out(x_all), lw=1.2, label=f"N = {N}")
    axes[1].plot(x_in, np.abs(out(x_in) - f(x_in)), lw=1, label=f"N = {N}")
axes[0].axvspan(-np.pi, np.pi, color="C2", alpha=0.08, label="K = [-π, π]")
axes[0].set(xlabel="x", ylabel="output", ylim=(-3, 3), title="one hidden ReLU layer, weights set by hand (15)")
ratios = [errors[8][0] / errors[32][0], errors[32][0] / errors[128][0]]
axes[1].set(xlabel="x", ylabel="|net(x) - f(x)|", yscale="log", ylim=(1e-6, 1),
            title=f"error on K: 4× more units, {ratios[0]:.0f}× then {ratios[1]:.0f}× smaller")
axes[0].legend(fontsize=8, loc="lower left")
axes[1].legend(fontsize=8, loc="upper center", ncol=3)
fig.tight_layout()
show(fig, "01_universal_approximation.png")
print("error ratio for each 4x more units:", np.round(ratios, 1))

# %% [markdown]
# On $K$ each fourfold increase of $N$ divides the worst error by about 11, then by 16 = 4²: approaching the $1/N^2$ rate.
# Outside $K$ the two sides differ. Left of the first knot every ramp $\max(0, x - x_k)$ is 0, so the network is
# the constant $f(x_0) = \sin(-2\pi) = 0$ and misses $\sin 2x$ by up to its amplitude, 1. Right of the last knot
# all ramps are active and the network continues its last linear piece (the chord of $f$ on the last interval,
# rising): it climbs away, off by more than 4 before $x = 2\pi$. Neither is a failure of the theorem, which
# promised nothing outside $K$.

# %%
assert errors[8][0] > errors[32][0] > errors[128][0] and errors[128][0] < 2e-3
assert 10 < ratios[0] < 12.5 and 15 < ratios[1] < 16.5
assert all(0.99 < e[1] <= 1.0 + 1e-3 and e[2] > 4 for e in errors.values())

# %% [markdown]
# ## 11. Takeaways
#
# - A neuron computes $\sigma(w^\top x + b)$, (1)–(2); its decision boundary is a hyperplane, so it cannot learn
#   XOR.
# - Without a nonlinearity, any depth collapses to one affine map (3).
# - Sigmoid outputs lie in $(0, 1)$, tanh's in $(-1, 1)$ and are zero-centred, ReLU's in $[0, \infty)$. Sigmoid's
#   σ' ≤ ¼: in a deep sigmoid network the gradient shrinks about 4× per layer at initialization (its $W^\top$
#   factor was about 1); ReLU with He's gain keeps it about constant, but its units can die.
# - One hidden layer turns XOR into a linearly separable problem; one hidden layer with enough units approximates
#   any continuous function on a bounded set, a promise about existence only, and only on that set.
# - Training (13)–(14) takes the gradient of the loss with respect to every parameter. Notebook 2 derives how
#   that gradient is computed: backpropagation.
#
# ## 12. Exercises
#
# Solutions are at the end of the notebook; try first.
#
# 1. **SiLU, GELU's cousin.** The SiLU (or swish), $\sigma(z) = z\, s(z)$ with $s$ the sigmoid, replaces Φ in
#    GELU by the sigmoid. Derive σ'(z), write it as `silu_grad(z)` and check it against `jax.grad(jax.nn.silu)` on
#    a grid of z. Then find the minimum of σ (GELU's is −0.17 near z = −0.75): where is it, and show that there
#    $\sigma(z^*) = z^* + 1$.
# 2. **tanh is a rescaled sigmoid.** Show that $\tanh z = 2\sigma(2z) - 1$, and from it and
#    $\sigma' = \sigma(1-\sigma)$ derive $\tanh' = 1 - \tanh^2$. Check both numerically.
# 3. **XOR by hand.** Find weights for a `[2, 2, 1]` network with ReLU hidden units and an identity output that
#    outputs exactly XOR on the four points $\{0, 1\}^2$: 0, 1, 1, 0. (Hint: $x_1 + x_2$ is 0, 1, 1, 2.)
# 4. **Can larger weights undo σ' ≤ ¼?** Rerun section 5's sigmoid network with gains 4 and 16
#    ($W \sim \mathcal N(0, \text{gain}^2/n)$). Measure the two factors per layer, the ratio
#    ‖∂L/∂z[1]‖ / ‖∂L/∂z[9]‖, and the fraction of hidden pre-activations in the sigmoid's flat tails,
#    $|z| > 4.6$, where $\sigma'(z) < 0.01$. Does the gradient still vanish? What is the price?
# 5. **Universal approximation, counted.** With (15), interpolate $f(x) = x^2$ on $[-1, 1]$ with $N = 16$ equal
#    intervals of width $h = 2/N$. Show that the largest error of linear interpolation of $x^2$ on an interval of
#    width $h$ is $h^2/4$ (at its middle), and check the network's error against it.

# %% [markdown]
# ## Solutions
#
# **1.** By the product rule with $s' = s(1 - s)$: $\sigma'(z) = s(z) + z\, s(z)\,(1 - s(z))$. At the minimum
# $\sigma'(z^*) = 0$, that is $1 + z^*(1 - s(z^*)) = 0$ (divide by $s > 0$), so $s(z^*) = 1 + 1/z^*$ and
# $\sigma(z^*) = z^* s(z^*) = z^* + 1$. The equation has no closed form; bisection gives $z^* \approx -1.278$ and
# $\sigma(z^*) \approx -0.278$, a deeper dip than GELU's.

# %%
def silu_grad(z):
    return sigmoid(z) + z * sigmoid(z) * (1 - sigmoid(z))


zs = jnp.linspace(-10.0, 10.0, 20001)
gap = float(jnp.max(jnp.abs(silu_grad(zs) - jax.vmap(jax.grad(jax.nn.silu))(zs))))
s64 = lambda z: 1 / (1 + math.exp(-z))  # the sigmoid in float64, for the root
lo, hi = -2.0, -1.0                     # σ'(-2) < 0 < σ'(-1): bisect σ'(z*) = 0
for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if s64(mid) * (1 + mid * (1 - s64(mid))) < 0 else (lo, mid)
z_star = (lo + hi) / 2
silu_min = z_star * s64(z_star)
print(f"max |silu_grad - jax.grad(jax.nn.silu)| = {gap:.1e};  σ'(z*) = 0 at z* = {z_star:.4f}, σ(z*) = "
      f"{silu_min:.4f}, z* + 1 = {z_star + 1:.4f};  min of σ on the grid {float(jnp.min(zs * sigmoid(zs))):.4f}")
assert gap < 1e-6 and abs(z_star + 1.278) < 5e-4 and abs(silu_min - (z_star + 1)) < 1e-12
assert abs(float(jnp.min(zs * sigmoid(zs))) - silu_min) < 1e-5

# %% [markdown]
# **2.** $2\sigma(2z) - 1 = \dfrac{2}{1 + e^{-2z}} - 1 = \dfrac{1 - e^{-2z}}{1 + e^{-2z}} = \dfrac{e^{z} - e^{-z}}{e^{z} + e^{-z}} = \tanh z$
# (multiply numerator and denominator by $e^z$). Differentiating, $\tanh' z = 4\sigma'(2z) = 4\sigma(2z)(1 - \sigma(2z))$;
# with $\sigma(2z) = (1 + \tanh z)/2$ this is $4 \cdot \frac{1 + \tanh z}{2} \cdot \frac{1 - \tanh z}{2} = 1 - \tanh^2 z$.

# %%
zs = jnp.linspace(-5.0, 5.0, 1001)
gap_value = float(jnp.max(jnp.abs(2 * sigmoid(2 * zs) - 1 - jnp.tanh(zs))))
gap_grad = float(jnp.max(jnp.abs(4 * sigmoid(2 * zs) * (1 - sigmoid(2 * zs)) - (1 - jnp.tanh(zs) ** 2))))
print(f"max |2σ(2z) - 1 - tanh z| = {gap_value:.1e},  max |4σ'(2z) - (1 - tanh² z)| = {gap_grad:.1e}")
assert gap_value < 1e-6 and gap_grad < 1e-6

# %% [markdown]
# **3.** $h_1 = \max(0, x_1 + x_2)$ and $h_2 = \max(0, x_1 + x_2 - 1)$ give $(0, 0), (1, 0), (1, 0), (2, 1)$ on
# the four points; $\hat y = h_1 - 2 h_2$ gives 0, 1, 1, 0. In the hidden space $(h_1, h_2)$ the two points of class 1
# coincide at $(1, 0)$: the hidden layer has merged them, and a line separates the rest.

# %%
xor_by_hand = [(jnp.array([[1.0, 1.0], [1.0, 1.0]]), jnp.array([0.0, -1.0])),
               (jnp.array([[1.0, -2.0]]), jnp.array([0.0]))]
corners = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
out = forward(xor_by_hand, corners, relu, identity).ravel()
print("outputs on (0,0), (0,1), (1,0), (1,1):", out)
assert jnp.array_equal(out, jnp.array([0.0, 1.0, 1.0, 0.0]))

# %% [markdown]
# **4.** The $W^\top$ step scales with the gain (about 4 and 16), while the σ' step falls as more units saturate
# (about 0.16 and 0.08). With gain 4 the product is about 0.6 and the gradient still shrinks, by a factor of about
# 40 over the eight steps (10⁵ with gain 1). With gain 16 the product exceeds 1 and the gradient grows on its way
# down (the opposite problem, an *exploding* gradient, in a mild form), but about two thirds of the pre-activations
# sit in the flat tails: those units output almost exactly 0 or 1, a small change of their weights changes almost
# nothing, and the network behaves like one of step functions. Larger weights trade vanishing gradients for
# saturated units; notebook 3 chooses the scale that avoids both, and ReLU has no flat tail on the positive side.

# %%
def saturated_fraction(params, X):
    """The fraction of hidden pre-activations with |z| > 4.6, where sigmoid'(z) < 0.01."""
    A, flat = X, []
    for W, b in params[:-1]:
        Z = A @ W.T + b[None, :]
        flat.append(jnp.mean(jnp.abs(Z) > 4.6))
        A = sigmoid(Z)
    return float(jnp.mean(jnp.stack(flat)))


k_params, k_x, _ = jax.random.split(jax.random.key(3), 3)   # the network and inputs of deep_gradients
gain_results = {}
for gain in (1.0, 4.0, 16.0):
    dz, da = deep_gradients(sigmoid, gain)
    through_W, through_s, _ = layer_factors(dz, da)
    tails = saturated_fraction(init_mlp(k_params, [64] * 10 + [1], gain), jax.random.normal(k_x, (256, 64)))
    gain_results[gain] = (through_W * through_s, float(dz[0] / dz[-1]), tails)
    print(f"gain {gain:>4g}: × Wᵀ {through_W:5.2f}, × σ' {through_s:.3f}, product {through_W * through_s:.2f}; "
          f"‖∂L/∂z[1]‖ / ‖∂L/∂z[9]‖ = {float(dz[0] / dz[-1]):.1e};  |z| > 4.6: {tails:.0%}")
assert gain_results[4.0][0] < 0.8 and 1e-2 < gain_results[4.0][1] < 0.1
assert gain_results[16.0][0] > 1 and gain_results[16.0][1] > 1 and 0.55 < gain_results[16.0][2] < 0.75

# %% [markdown]
# **5.** On $[x_k, x_k + h]$ the chord of $x^2$ is $\ell(x) = x_k^2 + (2x_k + h)(x - x_k)$, and
# $\ell(x) - x^2 = (x - x_k)(x_k + h - x)$, a downward parabola with its maximum $h^2/4$ at the middle. With $N = 16$,
# $h = 1/8$ and the bound is $1/256 \approx 0.0039$, reached at each interval's midpoint.

# %%
square = lambda x: x ** 2
N = 16
net = interpolating_relu_net(square, np.linspace(-1.0, 1.0, N + 1))
xs = np.linspace(-1.0, 1.0, 3201)[:, None]
err = float(np.max(np.abs(np.asarray(forward(net, jnp.asarray(xs, jnp.float32), relu, identity)) - square(xs))))
print(f"N = {N}: max error {err:.6f}, h²/4 = {(2 / N) ** 2 / 4:.6f}")
assert abs(err - (2 / N) ** 2 / 4) < 1e-5
