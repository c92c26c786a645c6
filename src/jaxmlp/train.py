"""``fit``: training one network, whole epochs compiled into one XLA program.

The step (T1)-(T2), the epoch, its metrics and the host loop (checkpoints, resume, callback, history) are
:mod:`jaxmlp.loop`'s. The steps of an epoch, and the epochs between two host round-trips (all of them
unless a checkpoint or a progress callback asks for fewer), run inside one compiled program (``lax.scan``
over epochs of ``lax.scan`` over steps), so the small MLPs of the lesson are not dispatch-bound. The
program is ``jit``'s, cached on the shapes, the static configuration and the optimizer (compared by
value: a second ``fit`` with an equal, freshly built jaxmlp optimizer does not recompile).

Long jobs lose nothing. A checkpoint of the training state can be written atomically every
``checkpoint_every`` epochs, and a rerun with the same ``checkpoint_dir`` resumes from the latest one,
ending bit-identical to an uninterrupted run. When the loss or the parameters stop being finite,
:func:`fit` raises :class:`TrainingDiverged`, which carries the last finite parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from jaxmlp import checks, evaluation, loop
from jaxmlp.evaluation import evaluate

__all__ = ["TrainingDiverged", "evaluate", "fit"]


class TrainingDiverged(FloatingPointError):
    """The loss or the parameters became non-finite. ``.params`` holds the last finite parameters,
    ``.epoch`` the (1-based) epoch that diverged and ``.history`` the metrics up to it."""

    def __init__(self, message, params, epoch, history):
        super().__init__(message)
        self.params, self.epoch, self.history = params, epoch, history


def _epochs(carry, x, y, *, optimizer, config, n_epochs):
    """``n_epochs`` epochs of (T1)-(T2) of one network: the program :func:`fit` compiles."""
    if carry.opt_state is None:  # a fresh run: the optimizer state is made here (one program, not two)
        carry = carry._replace(opt_state=optimizer.init(carry.params))
    step_fn = loop.loss_grads_output(config, weight_grad=loop.transposed_first)

    def epoch(params, opt_state, key):
        params, opt_state, key, step_metrics = loop.train_epoch(params, opt_state, key, x, y, optimizer=optimizer,
                                                                config=config, step_fn=step_fn)
        metrics = loop.epoch_metrics(params, x, y, step_metrics, config)
        return params, opt_state, key, metrics, jnp.isfinite(metrics["loss"]) & loop.all_finite(params)

    return loop.scan_epochs(epoch, carry, n_epochs)


def _init(params, *, optimizer):
    return optimizer.init(params)


_compiled_epochs = jax.jit(_epochs, static_argnames=("optimizer", "config", "n_epochs"))
_compiled_init = jax.jit(_init, static_argnames="optimizer")


def fit(params, x, y, *, optimizer, loss, activation="relu", output_activation=None, epochs=1,
        batch_size=None, key=None, grad="manual", checkpoint_dir=None, checkpoint_every=None,
        epochs_per_call=None, callback=None, mesh=None, compute_dtype=None, metrics="full"):
    """Train ``params`` on ``(x, y)``; return ``(params, history)``.

    Args:
      params: a tuple of ``Layer``.
      x, y: the training data, ``x`` of shape ``(N, n_in)``, ``y`` as :func:`jaxmlp.loss_fn` expects.
      optimizer: a GradientTransformation (``jaxmlp.optim`` or optax).
      loss, activation, output_activation: as for :func:`jaxmlp.loss_fn`.
      epochs: the total number of epochs (a resumed run continues up to it).
      batch_size: ``None`` for full-batch GD, else minibatches of this size; the last partial batch
        of each epoch's permutation is dropped.
      key: the ``jax.random`` key for the permutations (default ``jax.random.key(0)``). The same key
        gives a bit-identical result.
      grad: ``"manual"`` (:func:`jaxmlp.backward`'s equations) or ``"autodiff"`` (``jax.grad(loss_fn)``).
      checkpoint_dir, checkpoint_every: write an atomic checkpoint every ``checkpoint_every`` epochs
        and after the last one, and resume from the latest one found in ``checkpoint_dir``. A checkpoint
        whose state does not fit (another architecture, dtype, or kind of optimizer state: Adam's
        moments for SGD's trace) is refused, saying what differs. Hyperparameters (learning rate, batch
        size, activation) are not recorded: a rerun with other ones goes on from the checkpoint with them.
      epochs_per_call: epochs per compiled call (default: all of them); calls also end at every
        multiple of ``checkpoint_every``.
      callback: ``callback(epoch, metrics)`` after each compiled call, with that call's last metrics.
      mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis (data parallelism): params and optimizer
        state are replicated, every minibatch is split over the axis, and XLA inserts the all-reduce
        of the gradients (the batch sums of (B3)-(B4) included). ``batch_size`` (or N for full batch)
        must be divisible by the axis size. Equals the single-device run to rounding.
      compute_dtype: e.g. ``jnp.bfloat16`` or ``jnp.float16`` (mixed precision): the matmuls of the
        forward and backward passes run in it, while params, optimizer state and the loss stay in the
        parameters' dtype (float32 master weights).
      metrics: ``"full"`` (the whole training set after each epoch) or ``"minibatch"`` (the running mean
        over the epoch's steps, at no extra cost); see :mod:`jaxmlp.loop`. Either way, an epoch whose
        metrics or parameters are not finite counts as diverged.

    Returns:
      ``(params, history)``, ``history["loss"]`` (and ``["accuracy"]`` for classification) one entry per
      epoch, ``history["epoch"]`` their 1-based epoch numbers: 1..``epochs``, a resumed run's included
      (the checkpoints hold the history).

    Raises:
      TrainingDiverged: a ``FloatingPointError`` whose ``.params`` are the parameters after the last
        epoch whose metrics and parameters were finite (with ``metrics="minibatch"`` their own loss
        may already overflow).
    """
    x, y = checks.as_array(x), checks.as_array(y)
    loop.check_run(params, x, y, loss, activation, output_activation, epochs, batch_size, grad, metrics)
    checks.finite_params(params)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be a GradientTransformation with init and update (jaxmlp.optim.adam(...) "
                        f"or an optax one), got {type(optimizer).__name__}: {optimizer!r}")
    loop.check_loop_options(checkpoint_dir, checkpoint_every, epochs_per_call)
    mesh = None if mesh is None else loop.auto_axes(mesh)
    config = loop.Config(loss, activation, output_activation, grad, batch_size, compute_dtype, mesh,
                         evaluation.chunk_size(params), metrics)
    key = jax.random.key(0) if key is None else checks.random_key(key)
    if mesh is not None:
        loop.check_axis(mesh, "data", batch_size or jnp.shape(x)[0], "batch_size (or N, for full batch)")
        params, x, y = jax.device_put((params, x, y), NamedSharding(mesh, PartitionSpec()))
    program = loop.program(_epochs, _compiled_epochs, optimizer=optimizer, config=config)
    init = loop.program(_init, _compiled_init, optimizer=optimizer)
    result = loop.run(lambda carry, n_epochs: program(carry, x, y, n_epochs=n_epochs), init, params, key,
                      jnp.bool_(True), epochs=epochs, checkpoint_dir=checkpoint_dir,
                      checkpoint_every=checkpoint_every, epochs_per_call=epochs_per_call, callback=callback,
                      stop_on_divergence=True)
    if result.diverged_epoch is not None:
        e, history = result.diverged_epoch, result.history
        raise TrainingDiverged(
            f"training diverged in epoch {e}: the loss or the parameters became non-finite (loss "
            f"{history['loss'][-1]}); .params holds the parameters after epoch {e - 1} (the last finite ones)",
            result.carry.good, e, history)
    return result.carry.params, result.history
