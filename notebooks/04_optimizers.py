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
# Backpropagation gives the gradient $g = \partial L / \partial \theta$ of the loss with respect to the
# parameters θ; an optimizer turns it into a step. Throughout, **η is the learning rate** (the lesson
# writes α). The lesson's section 8 names vanilla gradient descent, SGD and Adam; we add momentum, which
# sits between them. Every operation below is elementwise, and $t = 1, 2, \dots$ counts the steps.
#
# **Gradient descent (GD)** uses the gradient of the mean loss over the whole training set;
# **stochastic gradient descent (SGD)** the same update with the gradient $g_B$ of a **minibatch** $B$, a
# few examples drawn at random, a noisy but much cheaper estimate:
#
# $$\theta \leftarrow \theta - \eta\, g \qquad (1)$$
#
# An **epoch** is one pass over the training set: one step for GD, one step per minibatch for SGD.
#
# **Momentum** (the "heavy ball") accumulates a velocity $v$, from $v = 0$, and steps along it:
#
# $$v \leftarrow \mu v + g, \qquad \theta \leftarrow \theta - \eta\, v \qquad (2)$$
#
# (CS231n writes $v \leftarrow \mu v - \eta g$, $\theta \leftarrow \theta + v$: with a constant η it is the same
# sequence of θ, its $v$ being $-\eta$ times ours; d2l, PyTorch and optax use (2).)
#
# **Adam** keeps running means of the gradient and of its square, from $m = s = 0$ (the lesson calls the
# second one $v$; we write $s$ to keep $v$ for momentum's velocity), corrects their start at 0, and divides:
#
# $$m \leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad s \leftarrow \beta_2 s + (1 - \beta_2)\, g^2 \qquad (3)$$
#
# $$\hat m = \frac{m}{1 - \beta_1^t}, \qquad \hat s = \frac{s}{1 - \beta_2^t} \qquad (4)$$
#
# $$\theta \leftarrow \theta - \eta\, \frac{\hat m}{\sqrt{\hat s} + \varepsilon} \qquad (5)$$
#
# with the lesson's (and the Adam paper's) defaults η = 1e-3, β₁ = 0.9, β₂ = 0.999, ε = 1e-8. The lesson
# calls $s$ the "variance"; it is the running mean of $g^2$, the **uncentred** second moment
# $\mathbb E[g^2] = \operatorname{Var}(g) + (\mathbb E g)^2$, which is large for a large steady gradient
# whose variance is 0 (checked below).

# %%
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import mlp_by_hand as mh  # notebook 2's forward and backward, in plain jax.numpy
import numpy as np
import optax

from jaxmlp import datasets  # only to load the data

FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
key = jax.random.key(0)
plt.rcParams.update({"axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "figure.dpi": 100})


def style(name):
    """(colour, line style, marker) of a run: one colour per method in every figure of this notebook.

    GD blue, SGD orange (dashed at its larger η), tuned heavy ball green, momentum with μ = 0.9 red,
    Adam at its default η purple, Adam at a tuned η pink."""
    if name.startswith("Adam"):
        return ("C4", "-", "D") if "default" in name else ("C6", "-", "P")
    if name.startswith("momentum"):
        return ("C2", "-", "^") if "μ = 4/9" in name else ("C3", "-", "v")
    if name.startswith("SGD"):
        return ("C1", "--", "s") if "η = 0.5" in name else ("C1", "-", "s")
    return ("C0", "-", "o")


def eta_colors(n):
    """Shades of GD's blue, light to dark, for a sweep of n step sizes."""
    return plt.get_cmap("Blues")(np.linspace(0.35, 1.0, n))

# %% [markdown]
# ## 1. The optimizers, in a few lines each
#
# Each optimizer is a pair of functions: `init(theta)` makes its state (nothing, the velocity, or Adam's
# step count and moments), and `step(theta, g, state)` returns the new parameters and state. θ can be one
# array or the list of `(W, b)` pairs of an MLP: such nested containers are **pytrees**, and
# `jax.tree.map(f, a, b, ...)` applies `f` to each set of matching arrays (leaves) of pytrees of the same
# structure. So the same three optimizers drive a 2-vector in sections 2–3 and an MLP in section 4.

# %%
tree_map = jax.tree.map


def gd(eta):
    """(1): plain gradient descent, or SGD when g is a minibatch gradient."""
    def init(theta):
        return ()

    def step(theta, g, state):
        return tree_map(lambda p, g: p - eta * g, theta, g), state
    return init, step


def momentum(eta, mu):
    """(2): heavy-ball momentum, velocity v from 0."""
    def init(theta):
        return tree_map(jnp.zeros_like, theta)

    def step(theta, g, v):
        v = tree_map(lambda v, g: mu * v + g, v, g)
        return tree_map(lambda p, v: p - eta * v, theta, v), v
    return init, step


def adam(eta=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """(3)-(5), with the lesson's defaults."""
    def init(theta):
        return jnp.zeros((), jnp.int32), tree_map(jnp.zeros_like, theta), tree_map(jnp.zeros_like, theta)

    def step(theta, g, state):
        t, m, s = state
        t = t + 1
        m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)           # (3) first moment
        s = tree_map(lambda s, g: b2 * s + (1 - b2) * g ** 2, s, g)      # (3) uncentred second moment
        m_hat = tree_map(lambda m: m / (1 - b1 ** t), m)                 # (4) bias correction
        s_hat = tree_map(lambda s: s / (1 - b2 ** t), s)
        theta = tree_map(lambda p, m, s: p - eta * m / (jnp.sqrt(s) + eps), theta, m_hat, s_hat)  # (5)
        return theta, (t, m, s)
    return init, step

# %% [markdown]
# Two properties follow from the equations, for a gradient that stays the same, $g_t = g$:
#
# - **Momentum's velocity** tends to the fixed point of (2), $v = \mu v + g$, that is $v = g / (1 - \mu)$:
#   along a steady gradient momentum steps $1/(1 - \mu)$ times further than GD, 10 times for μ = 0.9.
# - **Adam's moments** after $t$ steps are $m = (1 - \beta_1^t)\, g$ and $s = (1 - \beta_2^t)\, g^2$ (sum the
#   geometric series of (3)), so the corrections (4) give exactly $\hat m = g$ and $\hat s = g^2$, and the
#   step (5) is $\eta\, g / |g| = \pm\eta$ from the very first step, **whatever the size of g**. And
#   $\hat s = g^2$ is not a variance: the variance of a constant is 0.

# %%
g = jnp.array([3.0, -0.001])  # a steady gradient, one large and one tiny coordinate
theta = jnp.zeros(2)
init, step = momentum(0.01, 0.9)
v = init(theta)
for _ in range(200):
    _, v = step(theta, g, v)
print(f"momentum, 200 steps of the same g: v / g = {np.asarray(v / g)} (1 / (1 - μ) = 10)")
assert np.allclose(v / g, 10, rtol=1e-6)

init, step = adam(1e-3)
state = init(theta)
for t in range(1, 51):
    new, state = step(theta, g, state)
    if t in (1, 50):
        _, m, s = state
        print(f"Adam, step {t}: m̂ = {np.asarray(m / (1 - 0.9 ** t))}, ŝ = {np.asarray(s / (1 - 0.999 ** t))}, "
              f"step = {np.asarray(new - theta)}")
assert np.allclose(s / (1 - 0.999 ** 50), g ** 2, rtol=1e-4) and np.allclose(new - theta, [-1e-3, 1e-3], rtol=1e-4)

# %% [markdown]
# Both coordinates move by η = 0.001, though one gradient is 3,000 times the other, and ŝ = 9 for the
# coordinate whose gradient never varies. Keep this in mind: **Adam's step is at most about η per coordinate,
# and exactly η for a constant gradient.** "At most about": while the size of the gradient does not grow,
# $|\hat m| \le \sqrt{\hat s}$ (m̂ averages the recent gradients, ŝ the squares of older ones too), so the
# step is at most η, and far less after the gradient has shrunk (section 3 measures it on Rosenbrock); a
# gradient that *grows* suddenly after a quiet spell can give up to $\eta (1 - \beta_1)/\sqrt{1 - \beta_2} \approx 3.2\,\eta$ (the bound of the Adam
# paper).
#
# ## 2. An elongated quadratic: the step size GD can take
#
# The simplest surface with the difficulty of real losses, different curvature in different directions:
#
# $$f(\theta) = \tfrac12\big(\lambda_1 \theta_1^2 + \lambda_2 \theta_2^2\big), \qquad
#   \nabla f = (\lambda_1 \theta_1,\; \lambda_2 \theta_2), \qquad
#   \nabla^2 f = \begin{pmatrix} \lambda_1 & 0 \\ 0 & \lambda_2 \end{pmatrix} \qquad (6)$$
#
# with $\lambda_1 = 1$, $\lambda_2 = 25$: the Hessian's eigenvalues are the curvatures, $\lambda_\min = 1$
# and $\lambda_\max = 25$, and their ratio κ = 25 is the condition number. GD (1) acts on each coordinate
# separately, $\theta_i \leftarrow \theta_i - \eta \lambda_i \theta_i$, so after $t$ steps
#
# $$\theta_{i,t} = (1 - \eta\lambda_i)^t\, \theta_{i,0} \qquad (7)$$
#
# which shrinks to 0 if and only if $|1 - \eta\lambda_i| < 1$. For every coordinate at once:
#
# $$0 < \eta < \frac{2}{\lambda_\max} = \frac{2}{25} = 0.08 \qquad (8)$$
#
# Above it, the stiff coordinate θ₂ overshoots further at every step and GD diverges. The best fixed η
# makes the slowest factor as small as possible; $|1 - \eta\lambda_\min|$ falls and $|1 - \eta\lambda_\max|$
# rises with η, so the best η makes them equal:
#
# $$\eta^* = \frac{2}{\lambda_\min + \lambda_\max} = \frac{1}{13}, \qquad
#   |1 - \eta^*\lambda_i| = \frac{\kappa - 1}{\kappa + 1} = \frac{12}{13} \text{ for both } i \qquad (9)$$
#
# We run GD at η from well below to above the bound (8), 100 steps from θ = (−4, 1.5). `jax.grad(f)`
# gives the gradient of the toy surface (no backprop by hand needed for a 2-D function);
# `jax.lax.scan(body, carry, xs)` runs the steps as one compiled loop; and `jax.vmap` runs the whole
# trajectory for five values of η at once, mapping over the leading axis of its argument. Randomness (the
# noise of "SGD" below) comes from explicit keys: `jax.random.split(key, n)` makes `n` independent keys from
# one, and the same key always gives the same numbers.

# %%
LAMBDA = jnp.array([1.0, 25.0])


def quadratic(theta):
    return 0.5 * jnp.sum(LAMBDA * theta ** 2)  # (6)


def run(f, optimizer, theta0, steps, noise=0.0, key=key):
    """θ_0, ..., θ_steps of `optimizer` on f; `noise` adds N(0, noise²) to every gradient coordinate."""
    init, step = optimizer
    grad_f = jax.grad(f)

    def body(carry, k):
        theta, state = carry
        g = grad_f(theta) + noise * jax.random.normal(k, theta.shape)
        theta, state = step(theta, g, state)
        return (theta, state), theta

    theta0 = jnp.asarray(theta0)
    _, path = jax.lax.scan(body, (theta0, init(theta0)), jax.random.split(key, steps))
    return jnp.concatenate([theta0[None], path])


theta0, T = jnp.array([-4.0, 1.5]), 100
etas = jnp.array([0.02, 1 / 13, 0.079, 0.081, 0.1])
gd_paths = np.asarray(jax.vmap(lambda eta: run(quadratic, gd(eta), theta0, T))(etas))
f_gd = np.asarray(jax.vmap(jax.vmap(quadratic))(jnp.asarray(gd_paths)))  # f along every path
for eta, f_path in zip(etas, f_gd):
    factors = np.abs(1 - float(eta) * np.asarray(LAMBDA))
    print(f"η = {float(eta):.4f}: |1 - ηλ| = {factors.round(4)}, f after {T} steps = {f_path[-1]:.3g}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(15, 4.6))
for eta, path, f_path, color, marker in zip(etas, gd_paths, f_gd, eta_colors(len(etas)), "osD^v"):
    label = f"GD, η = {float(eta):.3g}" + (" = 2/(λmin + λmax)" if abs(float(eta) - 1 / 13) < 1e-6 else "")
    axes[0].plot(f_path, color=color, marker=marker, markevery=10, ms=5, label=label)
    axes[1].plot(path[:30, 1], "-", marker=marker, ms=4, color=color, label=label)
axes[0].axhline(f_gd[0, 0], color="0.5", lw=0.6)
axes[0].set(yscale="log", xlabel="step t", ylabel="f(θ_t)", ylim=(1e-12, 1e12),
            title="f: converges for η < 2/λmax = 0.08, diverges above")
axes[1].set(xlabel="step t", ylabel="θ₂ (the stiff coordinate, λ = 25)", ylim=(-6, 6),
            title="θ₂, first 30 steps: flips sign when 1 - 25η < 0")
fig.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(0.83, 0.5))
fig.tight_layout(rect=(0, 0, 0.83, 1))
fig.savefig(FIGURES / "04_gd_step_size.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# The bound is sharp, and (7) predicts every number. $f$ is the sum of two terms,
# $\tfrac12\lambda_1\theta_1^2 = 8$ and $\tfrac12\lambda_2\theta_2^2 = 28.1$ at the start ($f_0 = 36.1$), and
# each is multiplied by its factor squared at every step. At η = 1/13 both factors are 12/13, so $f$ falls by
# exactly $(12/13)^{200}$ in 100 steps; at η = 0.079 the stiff coordinate's factor is
# $|1 - 25 \cdot 0.079| = 0.975$ and $f$ creeps down; at η = 0.081 it is 1.025, so the θ₂ term grows by
# $1.025^{200} \approx 140$ times, from 28.1 to $3.9 \times 10^3$, while the θ₁ term dies out: $f$ goes from 36
# to $3.9 \times 10^3$, about 110 times its start. At η = 0.1 the θ₂ term grows by $1.5^{200} \approx 1.7 \times
# 10^{35}$, and $f$ ends at $4.6 \times 10^{36}$.

# %%
f0 = float(quadratic(theta0))
theta2_term = 0.5 * 25 * gd_paths[:, :, 1] ** 2  # ½ λ₂ θ₂², along each path
by_eta = dict(zip([round(float(e), 4) for e in etas], f_gd[:, -1]))
growth_081 = dict(zip([round(float(e), 4) for e in etas], theta2_term[:, -1] / theta2_term[:, 0]))[0.081]
print(f"f_0 = {f0:.1f} (θ₂ term {theta2_term[0, 0]:.1f}); η = 0.081: θ₂ term × {growth_081:.0f} "
      f"(1.025^200 = {1.025 ** 200:.0f}), f_100 = {by_eta[0.081]:.3g} = {by_eta[0.081] / f0:.0f} f_0; "
      f"η = 0.1: 1.5^200 = {1.5 ** 200:.1e}, f_100 = {by_eta[0.1]:.1e}")
assert round(f0, 1) == 36.1 and round(float(theta2_term[0, 0]), 1) == 28.1
assert np.isclose(by_eta[round(1 / 13, 4)], f0 * (12 / 13) ** 200, rtol=1e-3)
assert np.isclose(by_eta[0.079], 0.5 * 25 * 1.5 ** 2 * 0.975 ** 200, rtol=0.02)
assert np.isclose(growth_081, 1.025 ** 200, rtol=0.02) and 135 < growth_081 < 145
assert 3.85e3 < by_eta[0.081] < 3.95e3 and 105 < by_eta[0.081] / f0 < 115
assert 1.65e35 < 1.5 ** 200 < 1.75e35 and 4.55e36 < by_eta[0.1] < 4.7e36

# %% [markdown]
# ### The best heavy ball, derived
#
# Momentum (2) mixes steps: $\theta_{t+1} - \theta_t = -\eta v_{t+1} = \mu(\theta_t - \theta_{t-1}) - \eta g_t$.
# On the quadratic, per coordinate with curvature λ:
#
# $$\theta_{t+1} = (1 + \mu - \eta\lambda)\, \theta_t - \mu\, \theta_{t-1} \qquad (10)$$
#
# a linear recurrence, whose solutions are $\theta_t = c_1 r_1^t + c_2 r_2^t$ with $r_1, r_2$ the roots of
#
# $$r^2 - (1 + \mu - \eta\lambda)\, r + \mu = 0 \qquad (11)$$
#
# The roots multiply to μ. When they are complex (the discriminant $(1 + \mu - \eta\lambda)^2 - 4\mu$ is
# negative), they are conjugates of equal modulus, so **both have $|r| = \sqrt\mu$, whatever λ**: the
# coordinate spirals in at the rate √μ per step. The discriminant is $\le 0$ exactly when
# $|1 + \mu - \eta\lambda| \le 2\sqrt\mu$, that is when
#
# $$(1 - \sqrt\mu)^2 \le \eta\lambda \le (1 + \sqrt\mu)^2 \qquad (12)$$
#
# To give every curvature in $[\lambda_\min, \lambda_\max]$ the rate √μ with μ as small as possible, make
# (12) tight at both ends: $\eta\lambda_\min = (1 - \sqrt\mu)^2$ and $\eta\lambda_\max = (1 + \sqrt\mu)^2$.
# Adding their square roots gives $\sqrt{\eta}(\sqrt{\lambda_\min} + \sqrt{\lambda_\max}) = 2$; dividing them
# gives $\sqrt\kappa = (1 + \sqrt\mu)/(1 - \sqrt\mu)$. So
#
# $$\eta = \frac{4}{(\sqrt{\lambda_\max} + \sqrt{\lambda_\min})^2}, \qquad
#   \sqrt\mu = \frac{\sqrt\kappa - 1}{\sqrt\kappa + 1} \qquad (13)$$
#
# For κ = 25: η = 4/36 = 1/9, √μ = 4/6 = 2/3, μ = 4/9, and the error shrinks by 2/3 per step, against
# GD's 12/13 from (9). Below we check the roots of (11) for both curvatures.

# %%
eta_hb, mu_hb = 4 / (np.sqrt(25.0) + 1.0) ** 2, ((5.0 - 1) / (5.0 + 1)) ** 2  # (13), √κ = 5
for lam in (1.0, 25.0):
    roots = np.roots([1.0, -(1 + mu_hb - eta_hb * lam), mu_hb])  # (11)
    print(f"λ = {lam:>4}: roots of (11) {np.round(roots, 6)}, moduli {np.round(np.abs(roots), 6)}")
    assert np.allclose(np.abs(roots), 2 / 3, atol=1e-6)
    assert np.allclose(roots, 2 / 3 if lam == 1.0 else -2 / 3, atol=1e-6)  # a double root, +2/3 or -2/3
print(f"η = {eta_hb:.4f} = 1/9, μ = {mu_hb:.4f} = 4/9")

# %% [markdown]
# At both ends of the range the discriminant is exactly 0, a double root $r = \pm 2/3$: $+2/3$ for
# $\lambda_\min$, where $1 + \mu - \eta\lambda = 4/3$, and $-2/3$ for $\lambda_\max$, where
# $1 + \mu - \eta\lambda = -12/9$ and θ₂ flips sign every step (as printed). The solution is then
# $(c_1 + c_2 t)(\pm 2/3)^t$: a factor $t$ slows the very first steps, not the rate.
#
# ## 3. Trajectories on two surfaces
#
# Now every optimizer on the quadratic, 100 steps from (−4, 1.5), each in its own panel, its path in colour
# over the others in grey: GD at its best η (9); "SGD", GD with Gaussian noise of standard deviation σ = 1 added
# to every gradient coordinate, standing in for minibatch noise; the tuned heavy ball (13); momentum with the
# common μ = 0.9 (and η = 0.02); Adam at its **default** η = 1e-3; and Adam at η = 0.3, a value picked
# for this surface.
#
# Each method keeps its colour and marker in every figure of this notebook: GD blue, SGD orange, the tuned
# heavy ball green, momentum with μ = 0.9 red, Adam at its default η purple, Adam at a tuned η pink (sweeps of
# GD's η are shades of blue). The panels are drawn to scale, one unit as long on both axes.

# %%
def f_along(f, path):
    return np.asarray(jax.vmap(f)(jnp.asarray(path)))


def draw(f, runs, paths, theta0, minimum, suptitle, filename):
    """One panel per optimizer (its path in colour, the others in grey), and f along every path below."""
    every = np.concatenate(list(paths.values()))
    lo, hi = every.min(axis=0), every.max(axis=0)
    pad = 0.08 * (hi - lo)
    x0, y0, x1, y1 = *(lo - pad), *(hi + pad)  # the box holds every path, whole
    g1, g2 = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    values = f_along(f, np.stack([g1.ravel(), g2.ravel()], axis=1)).reshape(g1.shape)
    fig = plt.figure(figsize=(13, 12.5))
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 0.75])
    for i, name in enumerate(runs):
        color = style(name)[0]
        ax = fig.add_subplot(grid[i // 3, i % 3])
        ax.contour(g1, g2, values, levels=np.geomspace(max(values.min(), 1e-3), values.max(), 15), colors="0.85",
                   linewidths=0.6)
        for other in paths.values():
            ax.plot(*other.T, "-", color="0.6", lw=0.6, alpha=0.5)
        ax.plot(*paths[name].T, "-", color=color, lw=1.4)
        ax.plot(*paths[name][-1], "o", color=color, mec="k", ms=8)
        ax.plot(*theta0, "ko", ms=5)
        ax.plot(*minimum, "k*", ms=13)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="θ₁", ylabel="θ₂")
        ax.set_aspect("equal")  # one unit is as long on both axes: the level curves keep their true shape
        ax.set_title(f"{name}\nends at f = {f_along(f, paths[name][-1:])[0]:.2g}")
    ax = fig.add_subplot(grid[2, :])
    for i, name in enumerate(runs):
        color, ls, marker = style(name)
        values_t = f_along(f, paths[name])
        ax.plot(values_t, ls, color=color, marker=marker, ms=6, label=name,
                markevery=(i * len(values_t) // 60, len(values_t) // 10))  # staggered markers tell overlaps apart
    ax.set(yscale="log", xlabel="step t", ylabel="f(θ_t)", title="f along each path")
    ax.legend(ncol=3)
    fig.suptitle(suptitle, fontsize=13)
    fig.tight_layout()
    fig.savefig(FIGURES / filename, dpi=100)
    plt.show()


quadratic_runs = {
    "GD, η = 1/13": (gd(1 / 13), 0.0),
    "SGD, η = 1/13": (gd(1 / 13), 1.0),
    "momentum, η = 1/9, μ = 4/9": (momentum(1 / 9, 4 / 9), 0.0),
    "momentum, η = 0.02, μ = 0.9": (momentum(0.02, 0.9), 0.0),
    "Adam, η = 1e-3 (default)": (adam(1e-3), 0.0),
    "Adam, η = 0.3": (adam(0.3), 0.0),
}
q_paths = {name: np.asarray(run(quadratic, opt, theta0, T, noise)) for name, (opt, noise) in quadratic_runs.items()}
q_final = {name: float(f_along(quadratic, path[-1:])[0]) for name, path in q_paths.items()}
draw(quadratic, quadratic_runs, q_paths, theta0, (0.0, 0.0),
     f"f = ½(θ₁² + 25 θ₂²): {T} steps from ● to ★; each panel one optimizer, the others in grey",
     "04_quadratic_paths.png")
for name, value in q_final.items():
    print(f"{name:>28}: f = {value:.3g}")

# %% [markdown]
# - **GD** at η = 1/13 zigzags across the narrow θ₂ direction while it creeps along θ₁; both shrink by 12/13
#   per step, and $f$ falls from 36 to $4 \times 10^{-6}$.
# - **SGD**'s noise throws it around the minimum, where it does not settle at a constant η: it ends with
#   $f$ above $10^{-2}$.
# - **Tuned momentum** does not remove the zigzag: its η = 1/9 is beyond GD's bound (8) for θ₂
#   ($25/9 > 2$), and its first swings across the valley are wider than GD's ($|\theta_2|$ reaches 2.9). The
#   velocity damps those swings while it builds speed along θ₁, so that both directions shrink by 2/3 per
#   step (measured below over the last 50 steps): it ends with $f$ below $10^{-25}$, about 24 orders of
#   magnitude below GD (printed below).
# - **Momentum with μ = 0.9** carries too much velocity for this surface: it overshoots, loops around the
#   minimum, and ends *above* GD.
# - **Adam at its default η = 1e-3 barely moves**: 100 steps of about η each take θ₁ from −4 to −3.9, and
#   $f$ only from 36 to 32. At **η = 0.3** Adam gets close to the minimum, but it ends above GD
#   ($f \approx 6 \times 10^{-4}$ against $4 \times 10^{-6}$).

# %%
q = q_final
orders = float(np.log10(q["GD, η = 1/13"] / q["momentum, η = 1/9, μ = 4/9"]))
print(f"tuned momentum ends {orders:.1f} orders of magnitude below GD")
assert q["momentum, η = 1/9, μ = 4/9"] < 1e-25 and 23.5 < orders < 24.5
assert 3.9e-6 < q["GD, η = 1/13"] < 4.2e-6 and q["SGD, η = 1/13"] > 1e-2
assert q["momentum, η = 0.02, μ = 0.9"] > q["GD, η = 1/13"]
assert q["GD, η = 1/13"] < q["Adam, η = 0.3"] < 1e-2
tuned, gd_path = q_paths["momentum, η = 1/9, μ = 4/9"], q_paths["GD, η = 1/13"]
assert 2.8 < np.abs(tuned[:, 1]).max() < 3 and np.abs(gd_path[:, 1]).max() == 1.5
f_tuned = f_along(quadratic, tuned)
rate = float(np.sqrt(f_tuned[-1] / f_tuned[-51]) ** (1 / 50))  # per-step factor of the distance, ~ √f
adam_default = q_paths["Adam, η = 1e-3 (default)"]
print(f"tuned momentum: the distance to the minimum shrinks by {rate:.3f} per step over the last 50 steps")
print(f"Adam, η = 1e-3: θ₁ from {adam_default[0, 0]:.2f} to {adam_default[-1, 0]:.3f}, "
      f"f from {f0:.1f} to {q['Adam, η = 1e-3 (default)']:.1f}")
assert 0.6 < rate < 0.72
assert 31 < q["Adam, η = 1e-3 (default)"] < 33 and np.isclose(adam_default[-1, 0], -3.9, atol=2e-3)

# %% [markdown]
# ### The Rosenbrock valley
#
# $$f(\theta) = (1 - \theta_1)^2 + 100\,(\theta_2 - \theta_1^2)^2 \qquad (14)$$
#
# has its minimum $f = 0$ at (1, 1), at the end of a long, curved valley with steep walls and an almost
# flat floor. We start at (−1.5, 2) and take 2,000 steps. The bound (8) holds near any point where $f$ is
# close to its quadratic (second-order Taylor) model, with λ_max the largest eigenvalue of the Hessian
# there; here the Hessian changes along the way, so we compute it (`jax.hessian`) at every point of GD's
# path and choose GD's η below 2/λ_max everywhere on it.

# %%
def rosenbrock(theta):
    return (1 - theta[0]) ** 2 + 100 * (theta[1] - theta[0] ** 2) ** 2  # (14)


start, T_r = jnp.array([-1.5, 2.0]), 2000
eta_gd = 9e-4
gd_r = run(rosenbrock, gd(eta_gd), start, T_r)
lam_max = np.linalg.eigvalsh(np.asarray(jax.vmap(jax.hessian(rosenbrock))(gd_r)))[:, -1]
worst = int(np.argmax(lam_max))
print(f"along GD's path: largest λ_max = {lam_max.max():.0f} at step {worst} (θ = {np.asarray(gd_r[worst])}), "
      f"2/λ_max = {2 / lam_max.max():.2e}; GD uses η = {eta_gd:.0e}; at the minimum λ_max = "
      f"{np.linalg.eigvalsh(np.asarray(jax.hessian(rosenbrock)(jnp.ones(2))))[-1]:.0f}")
assert eta_gd < 2 / lam_max.max() < 1e-3

rosenbrock_runs = {
    "GD, η = 9e-4": (gd(eta_gd), 0.0),
    "SGD, η = 9e-4": (gd(eta_gd), 5.0),
    "momentum, η = 2e-4, μ = 0.9": (momentum(2e-4, 0.9), 0.0),
    "Adam, η = 1e-3 (default)": (adam(1e-3), 0.0),
    "Adam, η = 0.05": (adam(0.05), 0.0),
}
r_paths = {name: np.asarray(run(rosenbrock, opt, start, T_r, noise)) for name, (opt, noise) in rosenbrock_runs.items()}
r_final = {name: float(f_along(rosenbrock, path[-1:])[0]) for name, path in r_paths.items()}
r_distance = {name: float(np.linalg.norm(path[-1] - 1.0)) for name, path in r_paths.items()}
draw(rosenbrock, rosenbrock_runs, r_paths, start, (1.0, 1.0),
     f"Rosenbrock: {T_r} steps from ● to ★ = (1, 1); each panel one optimizer, the others in grey",
     "04_rosenbrock_paths.png")
for name in r_paths:
    print(f"{name:>28}: f = {r_final[name]:.3g}, distance to (1, 1) = {r_distance[name]:.2g}")

# %% [markdown]
# The largest curvature on GD's path is at its start, on the valley's wall (λ_max ≈ 2,090, so η must stay
# below 9.6e-4), while along the floor the curvature is small: GD at η = 9e-4 reaches the floor quickly and
# then crawls, and after 2,000 steps it is still about 1 from the minimum (f ≈ 0.29); SGD (with noise of
# standard deviation 5 here, where the gradients are larger) likewise.
# Momentum with a 4.5 times smaller η gets much further (within 0.3), because along the floor's steady
# gradient its velocity grows to 1/(1 − μ) = 10 times the gradient.
#
# **Adam at its default η = 1e-3 is the worst of all**: it ends at f ≈ 5.2, where GD reaches 0.29, with θ₁
# ≈ −1.29, only 0.21 from its start. Its steps are at most about η (its largest step is printed below), so
# 2,000 steps could have carried θ₁ up to 2 units; it used a tenth of that. The reason is ŝ's long memory.
# With β₂ = 0.999, ŝ averages $g^2$ over roughly the last $1/(1 - \beta_2) = 1{,}000$ steps. Adam starts on
# the valley's steep wall, where $|\partial f/\partial\theta_1|$ is 155 and stays above 100 for 20 steps, and
# its first steps are η. By step 150 it has reached the floor, where $|\partial f/\partial\theta_1|$
# is 1.4, but √ŝ still holds the wall's values: it is 60 there, and the step $\eta\, \hat m/\sqrt{\hat s}$ is
# about 5 % of η on both coordinates over steps 101–200 (printed below, per window of steps, and in the figure).
# Even after 2,000 steps √ŝ is still 10 against a gradient of 1.4, and the steps are 14 % (θ₁) and 36 % (θ₂) of
# η. Adam's step is exactly η only for a constant gradient (section 1); after the gradient shrinks, the step
# stays small for as long as ŝ remembers the larger values.
#
# The default η = 1e-3 is meant for neural networks, whose weights are small (of order $1/\sqrt{n}$) and
# which train for thousands of steps, not for a 2-D surface whose minimum is several units away. On each
# problem Adam's η must be chosen, as GD's must (Exercise 4 sweeps it here). Chosen for this surface,
# **η = 0.05**, Adam reaches the minimum to within $10^{-5}$. Its steps shrink too, to about 3 % (θ₁) and 4 % (θ₂) of η over steps
# 501–600, but of an η fifty times larger. What dividing by √ŝ removes is the dependence of the step on
# the *scale* of the gradient (Adam on $100 f$ follows the same path, checked below), not the need to choose
# η, and not the dependence on the gradient's history.

# %%
d, rf = r_distance, r_final
adam_default, adam_tuned = r_paths["Adam, η = 1e-3 (default)"], r_paths["Adam, η = 0.05"]
adam_steps = np.abs(np.diff(adam_default, axis=0)).max()
print(f"Adam, η = 1e-3: largest step of a coordinate in {T_r} steps = {adam_steps:.4g}; θ₁ from "
      f"{adam_default[0, 0]:.2f} to {adam_default[-1, 0]:.2f}")
assert 0.8 < d["GD, η = 9e-4"] < 1.1 and 0.25 < rf["GD, η = 9e-4"] < 0.33 and d["SGD, η = 9e-4"] > 0.5
assert d["momentum, η = 2e-4, μ = 0.9"] < 0.3
assert 5.0 < rf["Adam, η = 1e-3 (default)"] < 5.5 and adam_steps < 1.01e-3
assert -1.30 < adam_default[-1, 0] < -1.28 and d["Adam, η = 0.05"] < 1e-5


def adam_memory(path, b2=0.999):
    """Along a path of Adam on Rosenbrock: |g_t| and √ŝ_t per coordinate, ŝ recomputed by (3)-(4) from the
    gradients g_t at θ_{t-1}, t = 1..T."""
    g = np.asarray(jax.vmap(jax.grad(rosenbrock))(jnp.asarray(path[:-1])), np.float64)
    s, sqrt_s_hat = np.zeros(2), np.empty_like(g)
    for t, g_t in enumerate(g, start=1):
        s = b2 * s + (1 - b2) * g_t ** 2
        sqrt_s_hat[t - 1] = np.sqrt(s / (1 - b2 ** t))
    return np.abs(g), sqrt_s_hat


windows = [(0, 10), (100, 200), (500, 600), (1900, 2000)]  # steps a+1 .. b
relative_step = {}
for name, eta, path in (("Adam, η = 1e-3 (default)", 1e-3, adam_default), ("Adam, η = 0.05", 0.05, adam_tuned)):
    r = np.abs(np.diff(path, axis=0)) / eta  # |θ_t - θ_{t-1}| / η, per coordinate
    relative_step[name] = r
    print(f"{name}: mean |step| / η (θ₁, θ₂) over steps "
          + "; ".join(f"{a + 1}-{b}: {r[a:b, 0].mean():.3f}, {r[a:b, 1].mean():.3f}" for a, b in windows))
g_abs, sqrt_s = adam_memory(adam_default)
print(f"Adam, η = 1e-3, θ₁: |g| = {g_abs[0, 0]:.0f} at step 1; at step 150 |g| = {g_abs[149, 0]:.2f} "
      f"and √ŝ = {sqrt_s[149, 0]:.1f}; at step 2000 |g| = {g_abs[-1, 0]:.2f} and √ŝ = {sqrt_s[-1, 0]:.1f}")
scaled = np.asarray(run(lambda theta: 100 * rosenbrock(theta), adam(1e-3), start, T_r))
print(f"Adam, η = 1e-3 on 100 f: largest |θ - θ on f| along the path = {np.abs(scaled - adam_default).max():.1e}")
r_default, r_tuned = relative_step["Adam, η = 1e-3 (default)"], relative_step["Adam, η = 0.05"]
assert np.all(r_default[:10].mean(axis=0) > 0.99) and np.all(np.abs(r_default[100:200].mean(axis=0) - 0.05) < 0.01)
assert round(float(r_default[1900:, 0].mean()), 2) == 0.14 and round(float(r_default[1900:, 1].mean()), 2) == 0.36
assert np.all((0.025 < r_tuned[500:600].mean(axis=0)) & (r_tuned[500:600].mean(axis=0) < 0.045))
assert round(float(g_abs[0, 0])) == 155 and np.all(g_abs[:20, 0] > 100)
assert abs(float(g_abs[149, 0]) - 1.4) < 0.1 and round(float(sqrt_s[149, 0])) == 60
assert round(float(g_abs[-1, 0]), 1) == 1.4 and round(float(sqrt_s[-1, 0])) == 10
assert np.abs(scaled - adam_default).max() < 1e-3

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.3))
t = np.arange(1, T_r + 1)
for i, (coordinate, ls) in enumerate((("θ₁", "-"), ("θ₂", ":"))):
    axes[0].plot(t, g_abs[:, i], ls, color="0.4", label=f"|g| of {coordinate}")
    axes[0].plot(t, sqrt_s[:, i], ls, color=style("Adam, η = 1e-3 (default)")[0], label=f"√ŝ of {coordinate}")
    for name, r in relative_step.items():
        smooth = np.convolve(r[:, i], np.ones(20) / 20, mode="valid")  # mean over 20 steps
        axes[1].plot(t[19:], smooth, ls, color=style(name)[0], label=f"{name}, {coordinate}")
axes[0].set(xscale="log", yscale="log", xlabel="step t", title="Adam, η = 1e-3: the gradient and √ŝ (β₂ = 0.999)")
axes[1].axhline(1.0, color="k", lw=0.8)
axes[1].set(xscale="log", yscale="log", xlabel="step t", ylabel="|step| / η (mean over 20 steps)", ylim=(1e-3, 2),
            title="Adam's step, relative to η (η = 0.05 converges and leaves the plot)")
for ax in axes:
    ax.legend(loc="lower left")
fig.suptitle("Rosenbrock: ŝ remembers the large gradients of the first steps, and the steps shrink", fontsize=12)
fig.tight_layout()
fig.savefig(FIGURES / "04_adam_memory.png", dpi=110)
plt.show()

# %% [markdown]
# ## 4. On a real task: an MLP on digits
#
# Now the optimizers train `[64, 64, 32, 10]` (ReLU hidden layers, He initialization) on scikit-learn's
# 8×8 digits: 1,438 training images of 64 pixels, 10 classes. The output is the softmax of $z[L]$ and the
# loss the cross-entropy of notebook 2; its gradient is `mh.backward(params, X, Y, "relu", "ce")`, the
# plain code of notebook 2, with $\delta[L] = (a[L] - y)/B$ for a batch of $B$ examples. The optimizers are
# those of section 1, unchanged: they only see a pytree of parameters and one of gradients.
#
# The training loop is compiled whole: `jax.jit(f)` compiles `f` with XLA the first time it is called for
# given argument shapes, and the epochs and their minibatch steps are two nested `jax.lax.scan`s.
#
# A **step** is one optimizer update; an **epoch** processes every training example once. GD takes the
# gradient of the whole training set (one step per epoch); the others take minibatches of 64 drawn without
# replacement (22 steps per epoch, the last 30 examples of each shuffled epoch left out), for 30 epochs. We
# compare: GD with η = 1; SGD with η = 0.05; momentum with η = 0.05 and μ = 0.9; SGD with η = 0.5, the
# step momentum takes along a steady gradient, η/(1 − μ); and Adam with its defaults.

# %%
x_tr, y_tr, x_te, y_te = datasets.load("digits")  # y: integer labels 0..9
Y_tr = jax.nn.one_hot(y_tr, 10)  # mh's cross-entropy takes one-hot targets
sizes = [64, 64, 32, 10]
params0 = [(np.sqrt(2 / n_in) * jax.random.normal(k, (n_out, n_in)), jnp.zeros(n_out))  # He
           for k, n_in, n_out in zip(jax.random.split(key, 3), sizes[:-1], sizes[1:])]


def loss_from_logits(params, X, Y):
    """mh.loss_value(params, X, Y, "relu", "ce"), computed from z[L]: no log(0) when a probability rounds to 0."""
    z = mh.forward(params, X, "relu", "ce")[0][-1]
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.sum(Y * z, axis=1))


def accuracy(params, X, y):
    return float(jnp.mean(jnp.argmax(mh.forward(params, X, "relu", "ce")[1][-1], axis=1) == y))


def train(optimizer, params, epochs=30, batch=64, seed=1):
    """Minibatch training with mh.backward, epochs shuffled by jax.random.key(seed); the loss after each epoch."""
    init, step = optimizer
    n_batches = len(x_tr) // batch

    def minibatch_step(carry, idx):
        params, state = carry
        grads = mh.backward(params, x_tr[idx], Y_tr[idx], "relu", "ce")
        return step(params, grads, state), None

    @jax.jit
    def all_epochs(params, key):
        def epoch(carry, k):
            order = jax.random.permutation(k, len(x_tr))[: n_batches * batch].reshape(n_batches, batch)
            carry, _ = jax.lax.scan(minibatch_step, carry, order)
            return carry, loss_from_logits(carry[0], x_tr, Y_tr)
        (params, _), losses = jax.lax.scan(epoch, (params, init(params)), jax.random.split(key, epochs))
        return params, losses

    params, losses = all_epochs(params, jax.random.key(seed))
    return params, np.r_[float(loss_from_logits(params0, x_tr, Y_tr)), np.asarray(losses)]


digit_runs = {
    "GD, η = 1 (full batch)": (gd(1.0), len(x_tr)),
    "SGD, η = 0.05": (gd(0.05), 64),
    "momentum, η = 0.05, μ = 0.9": (momentum(0.05, 0.9), 64),
    "SGD, η = 0.5": (gd(0.5), 64),
    "Adam, η = 1e-3 (default)": (adam(), 64),
}
digit_losses, digit_params = {}, {}
for name, (optimizer, batch) in digit_runs.items():
    digit_params[name], digit_losses[name] = train(optimizer, params0, batch=batch)
    print(f"{name:>28}: training loss after 1, 10, 30 epochs: "
          + ", ".join(f"{digit_losses[name][e]:.4f}" for e in (1, 10, 30))
          + f"; test accuracy {accuracy(digit_params[name], x_te, y_te):.1%}")

# %% [markdown]
# **A learning rate too large, on the network.** For a network, (8) would need the largest eigenvalue of
# the loss's Hessian, which we do not compute here; we simply try larger steps: full-batch GD for 30 steps
# at η = 0.3, 1, 3 and 10 (`jax.vmap` over η again: one compiled program for the four runs). The loop is
# `jax.lax.scan(body, params0, None, length=30)`: with `xs = None` there is nothing to scan over, so `length`
# says how many times to call `body(carry, x)`, each time with `x = None` (the `_` argument below); the carry
# is the parameters, and the 30 losses that `body` returns are stacked into one array.

# %%
@jax.jit
def gd_losses(eta):
    def body(params, _):
        params = tree_map(lambda p, g: p - eta * g, params, mh.backward(params, x_tr, Y_tr, "relu", "ce"))
        return params, loss_from_logits(params, x_tr, Y_tr)
    return jax.lax.scan(body, params0, None, length=30)


eta_sweep = jnp.array([0.3, 1.0, 3.0, 10.0])
sweep_params, sweep_losses = jax.vmap(gd_losses)(eta_sweep)
sweep_losses = np.column_stack([np.full(len(eta_sweep), digit_losses["SGD, η = 0.05"][0]), np.asarray(sweep_losses)])
dead_layer2 = {}
for i, eta in enumerate(eta_sweep):
    p = tree_map(lambda leaf: leaf[i], sweep_params)
    Zs, _ = mh.forward(p, x_tr, "relu", "ce")
    dead = [float(jnp.mean(jnp.all(Z <= 0, axis=0))) for Z in Zs[:-1]]  # units off for every training image
    dead_layer2[float(eta)] = dead[1]
    print(f"GD η = {float(eta):>4g}: loss after 1 step {sweep_losses[i, 1]:.3g}, after 30 steps {sweep_losses[i, -1]:.3g};"
          f" hidden units that are 0 on every training image: layer 1 {dead[0]:.0%}, layer 2 {dead[1]:.0%}")

# %%
steps_per_epoch = {name: len(x_tr) // batch for name, (_, batch) in digit_runs.items()}
fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
for name, losses in digit_losses.items():
    color, ls, marker = style(name)
    axes[0].plot(range(len(losses)), losses, ls, color=color, label=name)
    axes[1].plot(np.arange(1, len(losses)) * steps_per_epoch[name], losses[1:], ls, marker=marker, color=color,
                 label=name, ms=3)
axes[0].set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log", title="per epoch (same compute)")
axes[1].set(xlabel="optimizer step (after each epoch)", yscale="log", xscale="log", title="per step")
for eta, losses, color, marker in zip(eta_sweep, sweep_losses, eta_colors(len(eta_sweep)), "osD^"):
    axes[2].plot(losses, "-", marker=marker, ms=4, color=color, label=f"GD, η = {float(eta):g}")
axes[2].axhline(np.log(10), color="k", ls="--", lw=0.8, label="log 10 (uniform guess)")
axes[2].set(xlabel="step (full batch)", yscale="log", title="GD with larger and larger η")
for ax in axes:
    ax.legend()
fig.suptitle("[64, 64, 32, 10] ReLU MLP on digits, gradients from mlp_by_hand.backward", fontsize=12)
fig.tight_layout()
fig.savefig(FIGURES / "04_digits.png", dpi=110)
plt.show()

# %% [markdown]
# - **Per epoch** (left), every minibatch method is below GD after every epoch: for the same number of
#   per-example gradients they take 22 steps to its one. **Per step** (middle), GD's full-batch steps make more
#   progress: after 22 steps GD's loss is lower than any minibatch method's after its first epoch of 22 steps.
# - **Momentum** (η = 0.05, μ = 0.9) reaches a training loss about 35 times lower than SGD at the same η,
#   and about the same as **SGD at η = 0.5** = η/(1 − μ): on this problem its gain is the larger effective step.
# - **Adam at its defaults** does well here, unlike on the 2-D surfaces: it ends below SGD at η = 0.05,
#   though above momentum and SGD at η = 0.5. This is the kind of problem the default is meant for: a network
#   with small weights trained for hundreds of steps. But it is not the fastest here: momentum ends about 15
#   times lower.
#   None of these runs was tuned beyond a few values, so this ranking says nothing general, and neither
#   does the lesson's "Adam: fastest convergence": the outcome depends on the η each optimizer gets.
# - **Too large an η** (right): at η = 3 and 10 the first step throws the loss above its start (to about
#   4.4 and 65, from 3.2). At η = 3 the loss comes back below its start, to 1.6 after 30 steps, but it stays far
#   above η = 1's 0.046, some 35 times higher. On a network, too large a step does not always run to infinity as on
#   the quadratic: after 30 steps at η = 10, 94 % of the second layer's ReLU units are 0 on every training
#   image (printed above). Such a unit is *dead*: its σ'(z) is 0 on every example, so by the backward
#   recursion of notebook 2 its δ is 0 and its own weights and bias get no gradient; it stays off unless the
#   layer below changes its inputs. The loss sits near log 10, a uniform guess.

# %%
L = digit_losses
spe = steps_per_epoch["SGD, η = 0.05"]
assert len(x_tr) == 1438 and spe == 22 and len(x_tr) - spe * 64 == 30
minibatch_names = [name for name in L if not name.startswith("GD")]
assert all(np.all(L[name][1:] < L["GD, η = 1 (full batch)"][1:]) for name in minibatch_names)
assert all(L["GD, η = 1 (full batch)"][spe] < L[name][1] for name in minibatch_names)  # 22 steps each
assert L["momentum, η = 0.05, μ = 0.9"][30] < L["SGD, η = 0.05"][30] / 20
assert 0.5 < L["momentum, η = 0.05, μ = 0.9"][30] / L["SGD, η = 0.5"][30] < 2
assert L["momentum, η = 0.05, μ = 0.9"][30] < L["Adam, η = 1e-3 (default)"][30] < L["SGD, η = 0.05"][30]
assert L["Adam, η = 1e-3 (default)"][30] > 10 * L["momentum, η = 0.05, μ = 0.9"][30]
print(f"loss at the start {sweep_losses[0, 0]:.2f}; after GD's first step at η = 3: {sweep_losses[2, 1]:.2f}, "
      f"at η = 10: {sweep_losses[3, 1]:.1f}")
assert 3.0 < sweep_losses[0, 0] < 3.3 and 4 < sweep_losses[2, 1] < 5 and 55 < sweep_losses[3, 1] < 75
print(f"after 30 steps: η = 1: {sweep_losses[1, -1]:.3f}, η = 3: {sweep_losses[2, -1]:.2f} "
      f"({sweep_losses[2, -1] / sweep_losses[1, -1]:.0f} times higher), η = 10: {sweep_losses[3, -1]:.2f}")
assert round(float(sweep_losses[1, -1]), 3) == 0.046 and round(float(sweep_losses[2, -1]), 1) == 1.6
assert sweep_losses[2, -1] < sweep_losses[0, 0] and 30 < sweep_losses[2, -1] / sweep_losses[1, -1] < 40
assert sweep_losses[2, -1] > sweep_losses[0, -1] and abs(sweep_losses[3, -1] - np.log(10)) < 0.05
assert 0.9 < dead_layer2[10.0] < 0.97

# %% [markdown]
# **Our Adam against optax's.** The Adam of section 1 follows (3)–(5) line by line. optax, JAX's
# optimizer library, has `optax.adam` with the same defaults; its `update` returns the step, which
# `optax.apply_updates` adds. Fed the same minibatches, the two stay together to float32 rounding:

# %%
@jax.jit
def ours_against_optax(params, order):
    init, step = adam()
    reference = optax.adam(1e-3)

    def body(carry, idx):
        (p, state), (q, q_state) = carry
        p, state = step(p, mh.backward(p, x_tr[idx], Y_tr[idx], "relu", "ce"), state)
        updates, q_state = reference.update(mh.backward(q, x_tr[idx], Y_tr[idx], "relu", "ce"), q_state, q)
        q = optax.apply_updates(q, updates)
        gap = jnp.max(jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q))]))
        return ((p, state), (q, q_state)), gap

    return jax.lax.scan(body, ((params, init(params)), (params, reference.init(params))), order)


