"""Training on top of everything else: whole epochs compiled into one XLA program.

One optimization step, for a minibatch (X_b, Y_b)::

    (L, g) = backward(θ, X_b, Y_b)            (or jax.value_and_grad(loss_fn) with grad="autodiff")   (T1)
    (u, s) = optimizer.update(g, s, θ);  θ ← θ + u                                                   (T2)

An epoch draws a fresh permutation of the N training examples from the epoch's key, cuts it into
⌊N / batch_size⌋ minibatches and runs (T1)-(T2) on each; the **last partial batch is dropped** (shapes
stay static, and over epochs every example is still seen, since each permutation differs).
``batch_size=None`` is full-batch gradient descent: one step per epoch on all N examples.

The steps of an epoch, and the epochs between two host round-trips (all of them unless a checkpoint
or a progress callback asks for fewer), run inside one compiled program (``lax.scan`` over epochs of
``lax.scan`` over steps), so the small MLPs of the lesson are not dispatch-bound. The compiled program
is cached on the shapes and the static configuration: a second :func:`fit` with the same shapes,
configuration and optimizer does not recompile.

The permutation is :func:`jaxmlp.shuffle.permutation` (a keyed Feistel bijection, no sort): the sort
behind ``jax.random.permutation`` cost more than the epoch's steps on the lesson's small MLPs.

``history["loss"]`` (and, for classification, ``["accuracy"]``) has one entry per epoch, computed as
``metrics`` says:

- ``"full"`` (default): on the whole training set with the epoch's final parameters. It costs one
  forward pass over the training set per epoch, a third of the epoch's FLOPs. On one device it runs
  in chunks of at least ``EVAL_MIN_CHUNK`` examples whose activations A[l] (and as many Z[l]), over
  all models of an ensemble, fit in ``EVAL_BUDGET`` numbers, so its memory does not grow with N (one
  chunk when N is small); with a ``mesh`` each device evaluates its N / devices examples at once.
- ``"minibatch"``: the mean over the epoch's minibatches of each one's loss and accuracy, from the
  forward pass of its step (T1), at the parameters before that step: the running average that Keras
  and most training loops report. It costs nothing extra; it lags the parameters by half an epoch, and
  so does the divergence check: parameters that are finite but already overflow the forward pass are
  only caught by the next epoch's first step (or not at all, after the last epoch).

Either way, an epoch whose metrics or parameters are not finite counts as diverged.

Long jobs lose nothing. A checkpoint of (params, optimizer state, key, epoch, history) can be written
atomically every ``checkpoint_every`` epochs and a rerun with the same ``checkpoint_dir`` resumes from
the latest one, ending bit-identical to an uninterrupted run. When the loss or the parameters stop
being finite, :func:`fit` raises :class:`TrainingDiverged`, which carries the last finite parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmlp import backprop, checkpoint, checks, mlp, optim, programs, shuffle


EVAL_BUDGET = 1 << 22  # activations (numbers) of one chunk of the per-epoch evaluation, all models together
EVAL_MIN_CHUNK = 256  # ... but never fewer examples per chunk than this (a K = 4096 ensemble would get 8)


class TrainingDiverged(FloatingPointError):
    """The loss or the parameters became non-finite. ``.params`` holds the last finite parameters,
    ``.epoch`` the (1-based) epoch that diverged and ``.history`` the metrics up to it."""

    def __init__(self, message, params, epoch, history):
        super().__init__(message)
        self.params, self.epoch, self.history = params, epoch, history


@dataclass(frozen=True)
class _Config:
    """The static part of a training run: everything that changes the compiled program."""

    loss: str
    activation: Any
    output_activation: Any
    grad: str
    batch_size: int | None
    compute_dtype: Any = None
    mesh: Any = None  # a jax.sharding.Mesh with a "data" axis: minibatches are sharded over it
    eval_chunk: int = 1 << 30  # examples per chunk of the per-epoch evaluation (see _eval_chunk)
    metrics: str = "full"  # "full": the whole training set after each epoch; "minibatch": the steps' running mean


METRICS = ("full", "minibatch")


def _loss_grads_output(c: _Config) -> Callable:
    """(T1) for a minibatch: ``(params, x, y) -> (loss, grads, A[L], Y)``, the output kept for metrics."""
    kw = dict(activation=c.activation, output_activation=c.output_activation, loss=c.loss,
              compute_dtype=c.compute_dtype)
    if c.grad == "manual":
        def manual(params, x, y):
            value, grads, cache, Y = backprop.backward_with_cache(params, x, y, **kw)
            return value, grads, cache.a[-1], Y

        return manual

    loss_and_output = jax.value_and_grad(partial(mlp.loss_and_output, **kw), has_aux=True)

    def autodiff(params, x, y):
        (value, (A_L, Y)), grads = loss_and_output(params, x, y)
        return value, grads, A_L, Y

    return autodiff


def _metrics(value, A_L, Y, loss: str) -> dict:
    """The loss ``value`` and, for ``bce``/``ce``, the accuracy of the outputs ``A_L`` against ``Y``."""
    metrics = {"loss": value}
    if loss == "bce":
        metrics["accuracy"] = jnp.mean(((A_L > 0.5) == (Y > 0.5)).astype(jnp.float32))
    elif loss == "ce":
        labels = Y if jnp.issubdtype(Y.dtype, jnp.integer) else jnp.argmax(Y, axis=-1)
        metrics["accuracy"] = jnp.mean((jnp.argmax(A_L, axis=-1) == labels).astype(jnp.float32))
    return metrics


def evaluate(params, x, y, *, loss, activation="relu", output_activation=None):
    """The loss and, for ``bce``/``ce``, the accuracy of ``params`` on ``(x, y)``, as a dict of scalars.

    Args:
      params: a tuple of ``Layer(W, b)``.
      x: inputs ``(N, n_in)`` (or one example ``(n_in,)``).
      y: targets as :func:`jaxmlp.loss_fn` takes them: ``(N, n_out)`` for mse and bce, integer labels
        ``(N,)`` or one-hot ``(N, C)`` for ce.
      loss: ``"mse"``, ``"bce"`` or ``"ce"`` (required: it decides the metrics).
      activation, output_activation: as for :func:`jaxmlp.loss_fn` (``None``: the loss's natural output).

    Returns:
      ``{"loss": L}`` as (L1)-(L5) average it, plus ``"accuracy"`` for bce (output > 0.5 against y > 0.5,
      over every output unit) and ce (argmax of the output against the label), each a 0-d array.
      Works under ``jit``; on a NaN input the loss is NaN (nothing hides it).
    """
    value, (A_L, Y) = mlp.loss_and_output(params, x, y, activation, output_activation, loss)
    return _metrics(value, A_L, Y, loss)


def _evaluate_in_chunks(params, x, y, chunk: int, **kw):
    """:func:`evaluate` on the whole set, ``chunk`` examples at a time (a ``lax.map``), so that its
    temporary memory stays that of one chunk (K × chunk × width for an ensemble, not K × N × width).
    The means are recombined weighted by example count, which is exact: every metric is a mean over
    examples of a per-example quantity."""
    N = x.shape[0]
    n_full = (N // chunk) * chunk
    if n_full == 0:
        return evaluate(params, x, y, **kw)

    def one_chunk(start):  # a dynamic slice per chunk: x[:n_full] as one array would copy the data set
        return evaluate(params, *(jax.lax.dynamic_slice_in_dim(t, start, chunk) for t in (x, y)), **kw)

    per_chunk = jax.lax.map(one_chunk, jnp.arange(0, n_full, chunk))
    total = jax.tree.map(lambda m: jnp.sum(m) * chunk, per_chunk)
    if n_full < N:
        rest = evaluate(params, x[n_full:], y[n_full:], **kw)
        total = jax.tree.map(lambda t, r: t + r * (N - n_full), total, rest)
    return jax.tree.map(lambda t: t / N, total)


def _eval_chunk(params, n_models: int = 1) -> int:
    """Examples per evaluation chunk: ``EVAL_BUDGET`` over the activations of one example (all layers, all
    models), and at least ``EVAL_MIN_CHUNK``."""
    return max(EVAL_MIN_CHUNK, EVAL_BUDGET // (n_models * _eval_width(params)))


def _eval_width(params) -> int:
    """The activations of one example, all layers of one model: n_0 + n_1 + ... + n_L."""
    return params[0].W.shape[-1] + sum(layer.W.shape[-2] for layer in params)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _train_epoch(params, opt_state, key, x, y, *, optimizer, config: _Config, loss_grads_output=None):
    """One epoch of (T1)-(T2): a permutation drawn from ``key``, then a ``lax.scan`` over its minibatches.

    Returns ``(params, opt_state, key, step_metrics)``, ``step_metrics`` the steps' own metrics (one entry
    per step) with ``metrics="minibatch"``, else None. :func:`jaxmlp.fit_ensemble` ``vmap``-s this over models,
    with its own ``loss_grads_output`` (T1) (default: :func:`_loss_grads_output` of ``config``).
    """
    loss_grads_output = loss_grads_output or _loss_grads_output(config)
    N, B = x.shape[0], config.batch_size

    def minibatch(rows):
        """The examples ``rows`` (all of them for ``None``), gathered here, one minibatch at a time, so that
        no permuted copy of the whole training set is ever made."""
        batch = (x, y) if rows is None else (x[rows], y[rows])
        if config.mesh is not None:  # split every minibatch over the "data" axis; XLA adds the all-reduce
            spec = NamedSharding(config.mesh, PartitionSpec("data"))
            batch = tuple(jax.lax.with_sharding_constraint(t, spec) for t in batch)
        return batch

    def step(carry, rows):
        params, opt_state = carry
        value, grads, A_L, Y = loss_grads_output(params, *minibatch(rows))  # (T1)
        updates, opt_state = optimizer.update(grads, opt_state, params)  # (T2)
        metrics = _metrics(value, A_L, Y, config.loss) if config.metrics == "minibatch" else None
        return (optim.apply_updates(params, updates), opt_state), metrics

    key, k_perm = jax.random.split(key)
    if config.batch_size is None:  # one full-batch step
        (params, opt_state), step_metrics = jax.lax.scan(
            lambda c, _: step(c, None), (params, opt_state), None, length=1)
    else:
        rows = shuffle.permutation(k_perm, N)[: (N // B) * B].reshape(N // B, B)  # partial batch dropped
        (params, opt_state), step_metrics = jax.lax.scan(step, (params, opt_state), rows)
    return params, opt_state, key, step_metrics


def _epoch_metrics(params, x, y, step_metrics, config: _Config) -> dict:
    """The epoch's metrics as ``config.metrics`` says: the steps' mean, or the whole training set."""
    kw = dict(loss=config.loss, activation=config.activation, output_activation=config.output_activation)
    if config.metrics == "minibatch":  # equal batch sizes: the mean of the means is the mean over examples
        return jax.tree.map(lambda m: jnp.mean(m, axis=-1), step_metrics)
    if config.mesh is not None:  # the evaluation too is split over the "data" axis, not replicated
        split = NamedSharding(config.mesh, PartitionSpec("data"))
        return evaluate(params, *(jax.lax.with_sharding_constraint(t, split) for t in (x, y)), **kw)
    return _evaluate_in_chunks(params, x, y, config.eval_chunk, **kw)


def _epochs(params, opt_state, key, x, y, *, optimizer, config: _Config, n_epochs: int):
    """``n_epochs`` epochs of (T1)-(T2) as one ``lax.scan``; also tracks the last finite parameters: once an
    epoch's metrics or parameters are not finite, ``good`` stays at the parameters before it.
    ``opt_state=None``: a fresh run, whose optimizer state is made here (one compiled program, not two)."""
    if opt_state is None:
        opt_state = optimizer.init(params)

    def epoch(carry, _):
        params, opt_state, key, good, ok = carry
        params, opt_state, key, step_metrics = _train_epoch(params, opt_state, key, x, y, optimizer=optimizer,
                                                            config=config)
        metrics = _epoch_metrics(params, x, y, step_metrics, config)
        finite = jnp.isfinite(metrics["loss"]) & _all_finite(params)
        ok = ok & finite
        good = jax.tree.map(lambda new, old: jnp.where(ok, new, old), params, good)
        return (params, opt_state, key, good, ok), (metrics, finite)

    carry = (params, opt_state, key, params, jnp.bool_(True))
    (params, opt_state, key, good, _), (metrics, finite) = jax.lax.scan(epoch, carry, None, length=n_epochs)
    return params, opt_state, key, good, metrics, finite


_compiled_epochs = jax.jit(_epochs, static_argnames=("optimizer", "config", "n_epochs"))


def _optimizer_init(params, *, optimizer):
    return optimizer.init(params)


_compiled_init = jax.jit(_optimizer_init, static_argnames="optimizer")


def _hashable(optimizer) -> bool:
    """Whether the compiled programs can be cached on ``optimizer`` (a static argument must hash)."""
    try:
        hash(optimizer)
    except TypeError:
        return False
    return True


def _init_state(optimizer, params):
    """``optimizer.init(params)``, compiled once per optimizer (eager, it cost 1.4 ms on [784, 512, 512, 10]).
    Like the training program, the compiled init is cached on the optimizer object: jaxmlp's optimizers
    are memoized, while a fresh optax optimizer per call compiles both anew."""
    if not _hashable(optimizer):
        return optimizer.init(params)
    return programs.call(_optimizer_init, dict(optimizer=optimizer), params,
                         fallback=partial(_compiled_init, optimizer=optimizer))


def _run_epochs(params, opt_state, key, x, y, *, optimizer, config, n_epochs):
    """Call the compiled program: from jaxmlp's store of programs when it is on (no tracing on a hit), else
    the cached ``jit``; an unhashable optimizer gets a fresh (uncached) one."""
    static = dict(optimizer=optimizer, config=config, n_epochs=n_epochs)
    jitted = (partial(_compiled_epochs, **static) if _hashable(optimizer)
              else jax.jit(partial(_epochs, **static)))
    return programs.call(_epochs, static, params, opt_state, key, x, y, fallback=jitted)


def _positive_or_none(name, value):
    if value is not None and (not checks.is_int(value) or value < 1):
        raise ValueError(f"{name} must be None or a positive int, got {name}={value!r}")


def _check_fit_options(optimizer, checkpoint_dir, checkpoint_every, epochs_per_call):
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be a GradientTransformation with init and update (jaxmlp.optim.adam(...) "
                        f"or an optax one), got {type(optimizer).__name__}: {optimizer!r}")
    _check_loop_options(checkpoint_dir, checkpoint_every, epochs_per_call)


def _check_loop_options(checkpoint_dir, checkpoint_every, epochs_per_call):
    _positive_or_none("checkpoint_every", checkpoint_every)
    _positive_or_none("epochs_per_call", epochs_per_call)
    if checkpoint_dir is not None and checkpoint_every is None:
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} needs checkpoint_every (epochs between "
                         f"checkpoints); without it nothing would be saved")


def _check_run(params, x, y, loss, activation, output_activation, epochs, batch_size, grad, metrics):
    if metrics not in METRICS:
        raise ValueError(f"metrics must be one of {METRICS}, got metrics={metrics!r}")
    mlp.resolve(activation, output_activation, loss)
    mlp.check_target(params, x, y, loss)
    if jnp.ndim(x) != 2:
        raise ValueError(f"fit needs a batch x of shape (N, n_in), got shape {jnp.shape(x)}")
    checks.finite_values("x", x)  # on the host: a NaN in the data is bad input, not divergence
    checks.finite_values("y", y)
    if loss == "ce":
        checks.labels_in_range(y, checks.params_chain(params)[-1])
    if grad not in ("manual", "autodiff"):
        raise ValueError(f"grad must be 'manual' or 'autodiff', got {grad!r}")
    if not checks.is_int(epochs) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    N = jnp.shape(x)[0]
    if batch_size is not None and (not checks.is_int(batch_size) or not 1 <= batch_size <= N):
        raise ValueError(f"batch_size must be None (full batch) or an int in [1, N = {N}], got {batch_size!r}")


def _auto_axes(mesh):
    """``mesh`` with every axis ``Auto``: training shards with sharding constraints, which need Auto axes
    (``jax.make_mesh`` makes ``Explicit`` axes by default in recent jax)."""
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None or mesh.are_all_axes_auto:
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(axis_type.Auto,) * len(mesh.axis_names))


def _check_axis(mesh, axis, n, what):
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh needs a {axis!r} axis, got axes {mesh.axis_names}")
    if n % mesh.shape[axis]:
        raise ValueError(f"{what} = {n} must be divisible by the mesh's {axis!r} axis of size {mesh.shape[axis]}")


STATE_NAMES = ("params", "optimizer state", "key")  # the parts of fit's checkpoints, for mismatch messages


def _history(past: dict, chunks, start: int = 0) -> dict:
    """The metrics of epochs 1..E: ``past`` (from the checkpoint of epoch ``start``) followed by this call's
    ``chunks``. A checkpoint written without its history (by an older jaxmlp) gives epochs ``start + 1``.. only."""
    parts = ([past] if past else []) + list(chunks)
    out = ({k: np.concatenate([np.asarray(c[k]) for c in parts]) for k in parts[0]} if parts
           else {"loss": np.zeros((0,))})
    first = start + 1 - (len(past["loss"]) if past else 0)
    out["epoch"] = np.arange(first, first + len(out["loss"]))
    return out


def _saved_epochs(checkpoint_dir) -> list[int]:
    """The epochs of the checkpoints in ``checkpoint_dir``, oldest first; [] for None."""
    return [] if checkpoint_dir is None else checkpoint.steps(checkpoint_dir)


def _resume(checkpoint_dir, saved, state, names, epochs: int):
    """``(state, start, past)``: the latest checkpoint in ``checkpoint_dir`` (whose epochs are ``saved``, from
    :func:`_saved_epochs`) read into ``state``'s structure (NumPy arrays, which the compiled program places
    as it does the run's own), its epoch and the history it holds; ``(state, 0, {})`` when there is none.
    A checkpoint past ``epochs`` is a ValueError: the run would return more epochs than it asks for."""
    if not saved:
        return state, 0, {}
    start = saved[-1]
    if start > epochs:
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} holds a checkpoint of epoch {start}, past "
                         f"epochs={epochs}: pass epochs >= {start} to go on from it, or clear the directory")
    try:
        loaded = checkpoint.load(checkpoint_dir, start, state, names=names)
    except ValueError as e:
        raise ValueError(
            f"checkpoint_dir={str(checkpoint_dir)!r} holds the checkpoint of epoch {start} of another run, which "
            f"this one cannot resume: {e}. To start this run afresh, clear {str(checkpoint_dir)!r} (or pass "
            f"another checkpoint_dir)") from None
    return loaded, start, checkpoint.load_history(checkpoint_dir, start)  # host arrays: jit places them


def _calls(start: int, epochs: int, per_call, checkpoint_every):
    """``(first epoch, epochs)`` of each compiled call: ``per_call`` epochs (default: all that are left),
    cut at every multiple of ``checkpoint_every``, where a checkpoint is written."""
    epoch = start
    while epoch < epochs:
        stop = min(epochs, epoch + (per_call or epochs))
        if checkpoint_every:
            stop = min(stop, (epoch // checkpoint_every + 1) * checkpoint_every)
        yield epoch, stop - epoch
        epoch = stop


def _checkpoint_due(checkpoint_dir, checkpoint_every, epoch: int, epochs: int) -> bool:
    """Every ``checkpoint_every`` epochs, and after the last epoch (so a rerun of a finished run has nothing left)."""
    return checkpoint_dir is not None and (epoch % checkpoint_every == 0 or epoch == epochs)


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
      grad: ``"manual"`` (:func:`jaxmlp.backward`) or ``"autodiff"`` (``jax.grad(loss_fn)``).
      checkpoint_dir, checkpoint_every: write an atomic checkpoint every ``checkpoint_every`` epochs
        and after the last one, and resume from the latest one found in ``checkpoint_dir``. A checkpoint
        of another run (another optimizer, architecture or dtype) is refused, saying what differs.
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
        over the epoch's steps, at no extra cost); see the module docstring.

    Returns:
      ``(params, history)``, ``history["loss"]`` (and ``["accuracy"]`` for classification) one entry per
      epoch, ``history["epoch"]`` their 1-based epoch numbers: 1..``epochs``, a resumed run's included
      (the checkpoints hold the history).

    Raises:
      TrainingDiverged: a ``FloatingPointError`` whose ``.params`` are the parameters after the last
        epoch whose metrics and parameters were finite (with ``metrics="minibatch"`` their own loss
        may already overflow; see the module docstring).
    """
    _check_run(params, x, y, loss, activation, output_activation, epochs, batch_size, grad, metrics)
    _check_fit_options(optimizer, checkpoint_dir, checkpoint_every, epochs_per_call)
    mesh = None if mesh is None else _auto_axes(mesh)
    config = _Config(loss, activation, output_activation, grad, batch_size, compute_dtype, mesh, _eval_chunk(params),
                     metrics)
    key = jax.random.key(0) if key is None else key
    if mesh is not None:
        _check_axis(mesh, "data", batch_size or jnp.shape(x)[0], "batch_size (or N, for full batch)")
        params, x, y = jax.device_put((params, x, y), NamedSharding(mesh, PartitionSpec()))
    # One compiled call and nothing to resume: the program makes the optimizer state itself (opt_state None).
    saved = _saved_epochs(checkpoint_dir)
    fresh = len(list(_calls(0, epochs, epochs_per_call, checkpoint_every))) == 1 and not saved
    state = (params, None if fresh else _init_state(optimizer, params), jax.random.key_data(key))
    (params, opt_state, key_data), start, past = _resume(checkpoint_dir, saved, state, STATE_NAMES, epochs)
    key = jax.random.wrap_key_data(jnp.asarray(key_data), impl=jax.random.key_impl(key))
    chunks = []
    for epoch, n in _calls(start, epochs, epochs_per_call, checkpoint_every):
        new_params, opt_state, key, good, metrics, finite = _run_epochs(
            params, opt_state, key, x, y, optimizer=optimizer, config=config, n_epochs=n)
        finite = np.asarray(finite)
        if not finite.all():
            bad = int(np.argmin(finite))
            chunks.append({k: np.asarray(v)[: bad + 1] for k, v in metrics.items()})
            history = _history(past, chunks, start)
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + bad + 1}: the loss or the parameters became non-finite "
                f"(loss {history['loss'][-1]}); .params holds the parameters after epoch {epoch + bad} "
                f"(the last finite ones)", good, epoch + bad + 1, history)
        params, epoch = new_params, epoch + n
        chunks.append(metrics)
        if _checkpoint_due(checkpoint_dir, checkpoint_every, epoch, epochs):
            checkpoint.save(checkpoint_dir, epoch, (params, opt_state, jax.random.key_data(key)),
                            history={k: v for k, v in _history(past, chunks, start).items() if k != "epoch"})
        if callback is not None:
            callback(epoch, {k: float(np.asarray(v)[-1]) for k, v in metrics.items()})
    return params, _history(past, chunks, start)

