r"""Ensembles and sweeps: K MLPs trained at once, in one compiled program, each with its own optimizer.

Model i of a stack (every leaf with a leading axis K) trains as :func:`jaxmlp.fit` would train it
alone: the epochs of :mod:`jaxmlp.train`, (T1)-(T2), ``jax.vmap``-ed over the K models, with::

    optimizer_i = optimizer                            (one GradientTransformation for every model)   (E1)
                = factory({name: hyperparams[name][i]})   (a callable: a sweep over hyperparameters)
    key_i       = key                                  shuffle="shared": every model, the same minibatches (E2)
                = jax.random.fold_in(key, i)           shuffle="per_model": its own data order

so that model i equals ``fit(model_i, optimizer=optimizer_i, key=key_i)`` to float32 rounding (under
``vmap`` XLA may order some sums differently). ``learning_rates=lrs`` is shorthand for
``optimizer=lambda h: jaxmlp.optim.adam(h["learning_rate"]), hyperparams={"learning_rate": lrs}``.

The factory is called inside the compiled program with traced scalars, so any optimizer built from
``jax.numpy`` arithmetic works (jaxmlp's and optax's); one program serves every value of the sweep.
Before anything compiles, one step of the factory's optimizer is traced (not run) to check that it
returns a GradientTransformation and that its updates or state depend on every name in
``hyperparams`` (a misspelt name, or one the optimizer ignores, is an error, not a silent no-op).

Each epoch trains every model (one ``vmap`` of :func:`jaxmlp.loop.train_epoch`, fit's epoch), then evaluates
them on the whole training set (``metrics="full"``) a group of models at a time, so that each model's
activations are contiguous; with ``metrics="minibatch"`` each model reports its steps' running mean.
With ``shuffle="shared"`` every model sees the same minibatch X_b, and the weight gradient (B3) of layer 1
of all K models is one matmul: X_bᵀ (n₀ × B) times the K stacked Δ[1] (B × K·n₁).

A model whose loss or parameters stop being finite keeps its last finite parameters and is marked in
``history["diverged"]``; the others train on. Checkpoints hold (params, optimizer state, key, last
finite params, finite-so-far flags) and the history, so an interrupted sweep resumes bit-identical.

The ensemble's prediction (:func:`evaluate_ensemble`) is the mean over models of the output
activation A_i[L] (probabilities for ``bce``/``ce``)::

    Ā = (1/K) Σ_i A_i[L],    its loss: MSE (L1), BCE (L2) or CE (L3) of Ā against Y                (E3)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Var
from jax.sharding import NamedSharding, PartitionSpec

from jaxmlp import checks, evaluation, loop, losses, mlp, optim

SHUFFLES = ("shared", "per_model")
GROUP_BUDGET = 1 << 19  # activations (numbers) of the models evaluated together each epoch: 2 MiB in float32


def _adam_of_learning_rate(h):
    """The factory behind ``learning_rates=``: Adam with model i's learning rate."""
    return optim.adam(h["learning_rate"])


@dataclass(frozen=True)
class _Same:
    """The factory of one optimizer shared by every model (E1)."""

    optimizer: Any

    def __call__(self, h):
        return self.optimizer


# --- the optimizer of each model --------------------------------------------------------------------------


def _is_transformation(obj) -> bool:
    return hasattr(obj, "init") and hasattr(obj, "update")


def _stack_size(params_stack) -> int:
    leaves = jax.tree.leaves(params_stack)
    if not leaves or any(jnp.ndim(W) != 3 or jnp.ndim(b) != 2 for W, b in params_stack):
        raise ValueError("params_stack must be Layers stacked along a leading axis K (W of shape (K, n_out, n_in), "
                         "b of shape (K, n_out)), e.g. jax.vmap(lambda k: init_mlp(k, sizes))(keys); got shapes "
                         f"{[(jnp.shape(W), jnp.shape(b)) for W, b in params_stack]}")
    K = leaves[0].shape[0]
    if any(leaf.shape[:1] != (K,) for leaf in leaves):
        raise ValueError(f"every leaf of params_stack needs the same leading axis K; got shapes "
                         f"{[leaf.shape for leaf in leaves]}")
    return K


