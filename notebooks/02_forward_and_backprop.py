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
# # 2. Forward propagation and backpropagation, derived and written by hand
#
# This notebook covers sections 4–6 of the lesson: forward propagation, backpropagation and the loss functions.
# By its end you will have derived every line of a backward pass from the chain rule, worked it by hand on a
# 2-2-1 network, and written it as about 15 lines of `jax.numpy` that compute the gradient of any MLP, checked
# against JAX's automatic differentiation and against finite differences. The file `notebooks/mlp_by_hand.py`
# holds the same code; notebooks 3 and 4 import it.
#
# Contents:
#
# 1. Forward propagation, in code
# 2. One neuron: the chain rule
# 3. One layer: many neurons, and the signal passed down
# 4. Many layers: the δ recursion
# 5. A 2-2-1 network, worked by hand
# 6. Softmax with cross-entropy: δ through the Jacobian
# 7. A batch, and where the 1/n goes
# 8. The backward pass in code
# 9. Gradient checking
# 10. The same code as a module, `mlp_by_hand`
# 11. Takeaways
# 12. Exercises, then their solutions
#
# Notation, as in the lesson: layers $l = 1, \dots, L$; $W[l]$ of shape $(n_l, n_{l-1})$; $z[l]$ the
# pre-activation, $a[l] = \sigma(z[l])$ the activation, $a[0] = x$; $\ell$ the loss of one example, $L$ the mean
# loss of a batch; $\delta[l] = \partial \ell / \partial z[l]$; $\odot$ the entrywise product.
#
# We compute in float64 (`jax_enable_x64`, set before any array is made): comparisons with autodiff then agree to
# about $10^{-16}$ instead of float32's $10^{-7}$, so any real mistake stands out.

# %%
from functools import partial
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax.flatten_util import ravel_pytree

FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)


def show(fig, name):
    """Save the figure under notebooks/figures/ and display it."""
    fig.savefig(FIGURES / name, dpi=110, bbox_inches="tight")
    plt.show()


def r4(v):
    """An array or number printed with 4 significant digits."""
    return np.array2string(np.asarray(v, dtype=float) + 0.0,  # + 0.0 turns -0.0 into 0.0
                           formatter={"float_kind": lambda t: f"{t:.4g}"})


def rel_err(a, b):
    """max |a - b| / max |b| over all the arrays of two pytrees of the same structure."""
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    return max(float(jnp.max(jnp.abs(p - q))) for p, q in zip(a, b)) / max(float(jnp.max(jnp.abs(q))) for q in b)


# %% [markdown]
# ## 1. Forward propagation, in code
#
# For one example, with $a[0] = x$ and $l = 1, \dots, L$ (notebook 1, (9)–(10)):
#
# $$z[l] = W[l]\, a[l-1] + b[l] \qquad (1)$$
#
# $$a[l] = \sigma_l(z[l]) \qquad (2)$$
#
# where $\sigma_l$ is the hidden activation σ for $l < L$ and the output's activation for $l = L$. The output
# activation goes with the loss: none (the identity) for the squared error of regression, the sigmoid for the
# binary cross-entropy, the softmax for the cross-entropy of several classes (section 6). For a batch of $B$
# examples stored as the rows of $A[0] = X$, (1) becomes
#
# $$Z[l] = A[l-1]\, W[l]^\top + \mathbf 1\, b[l]^\top \qquad (3)$$
#
# (row $i$ of $Z[l]$ is (1) for example $i$). The forward pass keeps every $Z[l]$ and $A[l]$: the backward pass
# needs them (which is why training takes more memory than prediction, which can discard each layer's values once
# the next layer has them). Each activation comes with its derivative (notebook 1, (4)–(6)):

# %%
def sigmoid(z):
    return 1 / (1 + jnp.exp(-z))


def softmax(z):
    e = jnp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# Each hidden activation σ with its derivative σ', written by hand.
