"""Models the checker's tests bring, as a researcher would: each with a loss (the reference), a backward
written by hand from the chain rule, and the bugs such a backward really has.

``MODELS[name]() -> Model``; every model is float64 (create it under ``jax.enable_x64``). ``GENERIC_BUGS``
plants a bug in any model's correct ``(loss, grads)``; each model adds its own (``Model.bugs``). A bug is
``(change, expected)``: ``change(loss, grads) -> (loss, grads)`` (or the pair it returns) and the prefix of
the failure the checker must report (a leaf's path, or ``"loss"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclass
class Model:
    params: dict
    args: tuple
    loss: Callable
    backward: Callable  # the hand-written, correct backward: (params, *args) -> (loss, grads)
    bugs: dict = field(default_factory=dict)  # name -> (a backward with the bug, expected failure prefix)


def _keys(seed, n):
    return jax.random.split(jax.random.key(seed), n)


# ---------------------------------------------------------------------------------------- a 1-D convolution

def _conv(kernel, x):
    """Cross-correlation of each row of x (B, L) with each channel's kernel (C, 1, K), VALID: (B, C, L-K+1)."""
    return jax.lax.conv_general_dilated(x[:, None, :], kernel, (1,), "VALID")


def conv_loss(p, x, y, relu=jax.nn.relu):
    a = relu(_conv(p["kernel"], x) + p["bias"][None, :, None])
    return jnp.mean((a.sum(-1) @ p["w"] - y) ** 2)


def conv_backward(p, x, y, relu_at_zero=0.0, flip_kernel=False):
    """By hand: pred = Σ_t relu(z) w, z = kernel ⋆ x + bias; relu'(0) = ``relu_at_zero``."""
    z = _conv(p["kernel"], x) + p["bias"][None, :, None]
    a = jnp.maximum(z, 0)
    s = a.sum(-1)
    r = s @ p["w"] - y
    d_pred = 2 * r / len(y)
    dz = (d_pred[:, None] * p["w"][None, :])[:, :, None] * jnp.where(z > 0, 1.0, jnp.where(z < 0, 0.0, relu_at_zero))
    K = p["kernel"].shape[-1]
    windows = jnp.stack([x[:, k:k + z.shape[-1]] for k in range(K)], -1)  # (B, L', K): x[b, t + k]
    d_kernel = jnp.einsum("bct,btk->ck", dz, windows)[:, None, :]
    if flip_kernel:  # the classic bug: convolution's gradient taken with the kernel flipped
        d_kernel = d_kernel[..., ::-1]
    return jnp.mean(r ** 2), {"kernel": d_kernel, "bias": dz.sum((0, 2)), "w": s.T @ d_pred}


def conv(zero_block=False, seed=0):
    k = _keys(seed, 4)
    p = {"kernel": jax.random.normal(k[0], (6, 1, 3)), "bias": 0.1 * jax.random.normal(k[1], (6,)),
         "w": jax.random.normal(k[2], (6,))}
    x = jax.random.normal(k[3], (5, 12))
    y = jax.random.normal(k[0], (5,))
    if zero_block:  # exact zero inputs and zero bias: the pre-activations of the block sit on relu's kink
        p["bias"] = jnp.zeros(6)
        x = x.at[:, 3:9].set(0.0)
    m = Model(p, (x, y), conv_loss, conv_backward)
    m.bugs["kernel-flipped"] = (lambda p, x, y: conv_backward(p, x, y, flip_kernel=True), "['kernel']")
    return m


# ---------------------------------------------------------------------------------------- self-attention

def attention_loss(p, X, Y):
    d = p["Wq"].shape[1]
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    P = jax.nn.softmax(Q @ K.T / jnp.sqrt(d), axis=-1)
    return jnp.mean((P @ V @ p["Wo"] - Y) ** 2)


def attention_backward(p, X, Y, softmax_jacobian=True, scale=True):
    d = p["Wq"].shape[1]
    c = 1 / jnp.sqrt(d) if scale else 1.0
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    S = Q @ K.T / jnp.sqrt(d)
    P = jax.nn.softmax(S, axis=-1)
    O = P @ V
    R = O @ p["Wo"] - Y
    dOut = 2 * R / R.size
    dWo, dO = O.T @ dOut, dOut @ p["Wo"].T
    dP, dV = dO @ V.T, P.T @ dO
    dS = P * (dP - jnp.sum(dP * P, axis=-1, keepdims=True)) if softmax_jacobian else P * dP
    dQ, dK = c * dS @ K, c * dS.T @ Q
    return jnp.mean(R ** 2), {"Wq": X.T @ dQ, "Wk": X.T @ dK, "Wv": X.T @ dV, "Wo": dWo}