def _per_model(name, value, K, dtype):
    value = jnp.asarray(value)
    if value.shape != (K,):
        raise ValueError(f"{name} must have shape (K,) = ({K},), one value per model, got shape {value.shape}")
    return value.astype(dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value


def _used_inputs(jaxpr) -> list[bool]:
    """Which inputs of ``jaxpr`` reach its outputs: a backward liveness pass. An equation with a live
    output makes all its inputs live (conservative for calls and loops: never a false "unused")."""
    live = {v for v in jaxpr.outvars if isinstance(v, Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if isinstance(v, Var))
    return [v in live for v in jaxpr.invars]


_CHECKED = set()  # (factory, hyperparameter and parameter shapes) already checked: tracing costs ~10 ms a call


def _check_factory(factory, hyper: dict, params):
    """Trace (not run) ``init`` and one ``update`` of ``factory(h)`` for one model: it must return a
    GradientTransformation, read only names of ``hyper``, and depend on every one of them."""
    names = sorted(hyper)
    signature = (factory, tuple((k, hyper[k].dtype) for k in names),
                 tuple((leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(params)))
    if loop.hashable(factory) and signature in _CHECKED:
        return

    def one_step(h, params):
        try:
            opt = factory(h)
        except KeyError as e:
            if e.args and e.args[0] not in hyper:
                raise ValueError(f"the optimizer factory reads hyperparams[{e.args[0]!r}], but hyperparams has only "
                                 f"{names}; add it (an array of shape (K,)) or fix the name") from None
            raise
        if not _is_transformation(opt):
            raise TypeError(f"the optimizer factory must return a GradientTransformation (init and update), e.g. "
                            f"lambda h: jaxmlp.optim.adam(h['learning_rate']); it returned "
                            f"{type(opt).__name__}: {opt!r}")
        state = opt.init(params)
        return opt.update(params, state, params)  # grads shaped like params

    example = {k: v[0] for k, v in hyper.items()}
    try:
        closed = jax.make_jaxpr(one_step)(example, params)
    except jax.errors.ConcretizationTypeError as e:
        raise TypeError("the optimizer factory is called with traced scalars (inside the compiled program) and must "
                        "not convert them to Python numbers (float(h[...]), if h[...] > ...)") from e
    used = _used_inputs(closed.jaxpr)[: len(names)]  # the inputs: the dict's leaves (sorted keys), then params
    unused = [k for k, u in zip(names, used) if not u]
    if unused:
        raise ValueError(f"hyperparams {unused} are not used by the optimizer factory: the optimizers it builds do "
                         f"not depend on them (a misspelt name, or a value the factory ignores); it uses "
                         f"{[k for k, u in zip(names, used) if u]}")
    if loop.hashable(factory):
        if len(_CHECKED) >= 1024:  # fresh lambdas each call: do not hold on to all of them
            _CHECKED.clear()
        _CHECKED.add(signature)


def _resolve(optimizer, hyperparams, learning_rates, K, dtype):
    """``(factory, hyper)``: the callable of (E1) and its per-model arrays, checked."""
    if learning_rates is not None:
        if optimizer is not None or hyperparams is not None:
            raise ValueError("pass either learning_rates= (shorthand for Adam with one learning rate per model) or "
                             "optimizer= (and hyperparams=), not both")
        return _adam_of_learning_rate, {"learning_rate": _per_model("learning_rates", learning_rates, K, dtype)}
    if optimizer is None:
        raise TypeError("fit_ensemble needs optimizer= (a GradientTransformation, or a callable hyperparams_i -> "
                        "GradientTransformation with hyperparams=) or learning_rates=")
    if _is_transformation(optimizer):
        if hyperparams is not None:
            raise ValueError("hyperparams= needs optimizer= to be a callable hyperparams_i -> GradientTransformation "
                             f"(e.g. lambda h: optax.adam(h['learning_rate'])); got the optimizer {optimizer!r}")
        return _Same(optimizer), {}
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a GradientTransformation or a callable hyperparams_i -> "
                        f"GradientTransformation, got {type(optimizer).__name__}: {optimizer!r}")
    if not isinstance(hyperparams, dict) or not all(isinstance(k, str) for k in hyperparams):
        raise TypeError(f"an optimizer factory needs hyperparams=, a dict of name -> array of shape (K,) = ({K},), "
                        f"got {type(hyperparams).__name__}: {hyperparams!r}")
    return optimizer, {k: _per_model(f"hyperparams[{k!r}]", v, K, dtype) for k, v in hyperparams.items()}


# --- the compiled programs ----------------------------------------------------------------------------------


def _init(params, hyper, *, factory):
    return jax.vmap(lambda p, h: factory(h).init(p))(params, hyper)


def _ensemble_metrics(params, x, y, step_metrics, config, group: int | None):
    """Each model's metrics of the epoch, arrays of shape (K,). The whole training set is evaluated ``group``
    models at a time (a ``lax.map`` over the models, each on its own contiguous activations, which stay within
    ``GROUP_BUDGET``), faster on CPU than all K at once, whose layer 1 is one wide product followed by a
    transpose (``benchmarks/README.md``). With ``group=None`` (models sharded over a mesh) all K at once."""
    if config.metrics == "minibatch" or group is None:
        return jax.vmap(lambda p, m: loop.epoch_metrics(p, x, y, m, config))(params, step_metrics)
    K = jax.tree.leaves(params)[0].shape[0]
    return jax.lax.map(lambda p: loop.epoch_metrics(p, x, y, None, config), params, batch_size=min(group, K))


def _shared_input_weight_grad(l, delta, A_prev):
    """(B3) under ``vmap`` over models that share the minibatch X_b: layer 1 as (X_bᵀ Δ[1])ᵀ, one product of
    X_bᵀ (n₀ × B) with the K models' Δ[1] side by side (B × K·n₁) where ``vmap`` of Δ[1]ᵀ X_b makes K small
    ones; the other layers as fit lays them out (:func:`jaxmlp.loop.transposed_first`)."""
    return (A_prev.T @ delta).T if l == 1 else loop.transposed_first(l, delta, A_prev)


def _ensemble_epochs(carry, x, y, hyper, *, factory, config, n_epochs, per_model, group):
    """(E1)-(E2): each epoch, fit's epoch of every model (``vmap`` of :func:`jaxmlp.loop.train_epoch`), then
    their metrics and finite flags, per model, in :func:`jaxmlp.loop.scan_epochs`."""
    if carry.opt_state is None:
        carry = carry._replace(opt_state=_init(carry.params, hyper, factory=factory))
    key_axis = 0 if per_model else None
    step_fn = loop.loss_grads_output(
        config, weight_grad=loop.transposed_first if per_model else _shared_input_weight_grad)

    def train_one(params, opt_state, key, h):
        return loop.train_epoch(params, opt_state, key, x, y, optimizer=factory(h), config=config,  # (E1)
                                step_fn=step_fn)

    train_all = jax.vmap(train_one, in_axes=(0, 0, key_axis, 0), out_axes=(0, 0, key_axis, 0))

    def epoch(params, opt_state, key):
        params, opt_state, key, step_metrics = train_all(params, opt_state, key, hyper)
        metrics = _ensemble_metrics(params, x, y, step_metrics, config, group)
        return params, opt_state, key, metrics, jnp.isfinite(metrics["loss"]) & jax.vmap(loop.all_finite)(params)

    return loop.scan_epochs(epoch, carry, n_epochs)


_compiled_init = jax.jit(_init, static_argnames="factory")
_compiled_ensemble = jax.jit(_ensemble_epochs,
                             static_argnames=("factory", "config", "n_epochs", "per_model", "group"))


# --- fit_ensemble -----------------------------------------------------------------------------------------------


def fit_ensemble(params_stack, x, y, *, optimizer=None, hyperparams=None, learning_rates=None, loss,
                 activation="relu", output_activation=None, epochs=1, batch_size=None, key=None, grad="manual",
                 mesh=None, compute_dtype=None, metrics="full", shuffle="shared", checkpoint_dir=None,
                 checkpoint_every=None, epochs_per_call=None, callback=None):
    """Train K models at once, model i with its own optimizer (E1) and data order (E2), in one program.

    Args:
      params_stack: Layers whose every leaf has a leading axis K (e.g. ``jax.vmap(lambda k: init_mlp(k,
        sizes))`` over K keys).
      x, y: the training data, shared by every model.
      optimizer: one GradientTransformation for every model (jaxmlp's or optax's), or a callable
        ``hyperparams_i -> GradientTransformation``, called with model i's scalars (a dict).
      hyperparams: with a callable ``optimizer``: a dict of name -> array of shape (K,).
      learning_rates: shorthand for Adam with ``learning_rates[i]`` for model i (without ``optimizer``).
      shuffle: ``"shared"`` (every model the minibatches of ``key``) or ``"per_model"`` (model i those of
        ``jax.random.fold_in(key, i)``).
      loss, activation, output_activation, epochs, batch_size, key, grad, compute_dtype, metrics,
        checkpoint_dir, checkpoint_every, epochs_per_call: as for :func:`jaxmlp.fit`.
      mesh: a ``jax.sharding.Mesh`` with a ``"model"`` axis (model parallelism): the K models are sharded
        over it, each device training its share, and the returned stack stays sharded. K must be
        divisible by the axis size.
      callback: ``callback(epoch, metrics)`` after each compiled call, ``metrics`` that call's last
        epoch: each metric an array of shape (K,), and ``"diverged"`` (K,) so far.

    Returns:
      ``(params_stack, history)``: ``history["loss"]`` (and ``["accuracy"]``) of shape ``(epochs, K)``,
      ``history["epoch"]`` 1..epochs, ``history["diverged"]`` of shape ``(K,)``: a model whose training
      diverged keeps its last finite parameters and is marked, the others are not affected.
    """
    K = _stack_size(params_stack)
    dtype = jnp.promote_types(jax.tree.leaves(params_stack)[0].dtype, jnp.float32)
    factory, hyper = _resolve(optimizer, hyperparams, learning_rates, K, dtype)
    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {SHUFFLES}, got shuffle={shuffle!r}")
    first = jax.tree.map(lambda leaf: leaf[0], params_stack)
    x, y = checks.as_array(x), checks.as_array(y)
    loop.check_run(first, x, y, loss, activation, output_activation, epochs, batch_size, grad, metrics)
    checks.finite_params(params_stack)
    loop.check_loop_options(checkpoint_dir, checkpoint_every, epochs_per_call)
    _check_factory(factory, hyper, first)
    # The per-epoch evaluation: `group` models at a time, each in chunks of fit's size (so that model i's
    # metrics are fit's, to rounding); all K at once, in smaller chunks, when the models are sharded.
    chunk = evaluation.chunk_size(first) if mesh is None else evaluation.chunk_size(params_stack, K)
    group = (max(1, GROUP_BUDGET // (min(chunk, jnp.shape(x)[0]) * evaluation.width(first)))
             if mesh is None else None)
    config = loop.Config(loss, activation, output_activation, grad, batch_size, compute_dtype,
                         eval_chunk=chunk, metrics=metrics)
    key = jax.random.key(0) if key is None else checks.random_key(key)
    per_model = shuffle == "per_model"
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(K)) if per_model else key  # (E2)
    ok = jnp.ones((K,), bool)
    if mesh is not None:
        mesh = loop.auto_axes(mesh)
        loop.check_axis(mesh, "model", K, "the number of models K")
        params_stack, hyper, ok = jax.device_put((params_stack, hyper, ok), NamedSharding(mesh, PartitionSpec("model")))
        x, y = jax.device_put((x, y), NamedSharding(mesh, PartitionSpec()))
    program = loop.program(_ensemble_epochs, _compiled_ensemble, factory=factory, config=config,
                           per_model=per_model, group=group)
    init = loop.program(_init, _compiled_init, factory=factory)
    result = loop.run(lambda carry, n_epochs: program(carry, x, y, hyper, n_epochs=n_epochs),
                      lambda params: init(params, hyper), params_stack, keys, ok, epochs=epochs,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                      epochs_per_call=epochs_per_call, callback=callback, stop_on_divergence=False)
    history = result.history
    if history["loss"].ndim == 1:  # no epoch run and none saved
        history = {k: (v.reshape(0, K) if k != "epoch" else v) for k, v in history.items()}
    history["diverged"] = ~np.asarray(result.carry.ok)
    return result.carry.good, history


# --- evaluate_ensemble ------------------------------------------------------------------------------------------

_LOSS_OF_PROBABILITIES = {"mse": losses.mse, "bce": losses.binary_cross_entropy, "ce": losses.cross_entropy}


@partial(jax.jit, static_argnames=("loss", "activation", "output_activation"))
def _evaluate_ensemble(params_stack, x, y, *, loss, activation, output_activation):
    def one_model(params):
        value, (A_L, Y) = mlp.loss_and_output(params, x, y, activation, output_activation, loss)
        return evaluation.metrics_of(value, A_L, Y, loss), A_L

    per_model, outputs = jax.vmap(one_model)(params_stack)
    _, Y = mlp.as_batch(x, y)
    mean = jnp.mean(outputs, axis=0)  # (E3): Ā
    ensemble = evaluation.metrics_of(_LOSS_OF_PROBABILITIES[loss](mean, Y), mean, Y, loss)  # (E3)
    return {**per_model, **{"ensemble_" + k: v for k, v in ensemble.items()}}


def evaluate_ensemble(params_stack, x, y, *, loss, activation="relu", output_activation=None):
    """Each model's metrics on ``(x, y)`` and those of the ensemble's averaged prediction (E3).

    Returns:
      a dict: ``"loss"`` (and, for ``bce``/``ce``, ``"accuracy"``) of shape ``(K,)``, each model's as
      :func:`jaxmlp.evaluate` gives it; ``"ensemble_loss"`` (and ``"ensemble_accuracy"``), scalars, of
      the mean Ā of the models' outputs: the mean of the probabilities for ``bce``/``ce``.
    """
    _stack_size(params_stack)
    first = jax.tree.map(lambda leaf: leaf[0], params_stack)
    mlp.resolve(activation, output_activation, loss)
    mlp.check_target(first, x, y, loss)
    return _evaluate_ensemble(params_stack, x, y, loss=loss, activation=activation,
                              output_activation=output_activation)
