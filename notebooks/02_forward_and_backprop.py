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
# # 2. Forward propagation and backpropagation, layer by layer
#
# For layers $l = 1, \dots, L$, with $a[0] = x$, σ the hidden activation and $\sigma_L$ the output's
# (the equations of `jaxmlp.backprop`):
#
# $$z[l] = W[l]\, a[l-1] + b[l] \quad (F1) \qquad a[l] = \sigma_l(z[l]) \quad (F2)$$
#
# and backward, with $\delta[l] = \partial L / \partial z[l]$ and $\odot$ the elementwise product:
#
# $$\delta[L] = \frac{\partial L}{\partial a[L]} \odot \sigma_L'(z[L]) \quad (B1) \qquad
#   \delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l]) \quad (B2)$$
#
# $$\frac{\partial L}{\partial W[l]} = \delta[l]\, a[l-1]^\top \quad (B3) \qquad
#   \frac{\partial L}{\partial b[l]} = \delta[l] \quad (B4)$$
#
# This notebook first **derives** (B1)–(B4) from the chain rule and works a 2-2-1 network by hand, then
# follows the network `[5, 64, 32, 16, 1]` through one forward and one backward pass and checks every
# number against autodiff.

# %%
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp

# %% [markdown]
# ## The chain rule, for the output layer
#
# Take one example and the last layer: $z[L] = W[L] a[L-1] + b[L]$, $a[L] = \sigma_L(z[L])$, and the loss
# $L$ a function of $a[L]$. The weight $W[L]_{jk}$ reaches the loss only through $z[L]_j$, and $z[L]_j$
# only through $a[L]_j$, so the chain rule is a product of three factors:
#
# $$\frac{\partial L}{\partial W[L]_{jk}}
#   = \underbrace{\frac{\partial L}{\partial a[L]_j}}_{\text{loss}}\;
#     \underbrace{\frac{\partial a[L]_j}{\partial z[L]_j}}_{\sigma_L'(z[L]_j)}\;
#     \underbrace{\frac{\partial z[L]_j}{\partial W[L]_{jk}}}_{a[L-1]_k}
#   = \delta[L]_j \, a[L-1]_k .$$
#
# The first two factors are $\delta[L]_j = \partial L / \partial z[L]_j$, which is (B1); the third says
# the gradient of a weight is "error at its output times activity at its input", which is (B3):
# $\partial L/\partial W[L] = \delta[L]\, a[L-1]^\top$ (an outer product). Since
# $\partial z[L]_j / \partial b[L]_j = 1$, $\partial L / \partial b[L] = \delta[L]$, which is (B4).
#
# ### δ[L] = a − y for a sigmoid output with binary cross-entropy
#
# With $a = \sigma(z)$ and the binary cross-entropy of one example,
# $\ell = -[\,y \log a + (1-y) \log(1-a)\,]$:
#
# $$\frac{\partial \ell}{\partial a} = -\frac{y}{a} + \frac{1-y}{1-a} = \frac{a - y}{a(1-a)}, \qquad
#   \sigma'(z) = \sigma(z)(1 - \sigma(z)) = a(1-a),$$
#
# $$\delta[L] = \frac{\partial \ell}{\partial a}\, \sigma'(z) = \frac{a-y}{a(1-a)} \cdot a(1-a) = a - y .$$
#
# The sigmoid's $a(1-a)$ cancels the denominator of the log's derivative. (The softmax with the
# cross-entropy $\ell = -\sum_c y_c \log a_c$ gives the same $\delta[L] = a - y$ through the same
# cancellation of its Jacobian.) jaxmlp never forms $\partial \ell / \partial a$, which is $-1/a$ and
# overflows as $a \to 0$; it uses the cancelled form directly.
#
# ### (B2): one layer down
#
# $z[l]$ reaches the loss only through the next layer, $z[l+1] = W[l+1]\,\sigma(z[l]) + b[l+1]$, whose
# entry $i$ depends on $z[l]_j$ with
# $\partial z[l+1]_i / \partial z[l]_j = W[l+1]_{ij}\, \sigma'(z[l]_j)$. Summing over every path $i$:
#
# $$\delta[l]_j = \sum_i \frac{\partial L}{\partial z[l+1]_i} \frac{\partial z[l+1]_i}{\partial z[l]_j}
#   = \Big(\sum_i W[l+1]_{ij}\, \delta[l+1]_i\Big) \sigma'(z[l]_j)
#   = \big(W[l+1]^\top \delta[l+1]\big)_j\, \sigma'(z[l]_j),$$
#
# which is (B2). (B3) and (B4) hold in every layer for the same reason as in the last one: $W[l]$ and
# $b[l]$ reach the loss only through $z[l]$.

