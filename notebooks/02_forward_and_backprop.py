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
# For layers $l = 1, \dots, L$, with $a[0] = x$ (equations of `jaxmlp.backprop`):
#
# $$z[l] = W[l]\, a[l-1] + b[l] \quad (F1) \qquad a[l] = \sigma_l(z[l]) \quad (F2)$$
#
# and backward, with $\delta[l] = \partial L / \partial z[l]$:
#
# $$\delta[L] = \frac{\partial L}{\partial a[L]} \odot \sigma_L'(z[L]) \quad (B1) \qquad
#   \delta[l] = W[l+1]^\top \delta[l+1] \odot \sigma'(z[l]) \quad (B2)$$
#
# $$\frac{\partial L}{\partial W[l]} = \delta[l]\, a[l-1]^\top \quad (B3) \qquad
#   \frac{\partial L}{\partial b[l]} = \delta[l] \quad (B4)$$
#
# The code is batch-first: the rows of $A[l]$ are the examples, $Z[l] = A[l-1] W[l]^\top + \mathbf 1 b[l]^\top$,
# $\Delta[l] = (\Delta[l+1] W[l+1]) \odot \sigma'(Z[l])$, and (B3)–(B4) become sums over the batch,
# $\partial L/\partial W[l] = \Delta[l]^\top A[l-1]$. The loss is a mean, and its $1/n$ enters once, in
# $\Delta[L]$: for MSE, $\Delta[L] = \tfrac{2}{n}(A[L] - Y) \odot \sigma_L'(Z[L])$ (B1-mse).
#
# We follow the network `[5, 64, 32, 16, 1]` (tanh hidden layers, identity output, MSE) through one
# forward and one backward pass, and check every number against autodiff.

# %%
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmlp

sizes = [5, 64, 32, 16, 1]
kw = dict(activation="tanh", loss="mse")

key, k_x = jax.random.split(jax.random.key(0))
params = jaxmlp.init_mlp(key, sizes, init="xavier")
B = 16
x = jax.random.normal(k_x, (B, 5))
y = jnp.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]  # (B, 1), shaped like the output

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

# %%
report = jaxmlp.compare_deltas(params, x, y, **kw)
print(report)

# %% [markdown]
# The size of δ per layer shows how the error signal flows back: each (B2) step multiplies by
# $W[l+1]^\top$ and by $\sigma'(z[l]) \le 1$. The bars are the hand-written δ, the dots autodiff's.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
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
# (With ReLU, pre-activations within $h$ of the kink make (G1) meaningless; the "near kink" column
# counts them (G2). tanh has no kink.)

# %%
print(jaxmlp.check_gradients(params, x, y, **kw))

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
    print(f"layer {l}: dW {g.W.shape}, db {g.b.shape}; max |manual - vmap(grad)| = "
          f"{max(float(jnp.max(jnp.abs(g.W - r.W))), float(jnp.max(jnp.abs(g.b - r.b)))):.1e}")
mean_vs_batch = max(float(jnp.max(jnp.abs(jnp.mean(a, axis=0) - b)))
                    for a, b in zip(jax.tree.leaves(per_example), jax.tree.leaves(grads)))
print(f"max |mean over examples - backward's batch gradient| = {mean_vs_batch:.1e}")

# %% [markdown]
# Per-example gradients are what differential privacy clips and what gradient-noise studies measure.
# Their spread is large next to their mean: a minibatch gradient (notebook 4's SGD) is a noisy estimate.

# %%
norms = np.sqrt(sum(np.sum(np.asarray(leaf).reshape(B, -1) ** 2, axis=1) for leaf in jax.tree.leaves(per_example)))
batch_norm = float(np.sqrt(sum(np.sum(np.asarray(leaf) ** 2) for leaf in jax.tree.leaves(grads))))
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.hist(norms, bins=32, color="C0", alpha=0.7, label="‖∂ℓ_b/∂θ‖, one per example")
ax.axvline(batch_norm, color="C3", lw=2, label="‖∂L/∂θ‖ of the batch mean")
ax.set(xlabel="gradient norm", ylabel="examples", title=f"per-example gradients, B = {B}")
ax.legend()
fig.tight_layout()
plt.show()