ACTIVATIONS = {
    "sigmoid": (sigmoid, lambda z: sigmoid(z) * (1 - sigmoid(z))),
    "tanh": (jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2),
    "relu": (lambda z: jnp.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
}
# Each loss with the output activation it is paired with.
OUTPUTS = {"mse": lambda z: z, "bce": sigmoid, "ce": softmax}


def forward(params, X, activation="tanh", loss="mse"):
    """Z[l] = A[l-1] W[l]ᵀ + b[l], A[l] = σ(Z[l]); the output layer uses the loss's activation."""
    sigma, _ = ACTIVATIONS[activation]
    Zs, As = [], [X]
    for l, (W, b) in enumerate(params, start=1):
        Z = As[-1] @ W.T + b[None, :]  # b as a row (1, n_l), added to every example's row
        Zs.append(Z)
        As.append(OUTPUTS[loss](Z) if l == len(params) else sigma(Z))
    return Zs, As


# %% [markdown]
# (`softmax` subtracts each row's maximum before `exp`: the result is the same, since the factor $e^{-\max}$ cancels,
# and `exp` never overflows.) `Zs[l-1]` is $Z[l]$ and `As[l]` is $A[l]$, so `As[0]` is $X$. The lesson's network
# `[5, 64, 32, 16, 1]` on a batch of 3:

# %%
def init_params(key, sizes):
    """[(W[1], b[1]), ...], W[l] ~ N(0, 1/n_{l-1}) of shape (n_l, n_{l-1}), b[l] ~ N(0, 0.1²)."""
    keys = jax.random.split(key, 2 * (len(sizes) - 1))   # one fresh random key per array (notebook 1)
    return [(jax.random.normal(k_W, (n_out, n_in)) / jnp.sqrt(n_in), 0.1 * jax.random.normal(k_b, (n_out,)))
            for k_W, k_b, n_in, n_out in zip(keys[::2], keys[1::2], sizes[:-1], sizes[1:])]


lesson_params = init_params(jax.random.key(0), [5, 64, 32, 16, 1])
X3 = jax.random.normal(jax.random.key(1), (3, 5))
Zs, As = forward(lesson_params, X3, "tanh", "mse")
for l in range(1, 5):
    print(f"layer {l}: W {lesson_params[l - 1][0].shape}, Z {Zs[l - 1].shape}, A {As[l].shape}")
print("output A[4] =", r4(As[-1].ravel()))

# %% [markdown]
# The biases start small and random here (not 0) so that every term of the gradient below is exercised. Now the
# backward pass, one idea at a time.
#
# ## 2. One neuron: the chain rule
#
# Take one neuron and one example: $z = w^\top x + b$, $a = \sigma(z)$, and a loss $\ell(a, y)$ comparing the output
# with the target $y$. A weight $w_k$ reaches the loss only through $z$, and $z$ only through $a$, so the chain
# rule multiplies three factors:
#
# $$\frac{\partial \ell}{\partial w_k}
#   = \frac{\partial \ell}{\partial a}\, \frac{\partial a}{\partial z}\, \frac{\partial z}{\partial w_k}
#   = \frac{\partial \ell}{\partial a}\; \sigma'(z)\; x_k \qquad (4)$$
#
# The first two factors do not depend on $k$. Call their product the neuron's **error signal**
#
# $$\delta = \frac{\partial \ell}{\partial z} = \frac{\partial \ell}{\partial a}\, \sigma'(z) \qquad (5)$$
#
# Then, with $\partial z / \partial b = 1$:
#
# $$\frac{\partial \ell}{\partial w} = \delta\, x, \qquad \frac{\partial \ell}{\partial b} = \delta \qquad (6)$$
#
# "error at the neuron's output times activity at its input". What $\delta$ is depends on the loss:
#
# - **Squared error**, the lesson's MSE for one example, $\ell = (a - y)^2$ (no ½): $\partial \ell / \partial a = 2(a - y)$,
#
#   $$\delta = 2\,(a - y)\,\sigma'(z) \qquad (7)$$
#
# - **Binary cross-entropy** with a sigmoid, $\ell = -[\,y \log a + (1-y) \log(1-a)\,]$: for any $y \in [0, 1]$,
#   $\frac{\partial \ell}{\partial a} = -\frac{y}{a} + \frac{1-y}{1-a} = \frac{a - y}{a(1-a)}$, and the sigmoid's
#   derivative is $\sigma'(z) = \sigma(z)(1 - \sigma(z)) = a(1-a)$, so the two cancel:
#
#   $$\delta = \frac{a - y}{a(1-a)} \cdot a(1-a) = a - y \qquad (8)$$
#
# (8) is the lesson's $\delta[L] = a[L] - y$: it holds for a sigmoid output with the binary cross-entropy (and, section
# 6 shows, for a softmax with the cross-entropy), not for the squared error, whose δ is (7). The factor
# $\partial \ell / \partial a$ alone is large where the output is confidently wrong ($-1/a$ for $y = 1$ as
# $a \to 0$, $1/(1-a)$ for $y = 0$ as $a \to 1$); the sigmoid's $a(1-a)$ cancels it exactly, so code computes
# $a - y$ directly and never divides.
#
# We check (6)–(8) against `jax.grad`, which takes a function and returns the function computing its gradient
# with respect to the arguments listed in `argnums`:

# %%
x = jnp.array([1.0, -2.0, 0.5])
w = jnp.array([0.3, 0.1, -0.4])
b, y = 0.2, 1.0


def neuron_loss(w, b, loss):
    a = sigmoid(w @ x + b)
    return (a - y) ** 2 if loss == "squared error" else -(y * jnp.log(a) + (1 - y) * jnp.log(1 - a))


z = w @ x + b
a = sigmoid(z)
for loss, delta in (("squared error", 2 * (a - y) * a * (1 - a)),   # (7), with σ'(z) = a(1 - a)
                    ("cross-entropy", a - y)):                      # (8)
    dw, db = jax.grad(neuron_loss, argnums=(0, 1))(w, b, loss)
    print(f"{loss}: δ = {float(delta):.4g};  δx = {r4(delta * x)}, jax.grad: ∂ℓ/∂w = {r4(dw)}, ∂ℓ/∂b = {float(db):.4g}")
    assert jnp.allclose(dw, delta * x, rtol=1e-14) and abs(float(db - delta)) < 1e-15   # (6)

# %% [markdown]
# ## 3. One layer: many neurons, and the signal passed down
#
# A layer is $n$ neurons side by side on the same input $a_{\text{in}}$: $z = W a_{\text{in}} + b$, $a = \sigma(z)$,
# with $\sigma$ entry by entry. Neuron $j$ is section 2 with weights $W_{j,:}$ and its own $\delta_j = \partial\ell /
# \partial z_j$, so (6) for every $j$ at once reads
#
# $$\frac{\partial \ell}{\partial W} = \delta\, a_{\text{in}}^\top \quad \text{(an outer product: } \tfrac{\partial \ell}{\partial W_{jk}} = \delta_j\, a_{\text{in},k}) \qquad (9)$$
#
# $$\frac{\partial \ell}{\partial b} = \delta \qquad (10)$$
#
# One new quantity appears. The input $a_{\text{in},k}$ feeds *every* neuron $j$, through $z_j = \sum_k W_{jk}\,
# a_{\text{in},k} + b_j$, so its effect on the loss is the sum over the paths:
#
# $$\frac{\partial \ell}{\partial a_{\text{in},k}} = \sum_j \frac{\partial \ell}{\partial z_j}\,\frac{\partial z_j}{\partial a_{\text{in},k}}
#   = \sum_j W_{jk}\, \delta_j, \qquad \text{i.e.} \qquad \frac{\partial \ell}{\partial a_{\text{in}}} = W^\top \delta \qquad (11)$$
#
# This is what a layer passes down to the layer below it. A check on a layer of 4 sigmoid neurons with 3 inputs and
# the squared error summed over the 4 outputs, $\ell = \sum_j (a_j - y_j)^2$, so that $\delta_j = 2(a_j - y_j)
# \sigma'(z_j)$ by (7):

# %%
k_W, k_b, k_a, k_y = jax.random.split(jax.random.key(2), 4)
W = jax.random.normal(k_W, (4, 3))
b = jax.random.normal(k_b, (4,))
a_in = jax.random.normal(k_a, (3,))
y4 = jax.random.uniform(k_y, (4,))


def layer_loss(W, b, a_in):
    return jnp.sum((sigmoid(W @ a_in + b) - y4) ** 2)


a = sigmoid(W @ a_in + b)
delta = 2 * (a - y4) * a * (1 - a)                              # (7), one δ_j per neuron
dW, db, da_in = jax.grad(layer_loss, argnums=(0, 1, 2))(W, b, a_in)
print(f"δ = {r4(delta)}")
print(f"(9)  δ a_inᵀ vs jax.grad: max difference {float(jnp.max(jnp.abs(jnp.outer(delta, a_in) - dW))):.1e}")
print(f"(10) δ vs jax.grad: max difference {float(jnp.max(jnp.abs(delta - db))):.1e}")
print(f"(11) Wᵀ δ = {r4(W.T @ delta)}, jax.grad {r4(da_in)}")
assert jnp.allclose(jnp.outer(delta, a_in), dW, rtol=1e-14) and jnp.allclose(delta, db, rtol=1e-14)
assert jnp.allclose(W.T @ delta, da_in, rtol=1e-14)

# %% [markdown]
# ## 4. Many layers: the δ recursion
#
# In a network, the "input" of layer $l+1$ is $a[l] = \sigma(z[l])$. By (11) applied to layer $l+1$,
# $\partial \ell / \partial a[l] = W[l+1]^\top \delta[l+1]$; since $a[l]$ depends on $z[l]$ entry by entry, one more
# step of the chain rule multiplies by $\sigma'(z[l])$ entrywise:
#
# $$\delta[l] = \big(W[l+1]^\top \delta[l+1]\big) \odot \sigma'(z[l]) \qquad (12)$$
#
# That is the whole of backpropagation, for one example:
#
# 1. forward: compute and keep every $z[l]$, $a[l]$ by (1)–(2);
# 2. output: $\delta[L]$ from the loss and the output activation, (7) or (8) (or (17) below for a softmax);
# 3. for $l = L-1, \dots, 1$: $\delta[l]$ by (12);
# 4. for every layer: $\partial \ell / \partial W[l] = \delta[l]\, a[l-1]^\top$ and $\partial \ell / \partial b[l]
#    = \delta[l]$, by (9)–(10) with $a_{\text{in}} = a[l-1]$.
#
# Each layer costs one matrix product forward ($W a$) and two backward ($W^\top \delta$ and $\delta a^\top$), so
# the backward pass costs about two forward passes, and the gradient with respect to every parameter about three,
# however many parameters there are. The flow of the computation:
#
# (`jax.grad` does the same thing at a finer grain. It records the operations of the function, the forward graph,
# and walks them backward from the loss, multiplying by each operation's local derivative and adding the
# contributions where a value was used twice: *reverse-mode automatic differentiation*. What we do by hand per layer,
# it does per operation; Karpathy's micrograd builds such an engine for scalars in about 100 lines.)

# %%
def draw_backward_flow():
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(15, 5.6))

    def box(x, y, text, color, w=2.3, h=0.9):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="k"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9.5)

    def arrow(p, q, color="k", style="-|>", ls="-"):
        ax.annotate("", xy=q, xytext=p, arrowprops=dict(arrowstyle=style, color=color, lw=1.5, ls=ls))

    xs = [0, 3.4, 6.8, 10.2, 13.3]
    box(xs[0], 3, "x = a[0]", "#dbe9f6", w=1.6)
    for l in (1, 2, 3):
        box(xs[l], 3, f"z[{l}] = W[{l}] a[{l - 1}] + b[{l}]\na[{l}] = σ(z[{l}])" if l < 3
            else "z[3] = W[3] a[2] + b[3]\nŷ = a[3] = σ_L(z[3])", "#fde8c8")
        arrow((xs[l - 1] + (0.8 if l == 1 else 1.15), 3), (xs[l] - 1.15, 3))
    box(xs[4], 3, "loss ℓ(ŷ, y)", "#f4cccc", w=1.8)
    arrow((xs[3] + 1.15, 3), (xs[4] - 0.9, 3))
    ax.text(6.8, 3.85, "forward: (1)–(2), keep every z[l], a[l]", ha="center", fontsize=10)

    deltas = {3: "δ[3] = ∂ℓ/∂z[3]\n(7), (8) or (17)", 2: "δ[2] = W[3]ᵀ δ[3] ⊙ σ'(z[2])\n(12)",
              1: "δ[1] = W[2]ᵀ δ[2] ⊙ σ'(z[1])\n(12)"}
    for l, text in deltas.items():
        box(xs[l], 0.9, text, "#f9d5d3", w=2.8)
    arrow((xs[4], 2.5), (xs[3] + 1.45, 0.9), color="C3")
    arrow((xs[3] - 1.45, 0.9), (xs[2] + 1.45, 0.9), color="C3")
    arrow((xs[2] - 1.45, 0.9), (xs[1] + 1.45, 0.9), color="C3")
    ax.text(12.4, -0.2, "backward: (12),\nfrom the output down", ha="left", va="top", fontsize=10, color="C3")
    for l in (1, 2, 3):
        box(xs[l], -1.3, f"∂ℓ/∂W[{l}] = δ[{l}] a[{l - 1}]ᵀ\n∂ℓ/∂b[{l}] = δ[{l}]   (9)–(10)", "#e3f2d9", w=2.8)
        arrow((xs[l], 0.4), (xs[l], -0.8), color="C2")
        arrow((xs[l], 2.5), (xs[l], 1.4), color="0.55", ls="--")                # z[l], a[l-1] kept
    ax.text(-1.5, 1.2, "dashed: z[l] and a[l-1],\nkept from the forward pass,\nfor σ'(z[l]) and for (9)",
            fontsize=9, color="0.35", va="center")
    ax.set(xlim=(-1.8, 14.6), ylim=(-2.1, 4.2))
    ax.axis("off")
    return fig