# %% [markdown]
# ## A 2-2-1 network by hand
#
# Sigmoid hidden units, a sigmoid output, binary cross-entropy, one example $x = (1, 2)$ with $y = 1$:
#
# $$W[1] = \begin{pmatrix} 0.1 & -0.2 \\ 0.4 & 0.3 \end{pmatrix}, \quad b[1] = \begin{pmatrix} 0 \\ 0.1 \end{pmatrix},
#   \quad W[2] = \begin{pmatrix} 0.5 & -0.6 \end{pmatrix}, \quad b[2] = 0.2 .$$
#
# Every step below is one equation, in float64 NumPy, with nothing but `exp` and `log`.

# %%
sig = lambda z: 1.0 / (1.0 + np.exp(-z))
x1 = np.array([1.0, 2.0]); y1 = 1.0
W1 = np.array([[0.1, -0.2], [0.4, 0.3]]); b1 = np.array([0.0, 0.1])
W2 = np.array([[0.5, -0.6]]); b2 = np.array([0.2])

z1 = W1 @ x1 + b1;  a1 = sig(z1)             # (F1), (F2), layer 1
z2 = W2 @ a1 + b2;  a2 = sig(z2)             # (F1), (F2), layer 2 = L
loss = -(y1 * np.log(a2[0]) + (1 - y1) * np.log(1 - a2[0]))
print(f"forward:  z[1] = {z1},  a[1] = {a1}")
print(f"          z[2] = {z2},  a[2] = ŷ = {a2},  loss = -log ŷ = {loss:.6f}")

dl_da = (a2 - y1) / (a2 * (1 - a2))          # ∂ℓ/∂a for BCE
delta2 = dl_da * a2 * (1 - a2)               # (B1): ∂ℓ/∂a · σ'(z[2])
print(f"backward: ∂ℓ/∂a[2] = {dl_da},  σ'(z[2]) = {a2 * (1 - a2)}")
print(f"          δ[2] = their product = {delta2}  =  a[2] - y = {a2 - y1}")
dW2 = np.outer(delta2, a1); db2 = delta2     # (B3), (B4)
delta1 = (W2.T @ delta2) * a1 * (1 - a1)      # (B2): W[2]ᵀ δ[2] ⊙ σ'(z[1])
dW1 = np.outer(delta1, x1); db1 = delta1     # (B3), (B4), with a[0] = x
print(f"          ∂L/∂W[2] = δ[2] a[1]ᵀ = {dW2},  ∂L/∂b[2] = {db2}")
print(f"          δ[1] = W[2]ᵀ δ[2] ⊙ a[1](1 - a[1]) = {W2.T @ delta2} ⊙ {a1 * (1 - a1)} = {delta1}")
print(f"          ∂L/∂W[1] = δ[1] xᵀ = {dW1.tolist()},  ∂L/∂b[1] = {db1}")
assert np.allclose(delta2, a2 - y1, rtol=1e-12)  # the σ(1-σ) cancellation

# %% [markdown]
# The same network in jaxmlp (batch of one; jaxmlp works in float32 here), its hand-written `backward` and
# `jax.grad` of its loss must give these numbers, to float32 rounding:

# %%
tiny = (jaxmlp.Layer(jnp.asarray(W1, jnp.float32), jnp.asarray(b1, jnp.float32)),
        jaxmlp.Layer(jnp.asarray(W2, jnp.float32), jnp.asarray(b2, jnp.float32)))