order = jax.random.permutation(jax.random.key(2), len(x_tr))[: 22 * 64].reshape(22, 64)
_, gaps = ours_against_optax(params0, jnp.tile(order, (10, 1)))
print(f"220 steps: largest |θ_ours - θ_optax| over all parameters and steps = {float(gaps.max()):.1e} "
      f"(the weights are of size {max(float(jnp.abs(W).max()) for W, _ in params0):.2f})")
assert float(gaps.max()) < 1e-6

# %% [markdown]
# ## Summary
#
# - GD's step is limited by the largest curvature: $\eta < 2/\lambda_\max$ (8), and the progress along the
#   flattest direction is then at best $(\kappa - 1)/(\kappa + 1)$ per step (9).
# - Momentum reuses past steps. Tuned by (13) it shrinks the error by $(\sqrt\kappa - 1)/(\sqrt\kappa + 1)$
#   per step instead; along a steady gradient it steps $1/(1 - \mu)$ times further than GD.
# - Adam moves each coordinate by at most about η per step, and by exactly η when the gradient is constant,
#   whatever its size: dividing by √ŝ removes the *scale* of the gradient, which helps across parameters of
#   different scales. But ŝ remembers about the last $1/(1 - \beta_2) = 1{,}000$ squared gradients, so after large
#   early gradients the steps stay far below η (on Rosenbrock, a few percent of η for hundreds of steps). And η
#   must still be chosen for the problem: the default 1e-3 suits neural networks trained for many steps, not the
#   2-D surfaces, where it barely moved.
# - Minibatches trade exact gradients for many more steps per epoch; on digits that won per epoch. At a
#   constant η, gradient noise leaves a floor proportional to η; a decaying η lowers it (Exercise 5).
# - Not covered here, and found in CS231n's and d2l's optimization chapters: Nesterov momentum, AdaGrad and
#   RMSProp (Adam's ŝ without its m̂), learning-rate schedules beyond Exercise 5.

