"""The multi-layer perceptron: initialization, forward propagation, the loss, and the linear collapse.

The forward equations (F1)-(F2) and their batched form are written once, in :mod:`jaxmlp.backprop`'s
docstring, beside the backward equations they pair with; the lines below carry their tags.

A perceptron is the one-layer case, ``sizes = [n_in, 1]`` with a sigmoid (or step) output.

All functions are pure and take configuration (activation and loss names) as keyword arguments that
are static under ``jax.jit``: wrap them as ``jax.jit(partial(forward, activation="tanh"))`` or pass
them through ``static_argnames``. Shapes are checked while tracing (see :mod:`jaxmlp.checks`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp import activations, checks, initializers, losses
from jaxmlp.types import ForwardPass, Layer

# Which output activation each loss accepts, and its natural pair (used when output_activation=None).
ALLOWED_OUTPUTS = {"mse": ("identity", "sigmoid", "tanh"), "bce": ("sigmoid",), "ce": ("softmax",)}
NATURAL_OUTPUT = {"mse": "identity", "bce": "sigmoid", "ce": "softmax"}


def init_mlp(key, sizes, *, init="he", dtype=jnp.float32) -> tuple[Layer, ...]:
    """Initialize an MLP with layer widths ``sizes`` (e.g. ``[5, 64, 32, 16, 1]``).

    Args:
      key: a ``jax.random`` key; layer l uses the l-th of ``jax.random.split(key, L)``.
      sizes: widths ``[n_0, n_1, ..., n_L]``, at least two positive ints.
      init: a scheme name from :mod:`jaxmlp.initializers` (``"zeros"``, ``"xavier"``, ``"he"``,
        ``"xavier_uniform"``, ``"he_uniform"``, ``"lecun"``, ``"pytorch"``) or a callable
        ``(key, shape, dtype) -> array`` such as ``jax.nn.initializers.glorot_uniform()``.
      dtype: the dtype of every leaf.

    Returns:
      ``tuple(Layer(W, b) for each layer)`` with ``W`` of shape ``(n_l, n_{l-1})`` and ``b`` ``(n_l,)``.

    A named scheme runs as one compiled program per ``(sizes, init, dtype)`` (op by op it was about a
    dozen small ones, each compiled on first use), with the same values bit for bit; under ``vmap`` over
    keys too. A callable ``init`` runs op by op, as a fresh closure would otherwise compile on every call.
    """
    widths = checks.sizes(sizes)
    checks.random_key(key)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype (float32, float64, bfloat16, ...), got dtype={dtype!r}")
    if isinstance(init, str):
        return _init_compiled(key, widths=widths, init=init,  # None: jax's default float, as before
                              dtype=jnp.dtype(jnp.result_type(float) if dtype is None else dtype))
    return _init_layers(key, widths, init, dtype)


def _init_layers(key, widths, init, dtype) -> tuple[Layer, ...]:
    keys = jax.random.split(key, len(widths) - 1)
    return tuple(
        Layer(*initializers.init_layer(k, n_in, n_out, init, dtype))
        for k, n_in, n_out in zip(keys, widths[:-1], widths[1:])
    )


_init_compiled = jax.jit(_init_layers, static_argnames=("widths", "init", "dtype"))


def resolve(activation, output_activation, loss=None):
    """Resolve names to ``(σ, σ_out)`` Activations, checking the hidden activation and the loss pairing.

    With ``loss`` given, ``output_activation=None`` means the loss's natural pair (mse→identity,
    bce→sigmoid, ce→softmax) and any pairing outside ``ALLOWED_OUTPUTS`` is a ValueError. A user's own
    elementwise ``Activation`` is accepted as the output of ``mse``.
    """
    sigma = activations.get(activation)
    if not sigma.elementwise:
        raise ValueError(f"activation={sigma.name!r} is not elementwise; it is allowed only as the output "
                         f"activation with loss='ce'. Hidden activations: {', '.join(activations.HIDDEN_NAMES)}")
    if loss is None:
        return sigma, activations.get("identity" if output_activation is None else output_activation)
    if loss not in ALLOWED_OUTPUTS:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(losses.NAMES)}")
    sigma_out = activations.get(NATURAL_OUTPUT[loss] if output_activation is None else output_activation)
    user_defined = isinstance(output_activation, activations.Activation) and output_activation.name not in activations.NAMES
    if sigma_out.name not in ALLOWED_OUTPUTS[loss] and not (loss == "mse" and user_defined and sigma_out.elementwise):
        pairs = "; ".join(f"loss={k!r} with output_activation in {v}" for k, v in ALLOWED_OUTPUTS.items())
        raise ValueError(f"output_activation={sigma_out.name!r} cannot be paired with loss={loss!r}; "
                         f"allowed pairs: {pairs}")
    return sigma, sigma_out


def as_batch(x, y=None):
    """Promote one example to a batch of one: ``(n_in,) -> (1, n_in)`` (and ``y`` alike)."""
    x = jnp.asarray(x)
    if x.ndim == 1:
        return x[None, :], (None if y is None else jnp.asarray(y)[None])
    return x, (None if y is None else jnp.asarray(y))


def forward_batched(params, X, sigma, sigma_out, dZ=None, compute_dtype=None) -> ForwardPass:
    """Forward propagation of a batch ``X`` of shape ``(B, n_in)``, keeping every Z[l] and A[l].

    ``dZ[l]`` (optional, shape ``(B, n_l)``) is added to Z[l]: autodiff with respect to a zero ``dZ``
    gives ∂L/∂Z[l], the reference for backprop's deltas.

    ``compute_dtype`` (mixed precision, e.g. ``jnp.bfloat16``): W, b and X are cast to it, so every
    matmul runs in it, and the logits Z[L] are cast back to the parameters' dtype before the output
    activation, so that the output and the loss are computed in full precision.
    """
    if compute_dtype is not None and not jnp.issubdtype(compute_dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as jnp.bfloat16, got {compute_dtype!r}")
    L = len(params)
    out_dtype = jnp.result_type(params[-1].W)
    cast = (lambda t: t) if compute_dtype is None else (lambda t: t.astype(compute_dtype))
    A = cast(X)
    Zs, As = [None], [A]
    for l, (W, b) in enumerate(params, start=1):
        Z = A @ cast(W).T + cast(b)[None, :]  # (F1), batched: Z[l] = A[l-1] W[l]ᵀ + 1 b[l]ᵀ
        if dZ is not None:
            Z = Z + dZ[l]
        if l == L and compute_dtype is not None:
            Z = Z.astype(out_dtype)
        A = (sigma_out if l == L else sigma).fn(Z)  # (F2): A[l] = σ(Z[l])
        Zs.append(Z)
        As.append(A)
    return ForwardPass(z=tuple(Zs), a=tuple(As))


def _checked_forward(params, x, sigma, sigma_out) -> ForwardPass:
    widths = checks.params_chain(params)
    checks.input_matches(widths, x)
    X, _ = as_batch(x)
    fp = forward_batched(params, X, sigma, sigma_out)
    if jnp.ndim(x) == 1:
        fp = ForwardPass(z=(None,) + tuple(Z[0] for Z in fp.z[1:]), a=tuple(A[0] for A in fp.a))
    return fp


def forward_with_cache(params, x, *, activation="relu", output_activation="identity"):
    """Forward propagation returning ``(a[L], fp)``, ``fp`` the :class:`~jaxmlp.types.ForwardPass` that backprop
    reads (the lesson's "cache"): ``fp.z[l]``, ``fp.a[l]`` indexed as in the lesson."""
    sigma, sigma_out = resolve(activation, output_activation)
    fp = _checked_forward(params, x, sigma, sigma_out)
    return fp.a[-1], fp


def forward(params, x, *, activation="relu", output_activation="identity"):
    """The network's output a[L] = σ_out(z[L]) for ``x``, by (F1)-(F2) layer after layer.

    Args:
      params: a tuple of ``Layer(W, b)``, ``W`` of shape ``(n_l, n_{l-1})``, as :func:`init_mlp` makes.
      x: one example ``(n_in,)`` or a batch ``(batch, n_in)``; the output has shape ``(n_out,)`` or
        ``(batch, n_out)`` accordingly.
      activation: the hidden activation σ: a name from :data:`jaxmlp.activations.HIDDEN_NAMES` (``"sigmoid"``,
        ``"tanh"``, ``"relu"``, ``"leaky_relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"identity"``) or your own
        :class:`jaxmlp.activations.Activation` ``(name, fn, grad, kinks=(), elementwise=True)``: ``fn`` the
        value, ``grad`` its elementwise derivative written by hand (what :func:`jaxmlp.backward` uses), ``kinks``
        the points where it is not differentiable (finite-difference checks flag them). For example
        ``Activation("softplus", jax.nn.softplus, jax.nn.sigmoid)``.
      output_activation: σ_out, a name from :data:`jaxmlp.activations.NAMES` (``"softmax"`` included) or
        an ``Activation``. The default ``"identity"`` returns the raw outputs z[L].

    Returns:
      a[L], in the parameters' dtype.

    Why the default differs from :func:`loss_fn`'s: ``forward`` takes no loss, so it has no natural pair to
    pick, and returns z[L] unless told otherwise. ``loss_fn(..., output_activation=None)`` pairs the loss
    with its output (mse→identity, bce→sigmoid, ce→softmax). So a network trained with ``loss="ce"``
    gives logits from ``forward(params, x)`` (their argmax is the predicted class) and probabilities from
    ``forward(params, x, output_activation="softmax")``; with ``loss="bce"`` the logit threshold is 0, the
    probability threshold (``output_activation="sigmoid"``) 0.5. For mse the two defaults agree.

    Works under ``jit``, ``grad``, ``vmap`` over ``x`` and ``vmap`` over ``params`` (stacked ensembles).
    """
    return forward_with_cache(params, x, activation=activation, output_activation=output_activation)[0]


def loss_from_forward(fp: ForwardPass, y, loss: str):
    """The loss of a finished forward pass. bce+sigmoid and ce+softmax are computed from the logits z[L]."""
    z_L, a_L = fp.z[-1], fp.a[-1]
    if loss == "bce":
        return losses.binary_cross_entropy_with_logits(z_L, y)  # (L4)
    if loss == "ce":
        return losses.softmax_cross_entropy_with_logits(z_L, y)  # (L5)
    return losses.mse(a_L, y)  # (L1)


def check_target(params, x, y, loss):
    """Validate ``loss``, and ``y`` against ``x`` and the network's output shape, before any compute."""
    if loss not in ALLOWED_OUTPUTS:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(losses.NAMES)}")
    widths = checks.params_chain(params)
    if loss == "ce" and widths[-1] < 2:
        raise ValueError(f"loss='ce' needs at least 2 output units (classes), but the last layer has "
                         f"{widths[-1]}; use loss='bce' with a sigmoid output for a binary task")
    checks.input_matches(widths, x)
    if jnp.ndim(x) == 2 and jnp.shape(x)[0] == 0:  # a mean over no examples: 0/0
        raise ValueError(f"x has no examples: shape {jnp.shape(x)}; a loss is a mean over at least one")
    checks.batch_matches(x, y)
    out_shape = jax.ShapeDtypeStruct(jnp.shape(x)[:-1] + (widths[-1],), jnp.result_type(float))
    if loss == "ce":
        checks.class_target_matches(out_shape, y)
    else:
        checks.target_matches(out_shape, y)