tiny_kw = dict(activation="sigmoid", output_activation="sigmoid", loss="bce")
x_one, y_one = jnp.asarray(x1[None, :], jnp.float32), jnp.asarray([[y1]], jnp.float32)
tiny_loss, tiny_grads = jaxmlp.backward(tiny, x_one, y_one, **tiny_kw)
tiny_autodiff = jax.grad(partial(jaxmlp.loss_fn, **tiny_kw))(tiny, x_one, y_one)
by_hand = ((dW1, db1), (dW2, db2))
for l, (g, r, (dW, db)) in enumerate(zip(tiny_grads, tiny_autodiff, by_hand), start=1):
    print(f"layer {l}: backward dW = {np.asarray(g.W).tolist()}, jax.grad dW = {np.asarray(r.W).tolist()}")
    for ours in (g, r):
        assert np.allclose(ours.W, dW, rtol=1e-5, atol=1e-7) and np.allclose(ours.b, db, rtol=1e-5, atol=1e-7)
print(f"loss: by hand {loss:.6f}, backward {float(tiny_loss):.6f}")
assert abs(float(tiny_loss) - loss) < 1e-6

# %% [markdown]
# ## The batched form, and the lesson's δ[L] = a[L] − y
#
# The code is batch-first: the rows of $A[l]$ are the $B$ examples, $Z[l] = A[l-1] W[l]^\top + \mathbf 1 b[l]^\top$,
# $\Delta[l] = (\Delta[l+1] W[l+1]) \odot \sigma'(Z[l])$, and (B3)–(B4) become sums over the batch,
# $\partial L/\partial W[l] = \Delta[l]^\top A[l-1]$. The loss is a *mean* over $n$ numbers, and its $1/n$
# enters once, in $\Delta[L]$. With $C$ outputs, $n = BC$ for the mean squared error and the binary
# cross-entropy, and $n = B$ for the softmax cross-entropy (whose per-example loss sums over classes):
#
# $$\text{MSE: } L = \frac{1}{BC}\sum_{b,c} (a[L]_{bc} - y_{bc})^2 \quad (L1) \qquad\Rightarrow\qquad
#   \Delta[L] = \tfrac{2}{n}(A[L] - Y) \odot \sigma_L'(Z[L]) \quad \text{(B1-mse)}$$
#
# $$\text{BCE, sigmoid output: } \Delta[L] = \tfrac1n (A[L] - Y) \quad \text{(B1-bce)} \qquad
#   \text{CE, softmax output: } \Delta[L] = \tfrac1n (A[L] - Y) \quad \text{(B1-ce)}$$
#
# So the lesson's $\delta[L] = a[L] - y$ is (B1-bce) or (B1-ce) for one example ($n = 1$). (B1-mse) is
# not a contradiction: it is the same (B1), $\partial L/\partial a \odot \sigma_L'$, for another loss. With
# the identity output ($\sigma_L' = 1$) of the network below it is $\tfrac2n(A[L] - Y)$; with the lesson's
# convention $\ell = \tfrac12 (a - y)^2$ for one example, the 2 cancels and it too reads $a - y$. The
# check below confirms it on the network that follows: $\tfrac n2 \Delta[L] = A[L] - Y$.
#
# We follow the network `[5, 64, 32, 16, 1]` (tanh hidden layers, identity output, MSE).

# %%
sizes = [5, 64, 32, 16, 1]
kw = dict(activation="tanh", loss="mse")

key, k_x = jax.random.split(jax.random.key(0))
params = jaxmlp.init_mlp(key, sizes, init="xavier")
B = 16
x = jax.random.normal(k_x, (B, 5))
y = jnp.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]  # (B, 1), shaped like the output