# %% [markdown]
# ## Exercises
#
# 1. **κ = 100.** For $f = \tfrac12(\theta_1^2 + 100\,\theta_2^2)$, compute GD's best η and rate from (9)
#    and the heavy ball's η, μ and rate from (13). Run both for 300 steps from (−4, 1.5) and measure the
#    per-step factor of the distance to the minimum from step 100 to step 200.
# 2. **A rotated quadratic.** $f(\theta) = \tfrac12 \theta^\top A \theta$ with
#    $A = \begin{pmatrix} 3 & 1 \\ 1 & 3 \end{pmatrix}$ is not aligned with the axes. Find the bound (8) from
#    the eigenvalues of $A$ (`jnp.linalg.eigvalsh`), and check that GD converges just below it and diverges
#    just above it.
# 3. **Adam without (4).** For a constant gradient, what is Adam's first step if the bias correction is left
#    out, in units of η? Compute it from (3) and check it with `adam`'s code modified.
# 4. **Tuning Adam's η on Rosenbrock.** Run Adam for 2,000 steps from (−1.5, 2) with η = 1e-3, 3e-3, 1e-2,
#    3e-2 and 0.1 (one `jax.vmap` over η), and report the distance to (1, 1) for each. Which is best?
# 5. **SGD's noise floor, and a decaying η.** In section 3, "SGD" on the quadratic did not settle. (a) For GD
#    with noise $\xi \sim \mathcal N(0, \sigma^2)$ added to each gradient coordinate at a constant η, show that
#    the mean of $f$ settles at $\tfrac12 \sum_i \eta\sigma^2 / (2 - \eta\lambda_i)$, and check it for η = 1/13,
#    σ = 1 by averaging 100 runs (`jax.vmap` over random keys) over steps 200–400. (b) Let η decay as
#    $\eta_t = \eta / (1 + t/20)$. How low is the mean of $f$ over the last 50 of 400 steps?