show(draw_backward_flow(), "02_backward_flow.png")

# %% [markdown]
# ## 5. A 2-2-1 network, worked by hand
#
# Two inputs, two sigmoid hidden units, one sigmoid output, the binary cross-entropy, one example $x = (1, 2)$ with
# $y = 1$:
#
# $$W[1] = \begin{pmatrix} 0.1 & -0.2 \\ 0.4 & 0.3 \end{pmatrix}, \quad b[1] = \begin{pmatrix} 0 \\ 0.1 \end{pmatrix},
#   \quad W[2] = \begin{pmatrix} 0.5 & -0.6 \end{pmatrix}, \quad b[2] = 0.2 .$$
#
# Every step is one equation, in NumPy with nothing but `exp` and `log`, printed to 4 significant digits. Try to
# predict each line before reading it.

# %%
sig = lambda z: 1 / (1 + np.exp(-z))
x1, y1 = np.array([1.0, 2.0]), 1.0
W1, b1 = np.array([[0.1, -0.2], [0.4, 0.3]]), np.array([0.0, 0.1])
W2, b2 = np.array([[0.5, -0.6]]), np.array([0.2])

z1 = W1 @ x1 + b1                          # (1): (0.1·1 - 0.2·2 + 0, 0.4·1 + 0.3·2 + 0.1)
a1 = sig(z1)                               # (2)
z2 = W2 @ a1 + b2                          # (1)
a2 = sig(z2)                               # (2): ŷ
ell = -np.log(a2[0])                       # ℓ = -[y log ŷ + (1 - y) log(1 - ŷ)] with y = 1
print(f"forward:   z[1] = {r4(z1)},  a[1] = σ(z[1]) = {r4(a1)}")
print(f"           z[2] = W[2] a[1] + b[2] = {r4(z2)},  ŷ = a[2] = {r4(a2)},  ℓ = -log ŷ = {ell:.4g}")

delta2 = a2 - y1                           # (8)
dW2, db2 = np.outer(delta2, a1), delta2    # (9), (10)
da1 = W2.T @ delta2                        # (11): ∂ℓ/∂a[1]
delta1 = da1 * a1 * (1 - a1)               # (12), with σ'(z[1]) = a[1](1 - a[1])
dW1, db1 = np.outer(delta1, x1), delta1    # (9), (10), with a[0] = x
print(f"backward:  δ[2] = ŷ - y = {r4(delta2)}")
print(f"           ∂ℓ/∂W[2] = δ[2] a[1]ᵀ = {r4(dW2)},  ∂ℓ/∂b[2] = {r4(db2)}")
print(f"           ∂ℓ/∂a[1] = W[2]ᵀ δ[2] = {r4(da1)},  σ'(z[1]) = {r4(a1 * (1 - a1))}")
print(f"           δ[1] = their product = {r4(delta1)}")
print(f"           ∂ℓ/∂W[1] = δ[1] xᵀ = {r4(dW1).replace(chr(10), '')},  ∂ℓ/∂b[1] = {r4(db1)}")
assert abs(ell - 0.7120) < 5e-5 and abs(delta2[0] + 0.5093) < 5e-5 and abs(delta1[0] + 0.06226) < 5e-6

# %% [markdown]
# The same computation as a graph, in the style of CS231n's circuit diagrams: each wire carries its forward value
# (green, above) and, after the backward pass, the gradient of the loss with respect to that value (red, below).
# The Σ gates hold the parameters; next to each, in red, the gradients of its weights and bias. Read the red numbers
# from right to left: the loss's own gradient is 1, the σ gate multiplies by $\sigma'$, a Σ gate sends $W^\top \delta$
# to its inputs (11) and $\delta\, a^\top$ to its weights (9).