deltas = jaxmlp.backprop.deltas(params, x, y, **kw)
a_L = jaxmlp.forward(params, x, activation="tanh", output_activation="identity")
n = y.size  # B·C = 16
gap = float(jnp.max(jnp.abs(n / 2 * deltas[-1] - (a_L - y))))
print(f"max |(n/2) Δ[L] - (A[L] - Y)| = {gap:.1e}")
assert gap < 1e-6

# %% [markdown]
# ## Forward: shapes of every $W[l]$, $z[l]$, $a[l]$
#
# `forward_with_cache` returns the output and a `Cache` indexed as the lesson is: `cache.z[l]`,
# `cache.a[l]` for $l = 1..L$, and `cache.a[0] = x` (`cache.z[0]` is `None`).

# %%
out, cache = jaxmlp.forward_with_cache(params, x, activation="tanh", output_activation="identity")

print(f"{'l':>2}  {'W[l]':>9}  {'b[l]':>6}  {'z[l]':>9}  {'a[l]':>9}  {'std z[l]':>8}")
print(f"{0:>2}  {'':>9}  {'':>6}  {'':>9}  {str(cache.a[0].shape):>9}")
for l, (W, b) in enumerate(params, start=1):
    print(f"{l:>2}  {str(W.shape):>9}  {str(b.shape):>6}  {str(cache.z[l].shape):>9}  "
          f"{str(cache.a[l].shape):>9}  {float(jnp.std(cache.z[l])):8.3f}")
print("output a[L] is cache.a[-1]:", bool(jnp.all(out == cache.a[-1])))

# %% [markdown]
# ## Backward: δ per layer, by hand and by autodiff
#
# `jaxmlp.backprop.deltas` runs (B1)–(B2) and returns $(\text{None}, \Delta[1], \dots, \Delta[L])$,
# each of shape $(B, n_l)$ like $Z[l]$. Autodiff cannot return a δ directly, since $z[l]$ is not an
# input; `compare_deltas` gets it by adding a zero perturbation $dZ[l]$ to every $z[l]$ and
# differentiating the loss with respect to it: $\partial L / \partial (dZ[l]) = \partial L/\partial z[l]$.
# In float32 the two agree to rounding (max rel below $10^{-6}$ in every layer).

# %%
report = jaxmlp.compare_deltas(params, x, y, **kw)
print(report)
assert max(r.max_rel for r in report.rows) < 1e-6

# %% [markdown]
# The size of δ per layer shows how the error signal flows back: each (B2) step multiplies by
# $W[l+1]^\top$ and by $\sigma'(z[l]) \le 1$. The bars are the hand-written δ, the dots autodiff's.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
layers = np.arange(1, len(params) + 1)
rms = lambda d: float(jnp.sqrt(jnp.mean(d ** 2)))
axes[0].bar(layers, [rms(report.manual[l]) for l in layers], color="C0", alpha=0.6, label="manual (B1)-(B2)")
axes[0].plot(layers, [rms(report.autodiff[l]) for l in layers], "ko", label="autodiff")
axes[0].set(xlabel="layer l", ylabel="rms of δ[l] over batch and units", yscale="log", xticks=layers,
            title="δ[l] = ∂L/∂z[l]")
