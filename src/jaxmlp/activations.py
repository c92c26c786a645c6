"""Activation functions, each with its derivative written by hand beside it.

Every activation is an :class:`Activation`: its value ``fn(z)`` and its elementwise derivative
``grad(z) = dσ/dz``, both written from the formula, not obtained by autodiff. Values and derivatives
equal ``jax.nn``'s everywhere, kinks included (the tests check a grid that contains the kinks)::

    sigmoid      σ(z) = 1 / (1 + e^(-z))               σ'(z) = σ(z) (1 - σ(z))                  (A1)
    tanh         σ(z) = tanh z                           σ'(z) = 1 - tanh² z                       (A2)
    relu         σ(z) = max(z, 0)                        σ'(z) = 1 if z > 0 else 0                 (A3)
    leaky_relu   σ(z) = z if z >= 0 else α z, α = 0.01   σ'(z) = 1 if z >= 0 else α                (A4)
    gelu         σ(z) = z Φ(z), Φ(z) = ½(1 + erf(z/√2))  σ'(z) = Φ(z) + z φ(z), φ = e^(-z²/2)/√(2π) (A5)
    gelu_tanh    σ(z) = ½ z (1 + tanh u), u = c(z + k z³) σ'(z) = ½(1 + tanh u)
                 c = √(2/π), k = 0.044715                          + ½ z (1 - tanh² u) c (1 + 3k z²)  (A6)
    identity     σ(z) = z                                σ'(z) = 1                                 (A7)
    softmax      σ(z)_i = e^(z_i) / Σ_j e^(z_j)          a Jacobian, not elementwise: output only   (A8)

Second derivatives, written by hand too, for the Hessian-vector product of :mod:`jaxmlp.hvp`
(with φ(z) = e^(-z²/2)/√(2π), and for gelu_tanh t = tanh u, u' = c(1 + 3k z²), u'' = 6 c k z)::

    sigmoid      σ''(z) = σ'(z) (1 - 2σ(z))                                                       (A1'')
    tanh         σ''(z) = -2 tanh z (1 - tanh² z)                                                 (A2'')
    relu, leaky_relu, identity     σ''(z) = 0 (away from the kink; 0 there too, as jax's)   (A3''), (A4''), (A7'')
    gelu         σ''(z) = φ(z) (2 - z²)                                                           (A5'')
    gelu_tanh    σ''(z) = (1 - t²) u' + ½ z (1 - t²) (u'' - 2 t u'²)                              (A6'')

The kinks follow ``jax.nn``: relu'(0) = 0 (``jax.nn.relu``'s custom derivative) and leaky_relu'(0) = 1
(``jax.nn.leaky_relu`` is ``where(z >= 0, z, α z)``). The value functions are written so that autodiff
through them meets the same convention, which is what lets ``backward`` equal ``jax.grad(loss_fn)``
at exact kinks (zero initialization puts every z at 0).

NaN propagates as in ``jax.nn``: every value is NaN at a NaN input (relu's is written
``where(z <= 0, 0, z)`` so that NaN, which fails every comparison, takes the ``z`` branch; the
tempting ``where(z > 0, z, 0)`` maps NaN to 0 and hides a bad input). The derivatives at NaN are
``jax.grad`` of ``jax.nn``'s at NaN: NaN for the smooth activations, while relu'(NaN) = 0 and
leaky_relu'(NaN) = α are the constants of the branch NaN falls into, as ``jax.nn``'s. In backprop
that constant multiplies a δ that is already NaN (the loss is NaN), so the gradient is NaN too.

Softmax couples its outputs, so it has no elementwise derivative; it is allowed only as the output
activation paired with cross-entropy, where backprop uses the fused delta a - y.

No module-level ``jnp`` constants: constants are Python floats, cast to ``z``'s dtype at call time, so
enabling float64 after import works.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

LEAKY_RELU_SLOPE = 0.01
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_K = 0.044715


class Activation(NamedTuple):
    """An activation σ and its hand-written elementwise derivative σ'.

    Attributes:
      name: a readable name, used in tables and error messages.
      fn: ``z -> σ(z)``.
      grad: ``z -> σ'(z)``, elementwise, written by hand.
      kinks: the points where σ is not differentiable (``(0.0,)`` for relu); finite-difference checks
        flag pre-activations near them. Empty for smooth activations.
      elementwise: False only for softmax, whose derivative is a Jacobian.
      grad2: ``z -> σ''(z)``, the second derivative written by hand, or None; :func:`jaxmlp.hvp` needs it.

    A user's own ``Activation(name, fn, grad)`` is accepted wherever a name is.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    grad: Callable[[jax.Array], jax.Array]
    kinks: tuple[float, ...] = ()
    elementwise: bool = True
    grad2: Callable[[jax.Array], jax.Array] | None = None


