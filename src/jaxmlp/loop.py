"""The training loop, written once for :func:`jaxmlp.fit` and :func:`jaxmlp.fit_ensemble`.

One optimization step, for a minibatch (X_b, Y_b)::

    (L, g) = backward(θ, X_b, Y_b)            (or jax.value_and_grad(loss_fn) with grad="autodiff")   (T1)
    (u, s) = optimizer.update(g, s, θ);  θ ← θ + u                                                   (T2)

An epoch (:func:`train_epoch`) draws a permutation of the N examples from the epoch's key
(:func:`jaxmlp.shuffle.permutation`), cuts it into ⌊N / batch_size⌋ minibatches (the **last partial batch
is dropped**: shapes stay static, and over epochs every example is still seen) and runs (T1)-(T2) on each
in a ``lax.scan``; ``batch_size=None`` is one full-batch step. Its metrics (:func:`epoch_metrics`) are the
whole training set's after the epoch (``metrics="full"``, in chunks of bounded memory), or the running
mean of the steps' own (``"minibatch"``: no extra pass, but half an epoch behind).

On the device, :func:`scan_epochs` runs many epochs as one ``lax.scan`` and carries, beside the state, the
**last finite parameters** ``good`` and the flags ``ok`` ("every epoch so far finite"): once an epoch's
metrics or parameters stop being finite, ``good`` stays at the parameters before it. ``ok`` is a scalar
for one model, shape (K,) for an ensemble, and everything here works on either.

On the host, :func:`run` cuts the epochs into compiled calls, resumes from the latest checkpoint, writes
atomic checkpoints of the :class:`Carry` with the history so far, calls the callback, and stops at the
first divergence when asked to (``fit``) or trains on (``fit_ensemble``, where one model's divergence
does not stop the others).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmlp import backprop, checkpoint, checks, evaluation, mlp, optim, shuffle

METRICS = ("full", "minibatch")
STATE_NAMES = ("params", "optimizer state", "key", "last finite params", "finite-so-far flags")


@dataclass(frozen=True)
class Config:
    """The static part of a training run: everything that changes the compiled program."""

    loss: str
    activation: Any
    output_activation: Any
    grad: str
    batch_size: int | None
    compute_dtype: Any = None
    mesh: Any = None  # a jax.sharding.Mesh with a "data" axis: minibatches are sharded over it
    eval_chunk: int = 1 << 30  # examples per chunk of the per-epoch evaluation
    metrics: str = "full"


class Carry(NamedTuple):
    """What one compiled call hands the next, and what a checkpoint holds (:data:`STATE_NAMES`)."""

    params: Any
    opt_state: Any  # None: a fresh run, whose optimizer state the program makes itself
    key: Any
    good: Any  # the last finite parameters
    ok: Any  # every epoch so far finite: () for one model, (K,) for an ensemble


# ----------------------------------------------------------------------------------------- on the device

def transposed_first(l, delta, A_prev):
    """(B3) as Δ[l]ᵀ written to memory first, then an "NN" product: the layout ``fit``'s scan runs faster with
    on CPU for small layers, where XLA otherwise folds the transpose into a product that contracts the major
    axis of both operands (``benchmarks/README.md``, "Layout choices"). Large layers (A[l-1] of at least
    ``backprop.IN_ORDER_MIN`` numbers), where it gained no time and cost temp memory, and other platforms
    take the plain product."""
    if A_prev.size >= backprop.IN_ORDER_MIN:
        return delta.T @ A_prev
    D_T = jax.lax.platform_dependent(delta.T, cpu=jax.lax.optimization_barrier, default=lambda t: t)
    return D_T @ A_prev


def loss_grads_output(config: Config, weight_grad: Callable | None = None) -> Callable:
    """(T1) for a minibatch: ``(params, x, y) -> (loss, grads, A[L], Y)``, the output kept for metrics.
    ``weight_grad``: the (B3) layout of :func:`jaxmlp.backprop.grads_from_forward` (manual gradients only)."""
    kw = dict(activation=config.activation, output_activation=config.output_activation, loss=config.loss,
              compute_dtype=config.compute_dtype)
    if config.grad == "manual":
        def manual(params, x, y):
            sigma, sigma_out, Y, fp = mlp.prepare(params, x, y, **kw)
            grads = backprop.grads_from_forward(params, fp, Y, sigma, sigma_out, config.loss, weight_grad)
            return mlp.loss_from_forward(fp, Y, config.loss), grads, fp.a[-1], Y

        return manual

    value_and_grad = jax.value_and_grad(partial(mlp.loss_and_output, **kw), has_aux=True)

    def autodiff(params, x, y):
        (value, (A_L, Y)), grads = value_and_grad(params, x, y)
        return value, grads, A_L, Y

    return autodiff


def all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def train_epoch(params, opt_state, key, x, y, *, optimizer, config: Config, step_fn: Callable):
    """One epoch of (T1)-(T2) with ``step_fn`` as (T1): a permutation drawn from ``key``, then a ``lax.scan``
    over its minibatches. Returns ``(params, opt_state, key, step_metrics)``, ``step_metrics`` the steps'
    own metrics (one entry per step) with ``metrics="minibatch"``, else None."""
    N, B = x.shape[0], config.batch_size

    def minibatch(rows):
        """The examples ``rows`` (all of them for ``None``), gathered one minibatch at a time, so that no
        permuted copy of the whole training set is ever made."""
        batch = (x, y) if rows is None else (x[rows], y[rows])
        if config.mesh is not None:  # split every minibatch over the "data" axis; XLA adds the all-reduce
            spec = NamedSharding(config.mesh, PartitionSpec("data"))
            batch = tuple(jax.lax.with_sharding_constraint(t, spec) for t in batch)
        return batch

    def step(carry, rows):
        params, opt_state = carry
        value, grads, A_L, Y = step_fn(params, *minibatch(rows))  # (T1)
        updates, opt_state = optimizer.update(grads, opt_state, params)  # (T2)
        metrics = evaluation.metrics_of(value, A_L, Y, config.loss) if config.metrics == "minibatch" else None
        return (optim.apply_updates(params, updates), opt_state), metrics  # (T2)

    key, k_perm = jax.random.split(key)
    if B is None:  # one full-batch step
        (params, opt_state), step_metrics = jax.lax.scan(lambda c, _: step(c, None), (params, opt_state), None,
                                                         length=1)
    else:
        rows = shuffle.permutation(k_perm, N)[: (N // B) * B].reshape(N // B, B)  # partial batch dropped
        (params, opt_state), step_metrics = jax.lax.scan(step, (params, opt_state), rows)
    return params, opt_state, key, step_metrics


def epoch_metrics(params, x, y, step_metrics, config: Config) -> dict:
    """The epoch's metrics as ``config.metrics`` says: the steps' mean, or the whole training set's."""
    kw = dict(loss=config.loss, activation=config.activation, output_activation=config.output_activation)
    if config.metrics == "minibatch":  # equal batch sizes: the mean of the means is the mean over examples
        return jax.tree.map(lambda m: jnp.mean(m, axis=-1), step_metrics)
    if config.mesh is not None:  # the evaluation too is split over the "data" axis, not replicated
        split = NamedSharding(config.mesh, PartitionSpec("data"))
        return evaluation.evaluate(params, *(jax.lax.with_sharding_constraint(t, split) for t in (x, y)), **kw)
    return evaluation.evaluate_in_chunks(params, x, y, config.eval_chunk, **kw)