# %%
def draw_graph_221():
    fig, ax = plt.subplots(figsize=(15, 6.2))
    pos = {"x1": (0, 1.6), "x2": (0, -1.6), "S1": (3.4, 1.6), "S2": (3.4, -1.6), "G1": (6.4, 1.6),
           "G2": (6.4, -1.6), "S3": (9.6, 0), "G3": (12.2, 0), "L": (14.8, 0)}
    labels = {"x1": "x₁", "x2": "x₂", "S1": "Σ", "S2": "Σ", "G1": "σ", "G2": "σ", "S3": "Σ", "G3": "σ",
              "L": "BCE\ny = 1"}
    for k, (px, py) in pos.items():
        ax.add_patch(plt.Circle((px, py), 0.42, fc={"x": "#dbe9f6", "S": "#fde8c8", "G": "#e3f2d9",
                                                   "L": "#f4cccc"}[k[0]], ec="k", zorder=3))
        ax.text(px, py, labels[k], ha="center", va="center", fontsize=11 if k != "L" else 8.5, zorder=4)

    def wire(p, q, value, grad, t=0.5):
        """An arrow p -> q, its value written above it (green) and its gradient below it (red), along the wire."""
        (px, py), (qx, qy) = pos[p], pos[q]
        dx, dy = qx - px, qy - py
        length = np.hypot(dx, dy)
        ux, uy = dx / length, dy / length                  # along the wire
        nx, ny = -uy, ux                                   # perpendicular to it, "above"
        ax.annotate("", xy=(qx - 0.44 * ux, qy - 0.44 * uy), xytext=(px + 0.44 * ux, py + 0.44 * uy),
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=1.2), zorder=1)
        mx, my = px + t * dx, py + t * dy
        angle = np.degrees(np.arctan2(dy, dx))
        for text, sign, color in ((f"{value:.4g}", 1, "green"), (f"{grad:.4g}", -1, "C3")):
            ax.text(mx + sign * 0.22 * nx, my + sign * 0.22 * ny, text, color=color, ha="center", va="center",
                    rotation=angle, rotation_mode="anchor", fontsize=10, fontweight="bold")

    for j in range(2):      # x_k -> Σ_j: value x_k, gradient W1[j, k] δ1[j] (this path's share of ∂ℓ/∂x_k)
        for k in range(2):
            wire(f"x{k + 1}", f"S{j + 1}", x1[k], W1[j, k] * delta1[j], t=0.45 if j == k else 0.25)
        wire(f"S{j + 1}", f"G{j + 1}", z1[j], delta1[j])          # z[1]_j, δ[1]_j
        wire(f"G{j + 1}", "S3", a1[j], da1[j], t=0.4)              # a[1]_j, ∂ℓ/∂a[1]_j
    wire("S3", "G3", z2[0], delta2[0])                             # z[2], δ[2]
    wire("G3", "L", a2[0], -1 / a2[0])                             # ŷ, ∂ℓ/∂ŷ = -1/ŷ (y = 1)
    ax.annotate("", xy=(16.2, 0), xytext=(15.22, 0), arrowprops=dict(arrowstyle="->", color="0.4"))
    ax.text(15.7, 0.2, f"{ell:.4g}", color="green", ha="center", va="bottom", fontsize=10, fontweight="bold")
    ax.text(15.7, -0.2, "1", color="C3", ha="center", va="top", fontsize=10, fontweight="bold")
    for j, dy in ((0, 0.62), (1, -0.62)):
        px, py = pos[f"S{j + 1}"]
        ax.text(px, py + (0.5 if dy > 0 else -0.5), f"w = ({W1[j, 0]:g}, {W1[j, 1]:g}), b = {b1[j]:g}\n"
                f"∂ℓ/∂w = ({dW1[j, 0]:.4g}, {dW1[j, 1]:.4g}), ∂ℓ/∂b = {db1[j]:.4g}",
                ha="center", va="bottom" if dy > 0 else "top", fontsize=8.5, color="0.2")
    ax.text(9.6, 0.55, f"w = ({W2[0, 0]:g}, {W2[0, 1]:g}), b = {b2[0]:g}\n∂ℓ/∂w = ({dW2[0, 0]:.4g}, "
            f"{dW2[0, 1]:.4g})\n∂ℓ/∂b = {db2[0]:.4g}", ha="center", va="bottom", fontsize=8.5, color="0.2")
    ax.text(0, -3.0, "green: forward value on the wire     red: ∂ℓ/∂(that value)", fontsize=10)
    ax.set(xlim=(-0.8, 16.5), ylim=(-3.2, 3.2), aspect="equal")
    ax.axis("off")
    return fig


show(draw_graph_221(), "02_graph_221.png")

# %% [markdown]
# Reading the graph: $\partial \ell / \partial \hat y = -1/\hat y = -2.038$ is large, and the output σ multiplies it
# by $\sigma'(z[2]) = \hat y (1 - \hat y) = 0.2499$, giving $\delta[2] = -0.5093 = \hat y - y$, (8). The output Σ sends
# $W[2]^\top \delta[2] = (0.5, -0.6) \cdot (-0.5093) = (-0.2547, 0.3056)$ down to the hidden units, whose σ gates
# multiply by their own σ' to give $\delta[1]$. Both weights of $W[2]$ have negative gradients, so gradient descent
# increases both (0.5 grows, -0.6 moves towards 0); since both hidden activities are positive, both changes raise
# $z[2]$ and so $\hat y$, towards $y = 1$. Where a value feeds several gates, the gradients coming back add up: the two
# red numbers on the wires leaving $x_k$ sum to $\partial \ell / \partial x_k$ (training does not need it, but (11)
# computes it the same way, and it is how $\partial \ell / \partial a[1]$ would collect contributions from several
# output units).
#
# `jax.grad` of the same loss gives the same nine numbers:

# %%
def loss_221(params):
    (W1_, b1_), (W2_, b2_) = params
    a2_ = sigmoid(W2_ @ sigmoid(W1_ @ x1 + b1_) + b2_)
    return -jnp.log(a2_[0])


params_221 = [(jnp.array(W1), jnp.array(b1)), (jnp.array(W2), jnp.array(b2))]
autodiff_221 = jax.grad(loss_221)(params_221)     # a pytree shaped like params_221
by_hand_221 = [(dW1, db1), (dW2, db2)]
print(f"max relative difference, by hand vs jax.grad: {rel_err(by_hand_221, autodiff_221):.1e}")
assert rel_err(by_hand_221, autodiff_221) < 1e-14

# %% [markdown]
# **Gate patterns.** CS231n's notes name what the simplest gates do to the gradient $g$ that reaches their output
# on the way back. An **add** gate *distributes*: each input receives $g$ unchanged, since $\partial(u + v)/\partial u
# = 1$. A **multiply** gate *swaps*: each input receives $g$ times the *other* input, since $\partial(uv)/\partial u
# = v$. A **max** gate *routes*: the larger input receives all of $g$, the others 0. A Σ gate above is made of multiplies
# $w_k a_k$ joined by an add, which is why each weight's gradient is δ times its input (9) and each input's is δ
# times its weight (11); ReLU is a max with 0. On $f = 2\,(x y + \max(z, w))$ at $(x, y, z, w) = (3, -4, 2, -1)$:
# the add passes $g = 2$ to both of its inputs, the multiply gives $x$ the gradient $2y = -8$ and $y$ the gradient
# $2x = 6$, and the max gives 2 to $z$ (the larger) and 0 to $w$.

# %%
def gates(x, y, z, w):
    return 2 * (x * y + jnp.maximum(z, w))