def attention(seed=0):
    k = _keys(seed, 6)
    n, d = 5, 4
    p = {name: jax.random.normal(key, (d, d)) / 2 for name, key in zip(("Wq", "Wk", "Wv", "Wo"), k)}
    X, Y = jax.random.normal(k[4], (n, d)), jax.random.normal(k[5], (n, d))
    m = Model(p, (X, Y), attention_loss, attention_backward)
    m.bugs["softmax-jacobian-dropped"] = (lambda p, X, Y: attention_backward(p, X, Y, softmax_jacobian=False), "['Wk']")
    m.bugs["no-1/sqrt(d)"] = (lambda p, X, Y: attention_backward(p, X, Y, scale=False), "['Wk']")
    return m


# ---------------------------------------------------------------------------------------- a layer-norm MLP

def layer_norm_loss(p, x, y, eps=1e-5):
    z = x @ p["W1"] + p["b1"][None]
    mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    h = jnp.tanh((z - mu) / jnp.sqrt(var + eps) * p["gamma"][None] + p["beta"][None])
    return jnp.mean((h @ p["W2"] + p["b2"][None] - y) ** 2)


def layer_norm_backward(p, x, y, eps=1e-5, centered=True):
    z = x @ p["W1"] + p["b1"][None]
    mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
    sigma = jnp.sqrt(var + eps)
    xhat = (z - mu) / sigma
    h = jnp.tanh(xhat * p["gamma"][None] + p["beta"][None])
    r = h @ p["W2"] + p["b2"][None] - y
    d_out = 2 * r / r.size
    dh = d_out @ p["W2"].T
    du = dh * (1 - h ** 2)
    dxhat = du * p["gamma"][None]
    mean_dxhat = dxhat.mean(-1, keepdims=True) if centered else 0.0
    dz = (dxhat - mean_dxhat - xhat * (dxhat * xhat).mean(-1, keepdims=True)) / sigma
    grads = {"W1": x.T @ dz, "b1": dz.sum(0), "gamma": (du * xhat).sum(0), "beta": du.sum(0),
             "W2": h.T @ d_out, "b2": d_out.sum(0)}
    return jnp.mean(r ** 2), grads


def layer_norm(seed=0):
    k = _keys(seed, 5)
    p = {"W1": jax.random.normal(k[0], (3, 6)), "b1": 0.1 * jax.random.normal(k[1], (6,)),
         "gamma": 1 + 0.1 * jax.random.normal(k[2], (6,)), "beta": 0.1 * jax.random.normal(k[3], (6,)),
         "W2": jax.random.normal(k[4], (6, 2)), "b2": jnp.zeros(2)}
    x, y = jax.random.normal(k[0], (7, 3)), jax.random.normal(k[1], (7, 2))
    m = Model(p, (x, y), layer_norm_loss, layer_norm_backward)
    m.bugs["mean-term-dropped"] = (lambda p, x, y: layer_norm_backward(p, x, y, centered=False), "['W1']")
    return m


# ---------------------------------------------------------------------------------------- an RNN, lax.scan

def rnn_loss(p, xs, y):
    def cell(h, x):
        h = jnp.tanh(p["W"] @ h + p["U"] @ x + p["b"])
        return h, None

    h, _ = jax.lax.scan(cell, jnp.zeros(p["W"].shape[0]), xs)
    return jnp.mean((p["V"] @ h - y) ** 2)


def rnn_backward(p, xs, y, steps=None):
    """Backpropagation through time; ``steps`` < T truncates it (the bug)."""
    hs = [jnp.zeros(p["W"].shape[0])]
    for x in xs:
        hs.append(jnp.tanh(p["W"] @ hs[-1] + p["U"] @ x + p["b"]))
    r = p["V"] @ hs[-1] - y
    g = {k: jnp.zeros_like(v) for k, v in p.items()}
    g["V"] = jnp.outer(2 * r / r.size, hs[-1])
    dh = p["V"].T @ (2 * r / r.size)
    T = len(xs)
    for t in range(T, max(0, T - (steps or T)), -1):
        da = dh * (1 - hs[t] ** 2)
        g["W"] = g["W"] + jnp.outer(da, hs[t - 1])
        g["U"] = g["U"] + jnp.outer(da, xs[t - 1])
        g["b"] = g["b"] + da
        dh = p["W"].T @ da
    return jnp.mean(r ** 2), g