# %% [markdown]
# ## Solutions

# %% [markdown]
# **1.** By (9), η = 2/101 and the rate is 99/101 ≈ 0.980; by (13), η = 4/121, √μ = 9/11 ≈ 0.818, μ = 81/121.

# %%
def quadratic_100(theta):
    return 0.5 * (theta[0] ** 2 + 100 * theta[1] ** 2)


solutions = {"GD": (gd(2 / 101), 99 / 101), "heavy ball": (momentum(4 / 121, 81 / 121), 9 / 11)}
for name, (optimizer, predicted) in solutions.items():
    path = np.asarray(run(quadratic_100, optimizer, theta0, 300))
    distance = np.linalg.norm(path, axis=1)
    measured = (distance[200] / distance[100]) ** (1 / 100)
    print(f"{name}: measured factor {measured:.4f}, predicted {predicted:.4f}")
    assert abs(measured - predicted) < 0.01

# %% [markdown]
# **2.** GD on $\tfrac12\theta^\top A\theta$ is $\theta \leftarrow (I - \eta A)\theta$; in the eigenbasis of
# $A$ it is (7) with the eigenvalues 2 and 4, so the bound is $\eta < 2/4 = 0.5$.

# %%
A = jnp.array([[3.0, 1.0], [1.0, 3.0]])
lam = np.asarray(jnp.linalg.eigvalsh(A))
bound = 2 / lam.max()
finals = {eta: float(jnp.linalg.norm(run(lambda th: 0.5 * th @ A @ th, gd(eta), theta0, 500)[-1]))
          for eta in (0.98 * bound, 1.02 * bound)}
