"""Optimizers and gradients shared by ``test_optim.py``, ``test_optim_check.py`` and ``test_perf.py``
(``import _optimizers``: pytest puts ``tests/`` on the path).

:data:`OPTIMIZERS` is the table of jaxmlp optimizers held to optax's conventions (and to one compilation for
repeated jitted steps): each row is one optimizer as ``(id, factory, kwargs)``, so that
``optax.inject_hyperparams(factory)`` can rebuild it; the step sizes are ones at which each converges on a
parabola and on Rosenbrock's function in 20000 steps. :func:`make_params` and :func:`make_grads` are the
parameters and the sequences of gradients that trajectories are compared on.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp import optim
from jaxmlp.types import Layer

# Decay the weights, not the biases: a mask for make_params' two layers (a tuple of bools is hashable).
WEIGHTS_ONLY = (Layer(W=True, b=False), Layer(W=True, b=False))

OPTIMIZERS = [
    ("gd", optim.gd, dict(learning_rate=1e-3)),
    ("momentum", optim.sgd, dict(learning_rate=1e-3, momentum=0.9)),
    # At 1e-3, Nesterov (optax's too) does not converge on complex Rosenbrock: the step is halved.
    ("nesterov", optim.sgd, dict(learning_rate=5e-4, momentum=0.9, nesterov=True)),
    ("adam", optim.adam, dict(learning_rate=3e-2)),
    ("nadam", optim.adam, dict(learning_rate=1e-2, nesterov=True)),
    ("adamw", optim.adamw, dict(learning_rate=3e-2)),
    ("nadamw", optim.adamw, dict(learning_rate=1e-2, weight_decay=1e-3, nesterov=True)),
    ("momentum-schedule", optim.sgd, dict(learning_rate=optax.exponential_decay(2e-3, 5000, 0.5), momentum=0.9)),
    ("adam-schedule", optim.adam, dict(learning_rate=optax.cosine_decay_schedule(1e-1, 20000, alpha=0.01))),
]
IDS = [o[0] for o in OPTIMIZERS]
BY_ID = {o[0]: o for o in OPTIMIZERS}


def build(opt_id):
    _, factory, kwargs = BY_ID[opt_id]
    return factory(**kwargs)


def small_problem(dtype=jnp.float32):
    """``(params, grads)``: two small arrays each, for one step of an optimizer."""
    params = (jnp.array([[1.0, -2.0], [0.5, 3.0]], dtype), jnp.array([0.1, -0.2], dtype))
    grads = (jnp.array([[0.3, -0.1], [2.0, 0.7]], dtype), jnp.array([-1.0, 0.25], dtype))
    return params, grads


def make_params(dtype, sizes=(3, 5, 2), seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        Layer(W=jnp.asarray(rng.standard_normal((n_out, n_in)), dtype),
              b=jnp.asarray(rng.standard_normal(n_out), dtype))
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    )


def make_grads(params, steps, seed=1):
    """Deterministic random gradients, a leading step axis on each leaf, magnitudes from 1e-3 to 10."""
    rng = np.random.default_rng(seed)
    scale = 10 ** rng.uniform(-3, 1, steps)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal((steps,) + p.shape) * scale.reshape((steps,) + (1,) * p.ndim),
                              p.dtype),
        params)



def complex_problem(dtype, steps):
    """Complex params and gradients, real and imaginary parts from two seeds."""
    real = jnp.float64 if dtype == jnp.complex128 else jnp.float32
    re, im = make_params(real), make_params(real, seed=5)
    params = jax.tree.map(lambda a, b: (a + 1j * b).astype(dtype), re, im)
    grads = jax.tree.map(lambda a, b: (a + 1j * b).astype(dtype), make_grads(re, steps), make_grads(re, steps, seed=7))
    return params, grads