point = (3.0, -4.0, 2.0, -1.0)
by_pattern = (2 * point[1], 2 * point[0], 2.0, 0.0)    # multiply swaps, max routes, after the add distributes 2
autodiff_gates = tuple(float(g) for g in jax.grad(gates, argnums=(0, 1, 2, 3))(*point))
print(f"∂f/∂(x, y, z, w): by the gate patterns {by_pattern}, jax.grad {autodiff_gates}")
assert autodiff_gates == by_pattern

# %% [markdown]
# ## 6. Softmax with cross-entropy: δ through the Jacobian
#
# For $C$ classes the output layer uses the softmax,
#
# $$a_i = \frac{e^{z_i}}{\sum_{k=1}^{C} e^{z_k}} \qquad (13)$$
#
# which is *not* entrywise: every $a_i$ depends on every $z_j$ through the sum, so $\delta[L] = \partial \ell / \partial a
# \odot \sigma_L'$ does not apply. With $S = \sum_k e^{z_k}$, the quotient rule gives $\partial a_i / \partial z_i =
# (e^{z_i} S - e^{z_i} e^{z_i}) / S^2 = a_i - a_i^2$ and, for $i \ne j$, $\partial a_i / \partial z_j = -e^{z_i} e^{z_j}
# / S^2 = -a_i a_j$; in one formula, with $\mathbb 1[i = j]$ equal to 1 if $i = j$ and 0 otherwise,
#
# $$\frac{\partial a_i}{\partial z_j} = a_i\,\big(\mathbb 1[i = j] - a_j\big) \qquad (14)$$
#
# the $C \times C$ Jacobian $\operatorname{diag}(a) - a a^\top$. The chain rule sums over every path from $z_j$ to the
# loss, one through each $a_i$:
#
# $$\delta_j = \frac{\partial \ell}{\partial z_j} = \sum_{i=1}^{C} \frac{\partial \ell}{\partial a_i}\, \frac{\partial a_i}{\partial z_j} \qquad (15)$$
#
# For the cross-entropy with a target distribution $y$ (one-hot for a single class, $\sum_i y_i = 1$),
#
# $$\ell = -\sum_{i=1}^{C} y_i \log a_i, \qquad \frac{\partial \ell}{\partial a_i} = -\frac{y_i}{a_i} \qquad (16)$$
#
# and (15) becomes $\delta_j = \sum_i \left(-\frac{y_i}{a_i}\right) a_i (\mathbb 1[i = j] - a_j) = -y_j + a_j \sum_i y_i$,
# that is,
#
# $$\delta = a - y \qquad (17)$$
#
# the same as (8), through a different cancellation: the $a_i$ of the Jacobian cancels the $1/a_i$ of the log, and
# $\sum_i y_i = 1$ does the rest. Numerically, with `jax.jacobian` (the full matrix of partial derivatives of a
# vector function):

# %%
z = jnp.array([2.0, -1.0, 0.5])
y = jnp.array([0.0, 0.0, 1.0])                            # one-hot: class 3
soft = lambda z: softmax(z[None, :])[0]                   # softmax of one example
a = soft(z)
jacobian = jax.jacobian(soft)(z)                          # J[i, j] = ∂a_i/∂z_j
ce = lambda z: -jnp.sum(y * jnp.log(soft(z)))             # (16)
dl_da = -y / a
elementwise = dl_da * a * (1 - a)                         # ∂ℓ/∂a ⊙ (diagonal of J): wrong for softmax
jacobian_gap = float(jnp.max(jnp.abs(jacobian - (jnp.diag(a) - jnp.outer(a, a)))))   # (14)
print(f"a = {r4(a)};  max |J - (diag(a) - a aᵀ)| = {jacobian_gap:.1e}")
print(f"jax.grad: δ = {r4(jax.grad(ce)(z))};  (15) Jᵀ ∂ℓ/∂a = {r4(jacobian.T @ dl_da)};  (17) a - y = {r4(a - y)}")
print(f"entrywise ∂ℓ/∂a ⊙ a(1 - a) = {r4(elementwise)}  <- not the gradient")
assert jacobian_gap < 1e-15
assert jnp.allclose(jax.grad(ce)(z), a - y, atol=1e-15) and jnp.allclose(jacobian.T @ dl_da, a - y, atol=1e-15)
assert not jnp.allclose(elementwise, a - y, atol=0.1)

# %% [markdown]
# The entrywise formula keeps only the diagonal of the Jacobian. It gets the true class $c$ right,
# $-\frac{1}{a_c} a_c (1 - a_c) = a_c - 1$, but gives 0 to every other class, whose probability must go down:
# their true $\delta_j = a_j$ is positive. With a softmax output, (17) replaces (7)–(8)
# as $\delta[L]$; the rest of backpropagation, (9)–(12), is unchanged, because the hidden activations *are* entrywise.
#
# ## 7. A batch, and where the 1/n goes
#
# Training uses the mean loss over a batch of $B$ examples (rows), with $C$ outputs per example. The lesson's three
# losses (section 6 of the lesson), in the form the code computes:
#
# $$\text{MSE: } L = \frac1n \sum_{i=1}^{B} \sum_{c=1}^{C} (A_{ic} - Y_{ic})^2, \quad n = BC \qquad (18)$$
#
# $$\text{BCE: } L = -\frac1n \sum_{i,c} \big[ Y_{ic} \log A_{ic} + (1 - Y_{ic}) \log(1 - A_{ic}) \big], \quad n = BC \qquad (19)$$
#
# $$\text{CE: } L = -\frac1B \sum_{i=1}^{B} \sum_{c=1}^{C} Y_{ic} \log A_{ic} \qquad (20)$$
#
# The MSE and the BCE average over every entry; the CE averages over the examples the per-example sum (16) over the
# classes. Each term of these sums enters $L$ with weight $1/n$ ($1/B$ for the CE), so $\Delta[L] = \partial L /
# \partial Z[L]$ is, entry by entry, the one-example δ of (7), (8) or (17) divided by $n$ (or $B$):
#
# $$\Delta[L] = \begin{cases} \tfrac2n\,(A[L] - Y) & \text{MSE, identity output} \\
#   \tfrac1n\,(A[L] - Y) & \text{BCE, sigmoid output} \\
#   \tfrac1B\,(A[L] - Y) & \text{CE, softmax output} \end{cases} \qquad (21)$$
#
# (for the MSE with another entrywise output σ_L, (7) gives $\tfrac2n (A[L] - Y) \odot \sigma_L'(Z[L])$: exercise 1).
# The lesson's "$\delta[L] = a[L] - y$" is the BCE (or CE) line for a single example; its MSE has no ½, and its δ is
# the first line, with the factor 2.
#
# The recursion and the gradients act row by row, so in matrix form (12) and (9)–(10) become
#
# $$\Delta[l] = \big(\Delta[l+1]\, W[l+1]\big) \odot \sigma'(Z[l]) \qquad (22)$$
#
# $$\frac{\partial L}{\partial W[l]} = \Delta[l]^\top A[l-1], \qquad \frac{\partial L}{\partial b[l]} = \sum_{i=1}^{B} \Delta[l]_{i,:} \qquad (23)$$
#
# $\Delta[l]^\top A[l-1] = \sum_i \Delta[l]_{i,:}{}^\top A[l-1]_{i,:}$ is the sum over the examples of the outer
# products (9); the $1/n$ is already inside $\Delta$. (With examples as rows, $W^\top \delta$ for a column becomes
# $\Delta\, W$ for the rows.) The shapes alone recover (23): $\partial L / \partial W[l]$ has the shape of $W[l]$,
# $(n_l, n_{l-1})$, and the only product of $\Delta[l]$, $(B, n_l)$, and $A[l-1]$, $(B, n_{l-1})$, with that shape
# is $\Delta[l]^\top A[l-1]$: a quick check when writing any backward pass.
#
# ## 8. The backward pass in code
#
# (18)–(23), for any number of layers, any of the three hidden activations and the three losses:

# %%
def loss_value(params, X, Y, activation="tanh", loss="mse"):
    """The mean loss: squared error, binary cross-entropy, or cross-entropy with one-hot ``Y``."""
    A = forward(params, X, activation, loss)[1][-1]
    if loss == "mse":
        return jnp.mean((A - Y) ** 2)                                       # (18)
    if loss == "bce":
        return -jnp.mean(Y * jnp.log(A) + (1 - Y) * jnp.log(1 - A))         # (19)
    return -jnp.sum(Y * jnp.log(A)) / len(X)                                # (20)


def backward(params, X, Y, activation="tanh", loss="mse"):
    """The gradient of loss_value by the chain rule: a list of (dW, db) like params."""
    _, dsigma = ACTIVATIONS[activation]
    Zs, As = forward(params, X, activation, loss)
    n = Y.size if loss in ("mse", "bce") else len(X)  # how many terms the loss averages
    delta = (2 if loss == "mse" else 1) * (As[-1] - Y) / n  # (21): Δ[L] = ∂L/∂Z[L]
    grads = []
    for l in range(len(params), 0, -1):
        grads.insert(0, (delta.T @ As[l - 1], delta.sum(axis=0)))  # (23): ∂L/∂W[l] = Δ[l]ᵀ A[l-1], ∂L/∂b[l]
        if l > 1:
            delta = (delta @ params[l - 1][0]) * dsigma(Zs[l - 2])  # (22): Δ[l-1] = (Δ[l] W[l]) ⊙ σ'(Z[l-1])
    return grads


# %% [markdown]
# Indices: `params[l - 1]` is layer $l$, `As[l - 1]` is $A[l-1]$ and `Zs[l - 2]` is $Z[l-1]$. First, the 2-2-1 network
# of section 5 (a batch of one, so $n = 1$) must give the hand-computed numbers:

# %%
grads_221 = backward(params_221, jnp.array(x1)[None, :], jnp.array([[y1]]), "sigmoid", "bce")
print(f"∂L/∂W[1] = {r4(grads_221[0][0]).replace(chr(10), '')},  ∂L/∂W[2] = {r4(grads_221[1][0])}")
print(f"max relative difference from section 5's numbers: {rel_err(grads_221, by_hand_221):.1e}")
assert rel_err(grads_221, by_hand_221) < 1e-14

# %% [markdown]
# Then every combination of activation and loss on a random `[4, 16, 8, 3]` network and a batch of 32, against
# `jax.grad(loss_value)`. Its result has the same structure as `params`, a list of `(W, b)` tuples: a *pytree* (a
# nested structure of lists, tuples and dicts with arrays at the leaves), and `rel_err` compares two pytrees leaf by
# leaf with `jax.tree.leaves`.

# %%
params = init_params(jax.random.key(3), [4, 16, 8, 3])
k_x, k_y = jax.random.split(jax.random.key(4))
X = jax.random.normal(k_x, (32, 4))
targets = {"mse": jax.random.normal(k_y, (32, 3)),                                  # real numbers
           "bce": jax.random.bernoulli(k_y, 0.5, (32, 3)).astype(jnp.float64),     # 0 or 1 per output
           "ce": jax.nn.one_hot(jax.random.randint(k_y, (32,), 0, 3), 3)}          # one class per row
ours, reference = {}, {}
for activation in ACTIVATIONS:
    for loss, Y in targets.items():
        ours[activation, loss] = backward(params, X, Y, activation, loss)
        reference[activation, loss] = jax.grad(loss_value)(params, X, Y, activation, loss)
        difference = rel_err(ours[activation, loss], reference[activation, loss])
        print(f"{activation:>7}, {loss:>3}: max relative difference from jax.grad {difference:.1e}")
        assert difference < 1e-13

# %% [markdown]
# Agreement to about $10^{-16}$, the float64 rounding: the same numbers, computed two ways. (At exactly $z = 0$ ReLU
# has no derivative. Our σ' uses 0 there, like `jax.nn.relu`, while `jax.grad` of `jnp.maximum(z, 0)` returns 0.5:
# a check at an exact kink compares conventions, not mathematics. Random inputs never land on it.)
#
# ## 9. Gradient checking
#
# Autodiff is one reference; the other, which needs nothing but the loss itself, is the definition of the
# derivative. For each parameter $\theta_i$, with $e_i$ the unit vector of that parameter and a small step $h$, the
# **central difference**
#
# $$\frac{\partial L}{\partial \theta_i} \approx \frac{L(\theta + h e_i) - L(\theta - h e_i)}{2h} \qquad (24)$$
#
# has a truncation error $O(h^2)$ (the $h^2$ term of the Taylor series; the one-sided difference would have $O(h)$) and a
# rounding error of about $\varepsilon |L| / h$, with $\varepsilon \approx 2.2 \times 10^{-16}$ in float64: $h$ too
# large and the Taylor error dominates, too small and rounding does. First, by hand, one parameter at a time, every
# one of the 9 parameters of the 2-2-1 network:

# %%
def finite_differences(loss_of_params, params, h=1e-6):
    """(24) for every entry of every array of params, one at a time: a pytree like params."""
    flat, unflatten = ravel_pytree(params)   # all parameters as one vector θ, and the way back to a pytree
    loss_of_flat = jax.jit(lambda theta: loss_of_params(unflatten(theta)))   # compiled once, called 2 × size times
    grad = np.zeros(flat.size)
    for i in range(flat.size):
        step = np.zeros(flat.size)
        step[i] = h                                            # h e_i
        grad[i] = (loss_of_flat(flat + step) - loss_of_flat(flat - step)) / (2 * h)
    return unflatten(jnp.asarray(grad))


fd_221 = finite_differences(loss_221, params_221)
print(f"max relative difference, backward vs central differences: {rel_err(grads_221, fd_221):.1e}")
assert rel_err(grads_221, fd_221) < 1e-8

# %% [markdown]
# $10^{-10}$ or so, not $10^{-16}$: that is the finite differences' own error. (`ravel_pytree` flattens a pytree into
# one vector and returns the function that rebuilds the pytree; `jax.jit` compiles the loss once for the many
# calls, as in notebook 1.) How the error depends on $h$, for one parameter, $W[1]_{11}$ (JAX arrays cannot be
# changed in place: `W.at[0, 0].add(h)` returns a copy of `W` with $h$ added to that entry):

# %%
hs = np.logspace(-1, -13, 49)
exact = float(grads_221[0][0][0, 0])
fd_errors = []
for h in hs:
    plus = [(params_221[0][0].at[0, 0].add(h), params_221[0][1]), params_221[1]]
    minus = [(params_221[0][0].at[0, 0].add(-h), params_221[0][1]), params_221[1]]
    fd_errors.append(abs((float(loss_221(plus)) - float(loss_221(minus))) / (2 * h) - exact))