print(f"eigenvalues {lam}, bound {bound}; |θ_500| at 0.98 and 1.02 times the bound: {list(finals.values())}")
assert np.isclose(bound, 0.5) and finals[0.98 * bound] < 1e-3 and finals[1.02 * bound] > 1e3

# %% [markdown]
# **3.** After one step $m = (1 - \beta_1) g$ and $s = (1 - \beta_2) g^2$, so without (4) the step is
# $\eta\, (1 - \beta_1) / \sqrt{1 - \beta_2} = \eta \cdot 0.1 / 0.0316 \approx 3.16\,\eta$: three times larger, not
# smaller, since $\sqrt{s}$ is biased towards 0 more than $m$ is.

# %%
b1, b2, eta = 0.9, 0.999, 1e-3
g = jnp.array([3.0, -0.001])
m, s = (1 - b1) * g, (1 - b2) * g ** 2  # (3) from m = s = 0
first_step = eta * m / (jnp.sqrt(s) + 1e-8)  # (5) with m and s in place of m̂ and ŝ
print("first step without (4), in units of η:", np.asarray(first_step / eta))
assert np.allclose(jnp.abs(first_step) / eta, 0.1 / np.sqrt(0.001), rtol=1e-3)  # ε = 1e-8 shows at 3e-4