def _sigmoid(z):
    return lax.logistic(z)  # (A1)


def _sigmoid_grad(z):
    s = lax.logistic(z)
    return s * (1 - s)  # (A1)


def _tanh(z):
    return jnp.tanh(z)  # (A2)


def _tanh_grad(z):
    t = jnp.tanh(z)
    return 1 - t * t  # (A2)


def _relu(z):
    return jnp.where(z <= 0, jnp.zeros_like(z), z)  # (A3): NaN fails z <= 0 and passes through


def _relu_grad(z):
    return (z > 0).astype(z.dtype)  # (A3): 0 at the kink, as jax.nn.relu


def _leaky_relu(z):
    return jnp.where(z >= 0, z, LEAKY_RELU_SLOPE * z)  # (A4)


def _leaky_relu_grad(z):
    return jnp.where(z >= 0, jnp.ones_like(z), jnp.full_like(z, LEAKY_RELU_SLOPE))  # (A4): 1 at the kink


def _Phi(z):
    return 0.5 * lax.erfc(-z * _INV_SQRT_2)  # Φ(z) = ½(1 + erf(z/√2)), via erfc for the left tail


def _gelu(z):
    return z * _Phi(z)  # (A5)


def _gelu_grad(z):
    phi = _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)
    return _Phi(z) + z * phi  # (A5)


def _gelu_tanh(z):
    u = _SQRT_2_OVER_PI * (z + _GELU_K * z**3)
    return 0.5 * z * (1 + jnp.tanh(u))  # (A6)


def _gelu_tanh_grad(z):
    u = _SQRT_2_OVER_PI * (z + _GELU_K * z**3)
    t = jnp.tanh(u)
    du_dz = _SQRT_2_OVER_PI * (1 + 3 * _GELU_K * z * z)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du_dz  # (A6)


def _identity(z):
    return z  # (A7)


def _identity_grad(z):
    return jnp.ones_like(z)  # (A7)


def _sigmoid_grad2(z):
    s = lax.logistic(z)
    return s * (1 - s) * (1 - 2 * s)  # (A1'')


def _tanh_grad2(z):
    t = jnp.tanh(z)
    return -2 * t * (1 - t * t)  # (A2'')


def _zero(z):
    return jnp.zeros_like(z)  # (A3''), (A4''), (A7'')


def _gelu_grad2(z):
    phi = _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)
    return phi * jnp.where(phi > 0, 2 - z * z, 0)  # (A5''); where φ underflows, 0 (z² may overflow: 0 · inf)


def _gelu_tanh_grad2(z):
    t = jnp.tanh(_SQRT_2_OVER_PI * (z + _GELU_K * z**3))
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_K * z * z)
    d2u = 6 * _SQRT_2_OVER_PI * _GELU_K * z
    sech2 = 1 - t * t
    return jnp.where(sech2 > 0, sech2 * du + 0.5 * z * sech2 * (d2u - 2 * t * du * du), 0)  # (A6''); 0 where t = ±1


def _softmax(z):
    e = jnp.exp(z - lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)  # (A8)


def _softmax_grad(z):
    raise ValueError(
        "softmax has no elementwise derivative (its derivative is a Jacobian); it is only allowed as "
        "output_activation together with loss='ce', where backprop uses the fused delta a - y."
    )


sigmoid = Activation("sigmoid", _sigmoid, _sigmoid_grad, grad2=_sigmoid_grad2)
tanh = Activation("tanh", _tanh, _tanh_grad, grad2=_tanh_grad2)
relu = Activation("relu", _relu, _relu_grad, kinks=(0.0,), grad2=_zero)
leaky_relu = Activation("leaky_relu", _leaky_relu, _leaky_relu_grad, kinks=(0.0,), grad2=_zero)
gelu = Activation("gelu", _gelu, _gelu_grad, grad2=_gelu_grad2)
gelu_tanh = Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_grad, grad2=_gelu_tanh_grad2)
identity = Activation("identity", _identity, _identity_grad, grad2=_zero)
softmax = Activation("softmax", _softmax, _softmax_grad, elementwise=False)

_REGISTRY: dict[str, Activation] = {
    a.name: a for a in (sigmoid, tanh, relu, leaky_relu, gelu, gelu_tanh, identity, softmax)
}
NAMES: tuple[str, ...] = tuple(_REGISTRY)
HIDDEN_NAMES: tuple[str, ...] = tuple(n for n, a in _REGISTRY.items() if a.elementwise)


def get(name: str | Activation) -> Activation:
    """Return the :class:`Activation` called ``name`` (an ``Activation`` is returned as it is).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
      TypeError: for anything that is neither a name nor an ``Activation``.
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name or an Activation, got {type(name).__name__}: {name!r}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(NAMES)}") from None