fd_errors = np.maximum(fd_errors, 1e-17)
best = hs[np.argmin(fd_errors)]
fig, ax = plt.subplots(figsize=(7, 4))
ax.loglog(hs, fd_errors, "o-", ms=3, label="|central difference - backward|")
ax.loglog(hs, 0.05 * hs ** 2, "--", color="0.5", label="∝ h² (Taylor)")
ax.loglog(hs, 2.2e-16 * ell / hs, ":", color="0.3", label="ε |ℓ| / h (rounding)")
ax.axvline(best, color="C3", lw=0.8)
ax.set(xlabel="step h", ylabel="error", ylim=(1e-17, 1e-2), title=f"∂ℓ/∂W[1]₁₁ by (24): best h ≈ {best:.0e}")
ax.legend(fontsize=8)
show(fig, "02_finite_difference_error.png")
print(f"error at h = 1e-2: {fd_errors[np.argmin(abs(hs - 1e-2))]:.1e},  at h = 1e-6: "
      f"{fd_errors[np.argmin(abs(hs - 1e-6))]:.1e},  at h = 1e-12: {fd_errors[np.argmin(abs(hs - 1e-12))]:.1e}")
assert 1e-7 < best < 1e-3 and fd_errors[np.argmin(abs(hs - 1e-6))] < 1e-9

# %% [markdown]
# The V shape: the error falls like $h^2$ until rounding takes over near $h \approx 10^{-5}$, then grows like $1/h$.
# So a finite-difference check can confirm a gradient to about $10^{-10}$ relative, not more; autodiff, which
# follows the same chain rule as we do, agrees to $10^{-16}$.
#
# One parameter at a time costs two evaluations of the loss per parameter: fine for 9, too slow for a real
# network. There, a finite difference along a random direction $v$, $(L(\theta + h v) - L(\theta - h v))/2h$,
# checks the directional derivative $g^\top v$ of the whole gradient at once, for two evaluations.
#
# **The library does the same.** This is the notebook's only use of the library this project builds, `jaxmlp`
# (the appendix notebook tours it). Its `jaxmlp.check_gradients` compares our `backward` with `jax.grad` entry by
# entry and with central differences along coordinates or random directions, in float64, and reports one row per
# parameter array (`[l][0]` is layer $l+1$'s $W$, `[l][1]` its $b$). On the lesson's network `[5, 64, 32, 16, 1]`
# (tanh hidden layers, sigmoid output, BCE, a batch of 16):

# %%
import jaxmlp

Y_bce = jax.random.bernoulli(jax.random.key(6), 0.5, (16, 1)).astype(jnp.float64)
X_bce = jax.random.normal(jax.random.key(5), (16, 5))
backward_bce = partial(backward, activation="tanh", loss="bce")
loss_bce = partial(loss_value, activation="tanh", loss="bce")
report = jaxmlp.check_gradients(lesson_params, X_bce, Y_bce, loss_fn=loss_bce,
                                backward_fn=lambda p, X, Y: (loss_bce(p, X, Y), backward_bce(p, X, Y)))
print(f"{'leaf':>8} {'shape':>9} {'finite differences':>19} {'vs jax.grad':>12} {'vs fin. diff.':>14} {'ok':>4}")
for row, leaf in zip(report.rows, jax.tree.leaves(lesson_params)):
    print(f"{row.path:>8} {str(leaf.shape):>9} {row.fd_checked:>19} {row.autodiff.max_rel:12.1e} "
          f"{row.finite_diff.max_rel:14.1e} {str(row.ok):>4}")
print("all ok:", report.ok)
assert report.ok and all(row.autodiff.max_rel < 1e-12 and row.finite_diff.max_rel < 1e-6 for row in report.rows)

# %% [markdown]
# Every entry agrees with autodiff to rounding, and every direction with finite differences to their own accuracy.
# A mistake in `backward` (a missing σ', a transposed $W$, a forgotten $1/n$) shows up as a failing row, and the
# row says which layer: exercise 4 plants one.
#
# ## 10. The same code as a module, `mlp_by_hand`
#
# `notebooks/mlp_by_hand.py` holds exactly the functions of sections 1 and 8, so that notebooks 3 and 4 can import
# them. It must give the same numbers as the cells above, and as `jax.grad`:

# %%
import mlp_by_hand

worst_module, worst_autodiff = 0.0, 0.0
for (activation, loss), grads in ours.items():
    module = mlp_by_hand.backward(params, X, targets[loss], activation, loss)
    worst_module = max(worst_module, rel_err(module, grads))
    worst_autodiff = max(worst_autodiff, rel_err(module, reference[activation, loss]))
    assert float(mlp_by_hand.loss_value(params, X, targets[loss], activation, loss)) == float(
        loss_value(params, X, targets[loss], activation, loss))
print(f"mlp_by_hand.backward vs this notebook's backward: max relative difference {worst_module:.1e}")
print(f"mlp_by_hand.backward vs jax.grad (section 8): max relative difference {worst_autodiff:.1e}")
assert worst_module == 0.0 and worst_autodiff < 1e-13

# %% [markdown]
# ## 11. Takeaways
#
# - The chain rule, applied to one neuron, gives $\partial \ell / \partial w = \delta\, x$ with the error signal
#   $\delta = \partial \ell / \partial z$ (4)–(6); a layer passes $W^\top \delta$ down (11); a network repeats it,
#   $\delta[l] = (W[l+1]^\top \delta[l+1]) \odot \sigma'(z[l])$ (12).
# - $\delta[L] = a[L] - y$ holds for a sigmoid with the binary cross-entropy (8) and for a softmax with the
#   cross-entropy (17), by two different cancellations; the squared error gives $2(a - y)\sigma_L'$ (7). The softmax's
#   Jacobian is not diagonal (14), so its δ is a sum over classes (15).
# - Averaged losses put a $1/n$ in $\Delta[L]$ (21); the batch form (22)–(23) sums the per-example outer products.
#   For one example, (5) (with its cases (7) and (8)), (12), (10) and (9) are the four "fundamental equations"
#   BP1–BP4 of Nielsen's *Neural Networks and Deep Learning*, chapter 2.
# - The whole backward pass is about 15 lines (section 8) and costs about two forward passes.
# - Check a backward pass against autodiff (to $10^{-16}$ in float64) and against central differences (to about
#   $10^{-10}$–$10^{-9}$, limited by their own truncation and rounding).
#
# Notebook 3 uses this code to study initialization, notebook 4 to compare optimizers.
#
# ## 12. Exercises
#
# Solutions are at the end of the notebook; try first. Each extends `backward` or uses the checks above.
#
# 1. **Another loss: squared error on a sigmoid output.** Derive $\Delta[L]$ for the MSE (18) when the output is a
#    sigmoid rather than the identity, write `backward_mse_sigmoid(params, X, Y, activation)`, and check it against
#    `jax.grad`. Then compare $\delta$ for one example with $y = 1$ and $z = -10$ (confidently wrong) under this
#    loss and under the BCE: which one learns?
# 2. **Another activation: softplus.** $\sigma(z) = \log(1 + e^z)$ is a smooth ReLU. Derive σ', add
#    `"softplus"` to `ACTIVATIONS`, and check that `backward` (unchanged) agrees with `jax.grad`.
# 3. **Weight decay.** Training often minimizes $L + \frac{\lambda}{2} \sum_l \lVert W[l] \rVert^2$ (the sum of
#    the squares of all weights, not biases). What does this add to each gradient? Extend `backward` and check.
# 4. **Find the bug.** The function below forgets the $\odot\, \sigma'(Z[l])$ of (22). Using `finite_differences`,
#    find which layers' gradients are wrong, and explain why the others are right.
# 5. **Softmax with the squared error.** For $\ell = \sum_i (a_i - y_i)^2$ with a softmax output there is no
#    cancellation. Using (14)–(15), show that $\delta_j = a_j\,(g_j - \sum_i g_i a_i)$ with $g = \partial \ell /
#    \partial a$, and check it against `jax.grad` for one example.

