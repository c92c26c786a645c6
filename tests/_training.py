"""The small training problem and the helpers that the tests of fit, fit_ensemble, the training loop,
the evaluation and the compiled programs share (``import _training``: pytest puts ``tests/`` on the path).

Compiled programs are cached on (shapes, dtype, optimizer compared by value, configuration, epochs per call),
and a compile costs seconds on a loaded machine, so the tests share one small problem
(:func:`make_problem`: N = 10 examples, a tanh MLP [3, 5, 1] regressed with MSE), the configuration of
:func:`run` and a few optimizers: most fits in the suite reuse a program another test compiled.
The fixtures ``problem32`` and ``sgd32`` (``conftest.py``) are this problem and its run, once a session.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import fit, fit_ensemble, init_mlp, optim

# The shared small problem: N examples, widths SIZES, a tanh MLP regressed with MSE.
N, SIZES, ACTIVATION, LOSS = 10, (3, 5, 1), "tanh", "mse"
BATCH, EPOCHS, SEED = 4, 3, 7

SGD = optim.sgd(0.1)
ADAM = optim.adam(1e-2)
DIVERGING = optim.sgd(1e3)  # on the shared problem: finite for a few epochs, then not

# Relative tolerance of a comparison to rounding: max |a - b| / max |b|, per leaf.
TOL = {jnp.float64: 1e-10, jnp.float32: 1e-5}

# Two models of the shared problem trained at once (fit_ensemble's learning_rates=): Adam at these rates.
LEARNING_RATES = (1e-2, 3e-2)


def make_problem(dtype=jnp.float32, n=N, sizes=SIZES, seed=0):
    """``(params, x, y)``: Xavier-initialized params and standard-normal data (create under x64 for float64)."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, sizes[0])), dtype)
    y = jnp.asarray(rng.standard_normal((n, sizes[-1])), dtype)
    return init_mlp(jax.random.key(seed), sizes, init="xavier", dtype=dtype), x, y


def run(params, x, y, **overrides):
    """``fit`` on the shared configuration (minibatch SGD, 3 epochs), with ``overrides``."""
    kw = dict(optimizer=SGD, loss=LOSS, activation=ACTIVATION, epochs=EPOCHS, batch_size=BATCH,
              key=jax.random.key(SEED))
    return fit(params, x, y, **{**kw, **overrides})


def model(stack, i):
    """Model ``i`` of a stack of K models (every leaf indexed on its leading axis)."""
    return jax.tree.map(lambda leaf: leaf[i], stack)


@functools.cache
def run_ensemble(dtype, learning_rates):
    """``(stack, trained, history)``: K = 2 models on the shared problem, configured as :func:`run`
    (cached: several tests compare against the same run)."""
    _, x, y = make_problem(dtype)
    stack = jax.vmap(lambda k: init_mlp(k, SIZES, init="xavier", dtype=dtype))(jax.random.split(jax.random.key(1), 2))
    trained, history = fit_ensemble(stack, x, y, learning_rates=learning_rates, loss=LOSS, activation=ACTIVATION,
                                    epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(SEED))
    return stack, trained, history


class Unhashable:
    """``inner``'s init and update in an object that cannot be a static ``jit`` argument."""

    __hash__ = None

    def __init__(self, inner):
        self.init, self.update = inner.init, inner.update


class Interrupt:
    """A progress callback that records each call's ``(epoch, metrics)`` and raises KeyboardInterrupt once,
    after epoch ``at`` (and its checkpoint): once, since a stray one would stop pytest itself."""

    def __init__(self, at=None):
        self.at, self.calls = at, []

    @property
    def epochs(self):
        return [epoch for epoch, _ in self.calls]

    def __call__(self, epoch, metrics):
        self.calls.append((epoch, dict(metrics)))
        if epoch == self.at and self.epochs.count(epoch) == 1:
            raise KeyboardInterrupt


class Compilations:
    """Counts the XLA compilations started inside the ``with`` block (jax's backend-compile event)."""

    def __enter__(self):
        from jax import monitoring

        self.n = 0
        monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **_):
        self.n += event.endswith("backend_compile_duration")

    def __exit__(self, *exc):
        from jax import monitoring

        monitoring.unregister_event_duration_listener(self._listen)