axes[0].legend()
l = 2
axes[1].scatter(np.ravel(report.autodiff[l]), np.ravel(report.manual[l]), s=6)
axes[1].set(xlabel=f"autodiff δ[{l}]", ylabel=f"manual δ[{l}]",
            title=f"all {report.manual[l].size} entries of δ[{l}], max abs diff {report.rows[l - 1].max_abs:.1e}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The gradient check
#
# `jaxmlp.backward` turns the deltas into gradients with (B3)–(B4). `check_gradients` compares them, in
# float64, with `jax.grad(loss_fn)` and with central finite differences, one parameter at a time:
#
# $$\frac{\partial L}{\partial \theta_i} \approx \frac{L(\theta + h e_i) - L(\theta - h e_i)}{2h} \quad (G1)$$
#
# whose error is $O(h^2) + O(\varepsilon_\text{mach}/h)$: autodiff should agree to ~1e-15, finite
# differences only to ~1e-9. One row per layer and leaf, so a wrong backward shows *where* it is wrong.
# With ReLU, a pre-activation closer to the kink than a step can move it makes (G1) straddle the kink,
# where it means nothing; the "near kink" column counts those,
#
# $$|z[l]_j| < h\,(1 + \|a[l-1]\|_\infty) \quad (G2)$$
#
# (tanh has no kink, so the column is 0 here).

# %%
grad_report = jaxmlp.check_gradients(params, x, y, **kw)
print(grad_report)
print(f"max rel error: against jax.grad {grad_report.max_rel_autodiff:.1e}, "
      f"against finite differences {grad_report.max_rel_fd:.1e}")
assert grad_report.ok and grad_report.max_rel_autodiff < 1e-14 and grad_report.max_rel_fd < 1e-8

# %% [markdown]
# ## Per-example gradients
#
# The loss is the mean of per-example losses, $L = \frac1B \sum_b \ell_b$. The same recursion, with
# $n = C$ instead of $n = BC$ in (B1), gives every example's δ at once, and (B3) becomes an outer
# product per row: $\partial \ell_b / \partial W[l] = \Delta[l]_b \otimes A[l-1]_b$, with no loop over
# examples. `jaxmlp.per_example_grads` returns leaves with a leading batch axis; the autodiff reference
# is `jax.vmap(jax.grad(loss_fn))` over single examples. A larger batch this time, 256 examples:

# %%
B = 256
x = jax.random.normal(jax.random.key(2), (B, 5))
y = jnp.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]

per_example = jax.jit(partial(jaxmlp.per_example_grads, **kw))(params, x, y)
reference = jax.jit(jax.vmap(jax.grad(partial(jaxmlp.loss_fn, **kw)), in_axes=(None, 0, 0)))(params, x, y)
loss, grads = jax.jit(partial(jaxmlp.backward, **kw))(params, x, y)

for l, (g, r) in enumerate(zip(per_example, reference), start=1):
    rel = max(float(jnp.max(jnp.abs(g.W - r.W)) / jnp.max(jnp.abs(r.W))),
              float(jnp.max(jnp.abs(g.b - r.b)) / jnp.max(jnp.abs(r.b))))
    print(f"layer {l}: dW {g.W.shape}, db {g.b.shape}; max |manual - vmap(grad)| / max |vmap(grad)| = {rel:.1e}")
    assert rel < 1e-5
mean_vs_batch = max(float(jnp.max(jnp.abs(jnp.mean(a, axis=0) - b)))
                    for a, b in zip(jax.tree.leaves(per_example), jax.tree.leaves(grads)))
print(f"max |mean over examples - backward's batch gradient| = {mean_vs_batch:.1e}")
assert mean_vs_batch < 1e-5

# %% [markdown]
# Per-example gradients are what differential privacy clips and what gradient-noise studies measure.
# Their spread is large next to their mean: the median example's gradient is here about twice as long as
# the gradient of the batch mean (their directions partly cancel in the mean), so a minibatch gradient
# (notebook 4's SGD) is a noisy estimate.

# %%
norms = np.sqrt(sum(np.sum(np.asarray(leaf).reshape(B, -1) ** 2, axis=1) for leaf in jax.tree.leaves(per_example)))
batch_norm = float(np.sqrt(sum(np.sum(np.asarray(leaf) ** 2) for leaf in jax.tree.leaves(grads))))
print(f"median per-example norm {np.median(norms):.3f}, norm of the batch mean {batch_norm:.3f}, "
      f"ratio {np.median(norms) / batch_norm:.1f}")
assert np.median(norms) > 1.5 * batch_norm
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.hist(norms, bins=32, color="C0", alpha=0.7, label="‖∂ℓ_b/∂θ‖, one per example")
ax.axvline(batch_norm, color="C3", lw=2, label="‖∂L/∂θ‖ of the batch mean")
ax.set(xlabel="gradient norm", ylabel="examples", title=f"per-example gradients, B = {B}")
ax.legend()
fig.tight_layout()
plt.show()