# %%
def backward_buggy(params, X, Y, activation="tanh", loss="mse"):
    """backward with a bug: the σ'(Z[l]) factor of (22) is missing."""
    Zs, As = forward(params, X, activation, loss)
    n = Y.size if loss in ("mse", "bce") else len(X)
    delta = (2 if loss == "mse" else 1) * (As[-1] - Y) / n
    grads = []
    for l in range(len(params), 0, -1):
        grads.insert(0, (delta.T @ As[l - 1], delta.sum(axis=0)))
        if l > 1:
            delta = delta @ params[l - 1][0]          # missing: * dsigma(Zs[l - 2])
    return grads


# %% [markdown]
# ## Solutions
#
# **1.** By (7) for each entry and the $1/n$ of (18), $\Delta[L] = \tfrac2n (A[L] - Y) \odot A[L] \odot (1 - A[L])$,
# using $\sigma' = \sigma(1 - \sigma)$. For $y = 1$, $z = -10$: $a \approx 4.5 \times 10^{-5}$; the squared error
# gives $\delta = 2(a - 1)\,a(1-a) \approx -9 \times 10^{-5}$, almost no gradient although the prediction is as wrong
# as it can be (the sigmoid is saturated), while the BCE gives $\delta = a - 1 \approx -1$. That is why a sigmoid
# output is trained with the cross-entropy.

# %%
def backward_mse_sigmoid(params, X, Y, activation="tanh"):
    _, dsigma = ACTIVATIONS[activation]
    Zs, As = forward(params, X, activation, "bce")          # "bce" only selects the sigmoid output
    delta = 2 * (As[-1] - Y) / Y.size * As[-1] * (1 - As[-1])  # Δ[L] = (2/n)(A - Y) ⊙ σ'(Z[L])
    grads = []
    for l in range(len(params), 0, -1):
        grads.insert(0, (delta.T @ As[l - 1], delta.sum(axis=0)))
        if l > 1:
            delta = (delta @ params[l - 1][0]) * dsigma(Zs[l - 2])
    return grads


def mse_sigmoid(params, X, Y, activation="tanh"):
    return jnp.mean((forward(params, X, activation, "bce")[1][-1] - Y) ** 2)


Y01 = targets["bce"]
difference = rel_err(backward_mse_sigmoid(params, X, Y01), jax.grad(mse_sigmoid)(params, X, Y01))
a_wrong = sigmoid(-10.0)
print(f"max relative difference from jax.grad: {difference:.1e}")
print(f"y = 1, z = -10: δ(squared error) = {float(2 * (a_wrong - 1) * a_wrong * (1 - a_wrong)):.2e}, "
      f"δ(BCE) = {float(a_wrong - 1):.4f}")
assert difference < 1e-13 and abs(float(2 * (a_wrong - 1) * a_wrong * (1 - a_wrong))) < 1e-4

# %% [markdown]
# **2.** $\frac{d}{dz} \log(1 + e^z) = \frac{e^z}{1 + e^z} = \sigma(z)$, the sigmoid. `backward` looks σ' up in
# `ACTIVATIONS`, so one new entry is all it takes. (`jnp.logaddexp(z, 0)` computes $\log(e^z + e^0)$ without
# overflow.)

# %%
ACTIVATIONS["softplus"] = (lambda z: jnp.logaddexp(z, 0.0), sigmoid)
difference = max(rel_err(backward(params, X, Y, "softplus", loss), jax.grad(loss_value)(params, X, Y, "softplus", loss))
                 for loss, Y in targets.items())
print(f"softplus, all three losses: max relative difference from jax.grad {difference:.1e}")
assert difference < 1e-13
del ACTIVATIONS["softplus"]

# %% [markdown]
# **3.** $\frac{\partial}{\partial W[l]} \frac{\lambda}{2} \lVert W[l] \rVert^2 = \lambda W[l]$, and nothing for the
# biases; so each $\partial L / \partial W[l]$ gains $\lambda W[l]$. A gradient step then multiplies every weight by
# $(1 - \eta\lambda)$ before the usual update: the weights "decay".

# %%
lam = 1e-2


def backward_decay(params, X, Y, activation="tanh", loss="mse"):
    return [(dW + lam * W, db) for (dW, db), (W, _) in zip(backward(params, X, Y, activation, loss), params)]


def loss_decay(params, X, Y, activation="tanh", loss="mse"):
    return loss_value(params, X, Y, activation, loss) + lam / 2 * sum(jnp.sum(W ** 2) for W, _ in params)


difference = rel_err(backward_decay(params, X, targets["ce"], "relu", "ce"),
                     jax.grad(loss_decay)(params, X, targets["ce"], "relu", "ce"))
print(f"max relative difference from jax.grad: {difference:.1e}")
assert difference < 1e-13

# %% [markdown]
# **4.** Compare layer by layer with finite differences (a smaller network keeps the one-at-a-time loop short). The
# last layer is right: its $\Delta[L]$ comes from (21) and its gradient from (23), before the bug is reached. Every
# layer below is wrong, since each $\Delta[l]$ with $l < L$ misses the factor $\sigma'(Z[l])$.

# %%
small = init_params(jax.random.key(7), [3, 5, 4, 2])
Xs, Ys = jax.random.normal(jax.random.key(8), (6, 3)), jax.random.normal(jax.random.key(9), (6, 2))
fd = finite_differences(lambda p: loss_value(p, Xs, Ys, "tanh", "mse"), small)
layer_errors = [rel_err(g, f) for g, f in zip(backward_buggy(small, Xs, Ys), fd)]
print("relative error per layer:", r4(layer_errors))
assert layer_errors[-1] < 1e-8 and min(layer_errors[:-1]) > 1e-2

# %% [markdown]
# **5.** (15) with (14): $\delta_j = \sum_i g_i\, a_i (\mathbb 1[i = j] - a_j) = a_j g_j - a_j \sum_i g_i a_i =
# a_j (g_j - g^\top a)$, here with $g = 2(a - y)$.

# %%
y5 = jnp.array([0.0, 1.0, 0.0])
z5 = jnp.array([0.3, -1.2, 2.0])
a5 = soft(z5)
g5 = 2 * (a5 - y5)
delta5 = a5 * (g5 - g5 @ a5)
reference5 = jax.grad(lambda z: jnp.sum((soft(z) - y5) ** 2))(z5)
print(f"δ = {r4(delta5)}, jax.grad {r4(reference5)}")
assert jnp.allclose(delta5, reference5, atol=1e-15)
