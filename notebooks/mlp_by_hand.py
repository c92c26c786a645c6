"""The MLP of notebook 02, written by hand in plain jax.numpy: forward pass, backward pass, loss.

Notebook 02 builds these functions step by step from the chain rule (the forward pass is its equations (1)-(3),
the losses (18)-(20), the backward pass (21)-(23)) and checks them against ``jax.grad``; notebooks 03 and 04
import them from here. Nothing of the jaxmlp library is used.

Shapes, as in the lesson: ``params`` is a list of ``(W, b)`` with ``W[l]`` of shape ``(n_l, n_{l-1})``;
a batch ``X`` is ``(B, n_0)``, one example per row, so a layer computes ``Z = A_prev @ W.T + b``.
Losses are means over the batch: ``mse`` and ``bce`` over every output entry, ``ce`` over examples.
"""

import jax.numpy as jnp


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