def scan_epochs(epoch: Callable, carry: Carry, n_epochs: int):
    """``n_epochs`` of ``epoch(params, opt_state, key) -> (params, opt_state, key, metrics, finite)`` as one
    ``lax.scan``, keeping the last finite parameters. Returns ``(carry, metrics, ok)``, ``metrics`` and
    ``ok`` (every epoch so far finite) with a leading axis of ``n_epochs``."""

    def body(carry, _):
        params, opt_state, key, metrics, finite = epoch(carry.params, carry.opt_state, carry.key)
        ok = carry.ok & finite
        good = jax.tree.map(lambda new, old: jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - ok.ndim)), new, old),
                            params, carry.good)
        return Carry(params, opt_state, key, good, ok), (metrics, ok)

    carry, (metrics, ok) = jax.lax.scan(body, carry, None, length=n_epochs)
    return carry, metrics, ok


def hashable(obj) -> bool:
    """Whether ``obj`` can be a static argument of ``jit`` (one that does not hash gets a fresh program)."""
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def program(fn: Callable, compiled: Callable, **static) -> Callable:
    """``compiled`` (a ``jit`` of ``fn`` with ``static`` among its static arguments) with ``static`` bound; for
    a static argument that does not hash (an optimizer holding an array, say), a fresh ``jit`` of ``fn``
    (``n_epochs``, when ``fn`` takes it, stays static)."""
    if all(hashable(v) for v in static.values()):
        return partial(compiled, **static)
    takes_n = "n_epochs" in inspect.signature(fn).parameters
    return jax.jit(partial(fn, **static), static_argnames=("n_epochs",) if takes_n else ())