# %% [markdown]
# **4.** The default is the worst, and the distance falls as η grows, down to about $10^{-7}$ at η = 0.1, the
# largest value tried, a hundred times the default. The best value depends on the problem and on the number of
# steps.

# %%
adam_etas = jnp.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
ends = jax.vmap(lambda eta: run(rosenbrock, adam(eta), start, T_r)[-1])(adam_etas)
distance = np.linalg.norm(np.asarray(ends) - 1.0, axis=1)
for eta, dist in zip(adam_etas, distance):
    print(f"Adam η = {float(eta):g}: distance to (1, 1) after {T_r} steps = {dist:.2g}")
assert np.all(np.diff(distance) < 0) and distance[-1] < 1e-6


# %% [markdown]
# **5.** (a) Per coordinate, $\theta \leftarrow (1 - \eta\lambda)\theta - \eta\xi$ with fresh noise at every step.
# The mean of θ goes to 0 by (7); its variance $V$ settles where $V = (1 - \eta\lambda)^2 V + \eta^2\sigma^2$,
# that is $V = \eta\sigma^2 / \big(\lambda(2 - \eta\lambda)\big)$, and $\mathbb E f = \tfrac12\sum_i \lambda_i V_i
# = \tfrac12 \sum_i \eta\sigma^2/(2 - \eta\lambda_i)$. For η = 1/13 that is $\tfrac12(0.04 + 1) = 0.52$: the stiff
# coordinate, near GD's bound, carries almost all of it. A constant η leaves a floor proportional to η.
# (b) A decaying η lowers the floor as it goes: the mean of $f$ ends more than a hundred times lower.