def rnn(seed=0):
    k = _keys(seed, 5)
    H, D, T = 4, 3, 5
    p = {"W": 0.5 * jax.random.normal(k[0], (H, H)), "U": jax.random.normal(k[1], (H, D)),
         "b": 0.1 * jax.random.normal(k[2], (H,)), "V": jax.random.normal(k[3], (2, H))}
    xs, y = jax.random.normal(k[4], (T, D)), jax.random.normal(k[0], (2,))
    m = Model(p, (xs, y), rnn_loss, rnn_backward)
    m.bugs["bptt-truncated"] = (lambda p, xs, y: rnn_backward(p, xs, y, steps=T - 1), "['U']")
    return m


# ---------------------------------------------------------------------------------------- mixed leaves

def mixed_loss(p, x):
    return (p["scale"] * jnp.sum(jnp.tanh(p["row"] @ p["mat"] + p["vec"][None]) * x) + p["scale"] ** 2
            + jnp.sum(p["col"] ** 3))


def mixed_backward(p, x):
    u = p["row"] @ p["mat"] + p["vec"][None]  # (1, 3)
    t = jnp.tanh(u)
    du = p["scale"] * x * (1 - t ** 2)
    return mixed_loss(p, x), {"scale": jnp.sum(t * x) + 2 * p["scale"], "row": du @ p["mat"].T,
                              "mat": p["row"].T @ du, "vec": du[0], "col": 3 * p["col"] ** 2}


def mixed(seed=0):
    k = _keys(seed, 5)
    p = {"scale": jnp.asarray(1.5), "row": jax.random.normal(k[0], (1, 4)), "mat": jax.random.normal(k[1], (4, 3)),
         "vec": jax.random.normal(k[2], (3,)), "col": jax.random.normal(k[3], (2, 1))}
    x = jax.random.normal(k[4], (1, 3))
    m = Model(p, (x,), mixed_loss, mixed_backward)
    m.bugs["scalar-leaf-sign"] = (lambda p, x: (lambda l, g: (l, {**g, "scale": -g["scale"]}))(*mixed_backward(p, x)),
                                  "['scale']")
    m.bugs["vec-as-row"] = (lambda p, x: (lambda l, g: (l, {**g, "vec": g["vec"][None, :]}))(*mixed_backward(p, x)),
                            "['vec']")
    return m


MODELS = {"conv": conv, "attention": attention, "layer_norm": layer_norm, "rnn": rnn, "mixed": mixed}


# ---------------------------------------------------------------------------------------- bugs for any model

def _largest_leaf(g):
    return max(g, key=lambda k: np.size(g[k]))


def _one_entry(factor):
    def change(loss, g):
        k = _largest_leaf(g)
        flat = jnp.ravel(g[k])
        i = int(jnp.argmax(jnp.abs(flat)))
        return loss, {**g, k: flat.at[i].multiply(factor).reshape(jnp.shape(g[k]))}
    return change


def _leaf(fn):
    return lambda loss, g: (loss, {**g, _largest_leaf(g): fn(g[_largest_leaf(g)])})


GENERIC_BUGS = {
    "one-entry-off-by-1e-4": (_one_entry(1 + 1e-4), "largest"),
    "float32-backward": (lambda loss, g: (loss, jax.tree.map(lambda a: a.astype(jnp.float32), g)), "largest"),
    "leaf-scaled-0.9": (_leaf(lambda a: 0.9 * a), "largest"),
    "leaf-sign-flipped": (_leaf(lambda a: -a), "largest"),
    "leaf-missing": (lambda loss, g: (loss, {k: v for k, v in g.items() if k != _largest_leaf(g)}), "largest"),
    "extra-leaf": (lambda loss, g: (loss, {**g, "extra": jnp.zeros(2)}), "['extra']"),
    "leaf-with-a-batch-axis": (_leaf(lambda a: a[None]), "largest"),
    "nan-entry": (_leaf(lambda a: jnp.ravel(a).at[0].set(jnp.nan).reshape(jnp.shape(a))), "largest"),
    "loss-off-by-1%": (lambda loss, g: (1.01 * loss, g), "loss"),
    "pair-swapped": (lambda loss, g: (g, loss), "loss"),
}


def with_bug(model: Model, change):
    """``model.backward`` with a generic bug planted in what it returns."""
    return lambda *a: change(*model.backward(*a))


def expected_path(model: Model, expected: str) -> str:
    return f"['{_largest_leaf(model.params)}']" if expected == "largest" else expected