# ----------------------------------------------------------------------------------------- checks

def check_run(params, x, y, loss, activation, output_activation, epochs, batch_size, grad, metrics):
    """Everything about a run that can be wrong before anything compiles, for one model's ``params``."""
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


def check_loop_options(checkpoint_dir, checkpoint_every, epochs_per_call):
    for name, value in (("checkpoint_every", checkpoint_every), ("epochs_per_call", epochs_per_call)):
        if value is not None and (not checks.is_int(value) or value < 1):
            raise ValueError(f"{name} must be None or a positive int, got {name}={value!r}")
    if checkpoint_dir is not None and checkpoint_every is None:
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} needs checkpoint_every (epochs between "
                         f"checkpoints); without it nothing would be saved")


def auto_axes(mesh):
    """``mesh`` with every axis ``Auto``: training shards with sharding constraints, which need Auto axes
    (``jax.make_mesh`` makes ``Explicit`` axes by default in recent jax)."""
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None or mesh.are_all_axes_auto:
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(axis_type.Auto,) * len(mesh.axis_names))


def check_axis(mesh, axis, n, what):
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh needs a {axis!r} axis, got axes {mesh.axis_names}")
    if n % mesh.shape[axis]:
        raise ValueError(f"{what} = {n} must be divisible by the mesh's {axis!r} axis of size {mesh.shape[axis]}")


# ----------------------------------------------------------------------------------------- on the host

class Result(NamedTuple):
    """What :func:`run` hands back: the final carry, the history of epochs 1..E, and the 1-based epoch that
    diverged when the run stopped there (``stop_on_divergence``), else None."""

    carry: Carry
    history: dict
    diverged_epoch: int | None