# %%
def noisy_gd_f(schedule, k, steps=400, sigma=1.0):
    """f after each step of GD with N(0, σ²) gradient noise and step size schedule(t) on the quadratic."""
    def body(theta, x):
        t, kt = x
        theta = theta - schedule(t) * (jax.grad(quadratic)(theta) + sigma * jax.random.normal(kt, (2,)))
        return theta, quadratic(theta)
    return jax.lax.scan(body, theta0, (jnp.arange(steps), jax.random.split(k, steps)))[1]


run_keys = jax.random.split(jax.random.key(7), 100)
f_constant = jax.vmap(lambda k: noisy_gd_f(lambda t: 1 / 13, k))(run_keys)
f_decay = jax.vmap(lambda k: noisy_gd_f(lambda t: (1 / 13) / (1 + t / 20), k))(run_keys)
eta = 1 / 13
floor = 0.5 * sum(eta / (2 - eta * lam) for lam in (1.0, 25.0))
print(f"constant η: mean f over steps 200-400 = {float(f_constant[:, 200:].mean()):.3f}, formula {floor:.3f}; "
      f"decaying η: mean f over the last 50 steps = {float(f_decay[:, -50:].mean()):.4f}")
assert abs(float(f_constant[:, 200:].mean()) / floor - 1) < 0.1
assert float(f_decay[:, -50:].mean()) < floor / 100