def prepare(params, x, y, activation, output_activation, loss, compute_dtype=None, dZ=None):
    """What every loss-taking function starts with: resolve and check the configuration and shapes,
    batch ``(x, y)`` and run the forward pass. Returns ``(σ, σ_out, Y, fp)``."""
    sigma, sigma_out = resolve(activation, output_activation, loss)
    check_target(params, x, y, loss)
    X, Y = as_batch(x, y)
    return sigma, sigma_out, Y, forward_batched(params, X, sigma, sigma_out, dZ, compute_dtype)


def loss_and_output(params, x, y, activation, output_activation, loss, compute_dtype=None, dZ=None):
    """The loss of one forward pass with what metrics need of that pass: ``(L, (A[L], Y))``, ``Y`` the
    batched target. ``jax.value_and_grad(..., has_aux=True)`` of it gives loss, gradient and output at once."""
    _, _, Y, fp = prepare(params, x, y, activation, output_activation, loss, compute_dtype, dZ)
    return loss_from_forward(fp, Y, loss), (fp.a[-1], Y)


def loss_fn(params, x, y, *, activation="relu", output_activation=None, loss="mse", compute_dtype=None):
    """The scalar loss of the network on ``(x, y)``; see :mod:`jaxmlp.losses` for where the 1/n lives.

    ``output_activation=None`` picks the loss's natural pair (mse→identity, bce→sigmoid, ce→softmax);
    :func:`forward`, which takes no loss, defaults to identity instead (its docstring says what that means).
    Integer labels outside [0, C) cannot raise under ``jit``: :mod:`jaxmlp.losses` says what is computed.
    ``compute_dtype`` runs the matmuls in that dtype (mixed precision; see :func:`forward_batched`);
    the loss stays in the parameters' dtype.
    """
    return loss_and_output(params, x, y, activation, output_activation, loss, compute_dtype)[0]


def collapse_linear(params) -> Layer:
    """The single layer equal to the network when every activation is the identity.

    Without activations, a[L] = W[L](⋯(W[1] x + b[1])⋯) + b[L] = W x + b with
    W = W[L] ⋯ W[1] and b = W[L](⋯(W[2] b[1] + b[2])⋯) + b[L]: an MLP without
    nonlinearities is one linear map, i.e. linear regression, however deep.
    """
    checks.params_chain(params)
    W, b = params[0]
    for W_l, b_l in params[1:]:
        W, b = W_l @ W, W_l @ b + b_l
    return Layer(W, b)