def calls(start: int, epochs: int, per_call, checkpoint_every):
    """``(first epoch, epochs)`` of each compiled call: ``per_call`` epochs (default: all that are left),
    cut at every multiple of ``checkpoint_every``, where a checkpoint is written."""
    epoch = start
    while epoch < epochs:
        stop = min(epochs, epoch + (per_call or epochs))
        if checkpoint_every:
            stop = min(stop, (epoch // checkpoint_every + 1) * checkpoint_every)
        yield epoch, stop - epoch
        epoch = stop


def history(past: dict, chunks, start: int = 0) -> dict:
    """The metrics of epochs 1..E: ``past`` (from the checkpoint of epoch ``start``) followed by this call's
    ``chunks``, and ``"epoch"``, their 1-based numbers."""
    parts = ([past] if past else []) + list(chunks)
    if past and chunks and set(past) != set(chunks[0]):
        raise ValueError(f"the checkpoint resumed holds the history of {sorted(past)}, but this run reports "
                         f"{sorted(chunks[0])}: it is the checkpoint of a run with another loss. To start this "
                         f"run afresh, clear its checkpoint_dir (or pass another)")
    out = ({k: np.concatenate([np.asarray(c[k]) for c in parts]) for k in parts[0]} if parts
           else {"loss": np.zeros((0,))})
    first = start + 1 - (len(past["loss"]) if past else 0)
    out["epoch"] = np.arange(first, first + len(out["loss"]))
    return out


def _saved_state(carry: Carry, parts: int) -> tuple:
    """What a checkpoint holds of ``carry``: all of it, or its first three parts for a run that stops at its
    first divergence (its checkpoints are all of finite epochs, so ``good`` is ``params`` and ``ok`` True)."""
    return tuple(carry)[:parts]


def _resume(checkpoint_dir, saved, carry: Carry, epochs: int, parts: int):
    """``(carry, start, past)``: the latest checkpoint (epochs ``saved``) read into ``carry``'s structure,
    its epoch and its history; ``(carry, 0, {})`` when there is none."""
    if not saved:
        return carry, 0, {}
    start = saved[-1]
    if start > epochs:
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r} holds a checkpoint of epoch {start}, past "
                         f"epochs={epochs}: pass epochs >= {start} to go on from it, or clear the directory")
    try:
        loaded = checkpoint.load(checkpoint_dir, start, _saved_state(carry, parts), names=STATE_NAMES)
    except ValueError as e:
        raise ValueError(
            f"checkpoint_dir={str(checkpoint_dir)!r} holds the checkpoint of epoch {start} of another run, which "
            f"this one cannot resume: {e}. To start this run afresh, clear {str(checkpoint_dir)!r} (or pass "
            f"another checkpoint_dir)") from None
    if parts == 3:
        loaded = (*loaded, loaded[0], carry.ok)
    return Carry(*loaded), start, checkpoint.load_history(checkpoint_dir, start)  # host arrays: jit places them


def run(program: Callable, init_opt_state: Callable, params, key, ok, *, epochs: int, checkpoint_dir=None,
        checkpoint_every=None, epochs_per_call=None, callback=None, stop_on_divergence: bool) -> Result:
    """Train for ``epochs`` epochs with ``program(carry, n_epochs=n) -> (carry, metrics, ok)`` (the compiled
    :func:`scan_epochs` of the caller), resuming from and writing checkpoints in ``checkpoint_dir``.

    ``init_opt_state(params)`` makes the optimizer state; a run of one call with nothing to resume leaves it
    to the program instead (opt_state None: one compiled program, not two). ``callback(epoch, metrics)``
    after each call gets that call's last epoch: floats for one model; arrays (K,) and ``"diverged"`` for K.
    """
    saved = [] if checkpoint_dir is None else checkpoint.steps(checkpoint_dir)
    fresh = len(list(calls(0, epochs, epochs_per_call, checkpoint_every))) == 1 and not saved
    carry = Carry(params, None if fresh else init_opt_state(params), jax.random.key_data(key), params, ok)
    parts = 3 if stop_on_divergence else len(carry)
    carry, start, past = _resume(checkpoint_dir, saved, carry, epochs, parts)
    impl = jax.random.key_impl(key)
    chunks = []
    for epoch, n in calls(start, epochs, epochs_per_call, checkpoint_every):
        carry = carry._replace(key=jax.random.wrap_key_data(jnp.asarray(carry.key), impl=impl))
        carry, metrics, oks = program(carry, n_epochs=n)
        carry = carry._replace(key=jax.random.key_data(carry.key))
        metrics, oks = {k: np.asarray(v) for k, v in metrics.items()}, np.asarray(oks)
        if stop_on_divergence and not oks.all():
            bad = int(np.argmin(oks))
            chunks.append({k: v[: bad + 1] for k, v in metrics.items()})
            return Result(carry, history(past, chunks, start), epoch + bad + 1)
        epoch += n
        chunks.append(metrics)
        if checkpoint_dir is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
            saved_history = {k: v for k, v in history(past, chunks, start).items() if k != "epoch"}
            checkpoint.save(checkpoint_dir, epoch, _saved_state(carry, parts), history=saved_history)
        if callback is not None:
            last = {k: (float(v[-1]) if v.ndim == 1 else v[-1]) for k, v in metrics.items()}
            if np.ndim(carry.ok):
                last["diverged"] = ~np.asarray(carry.ok)
            callback(epoch, last)
    return Result(carry, history(past, chunks, start), None)
