"""fit, fit_ensemble and evaluate: against hand-written reference loops, autodiff and optax, plus
divergence, compilation caching, and acceptance on real data.

Compiled programs are cached on (shapes, dtype, optimizer object, configuration, epochs per call), and a
compile costs seconds on a loaded machine, so the tests share one small problem (``make_problem``),
module-level optimizer objects and a few epoch counts: most fits below reuse a program another test
compiled.
"""

import functools
import gc

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_trees_equal, max_rel

from jaxmlp import (
    TrainingDiverged,
    backward,
    datasets,
    evaluate,
    evaluation,
    fit,
    fit_ensemble,
    forward,
    init_mlp,
    loss_fn,
    optim,
    train,
)
from jaxmlp.shuffle import permutation

# The shared small problem: N examples, widths SIZES, a tanh MLP regressed with MSE.
N, SIZES, ACTIVATION, LOSS = 10, (3, 5, 1), "tanh", "mse"
BATCH, EPOCHS, SEED = 4, 3, 7

# Module-level optimizers: the compiled program is cached on the optimizer *object*.
SGD = optim.sgd(0.1)
ADAM = optim.adam(1e-2)
DIVERGING = optim.sgd(1e3)  # on the shared problem: finite for a few epochs (first_non_finite_epoch), then not

# Relative tolerance of a comparison to rounding: max |a - b| / max |b|, per leaf.
TOL = {jnp.float64: 1e-10, jnp.float32: 1e-5}


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


@jax.jit
def sgd_step(params, x, y, lr):
    """θ ← θ - η ∇L(θ) on one batch, the gradient from ``jaxmlp.backward`` (jitted: eager is slow)."""
    _, grads = backward(params, x, y, activation=ACTIVATION, loss=LOSS)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def sgd_reference(params, x, y, *, lr, epochs, batch_size, key, keep_partial=False):
    """Minibatch SGD, one :func:`sgd_step` per minibatch in a Python loop, permuting as train.py does.

    Each epoch splits the key (``key, k_perm = split(key)``), permutes ``range(N)`` with ``k_perm`` and
    cuts it into ``N // batch_size`` minibatches, dropping the rest (or keeping it, ``keep_partial``).
    ``batch_size=None`` is one full-batch step per epoch.
    """
    n = x.shape[0]
    for _ in range(epochs):
        key, k_perm = jax.random.split(key)
        if batch_size is None:
            batches = [np.arange(n)]
        else:
            perm = np.asarray(permutation(k_perm, n))
            stop = n if keep_partial else (n // batch_size) * batch_size
            batches = [perm[i:i + batch_size] for i in range(0, stop, batch_size)]
        for rows in batches:
            params = sgd_step(params, x[rows], y[rows], lr)
    return params


def first_non_finite_epoch(params, x, y, *, lr, epochs):
    """The first epoch after which the Python-loop SGD of :func:`sgd_reference` has a non-finite loss on
    the whole training set (``loss_fn``) or non-finite parameters: the epoch that fit must report."""
    for epoch in range(1, epochs + 1):
        trained = sgd_reference(params, x, y, lr=lr, epochs=epoch, batch_size=BATCH, key=jax.random.key(SEED))
        finite = np.isfinite(float(loss_fn(trained, x, y, loss=LOSS, activation=ACTIVATION)))
        if not (finite and all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(trained))):
            return epoch
    return None


@pytest.fixture(scope="module")
def problem32():
    return make_problem(jnp.float32)


@pytest.fixture(scope="module")
def sgd32(problem32):
    """The shared float32 run: minibatch SGD, manual gradients, key SEED."""
    return run(*problem32)


# --- fit against reference loops ------------------------------------------------------------------------


def test_full_batch_is_gradient_descent(x64):
    """batch_size=None: every epoch is one step θ ← θ - η ∇L(θ) on all N examples."""
    params, x, y = make_problem(jnp.float64)
    trained, history = run(params, x, y, batch_size=None)
    expected = sgd_reference(params, x, y, lr=0.1, epochs=EPOCHS, batch_size=None, key=jax.random.key(SEED))
    assert max_rel(trained, expected) < 1e-12
    assert history["loss"].shape == (EPOCHS,)


def test_minibatches_follow_the_epoch_permutation_and_drop_the_partial_batch(x64):
    """N = 10, batch 4: a fresh permutation per epoch, two steps, the last two examples dropped."""
    params, x, y = make_problem(jnp.float64)
    trained, _ = run(params, x, y)
    kw = dict(lr=0.1, epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(SEED))
    assert max_rel(trained, sgd_reference(params, x, y, **kw)) < 1e-12
    # The comparison can tell: keeping the partial batch of 2 (a third step) gives other parameters.
    assert max_rel(trained, sgd_reference(params, x, y, **kw, keep_partial=True)) > 1e-3


def test_history_is_one_entry_per_epoch_without_accuracy_for_mse(problem32, sgd32):
    params, history = sgd32
    assert set(history) == {"loss", "epoch"}
    assert history["loss"].shape == (EPOCHS,)
    np.testing.assert_array_equal(history["epoch"], np.arange(1, EPOCHS + 1))
    # The loss of the last epoch is that of the returned parameters on the whole training set.
    _, x, y = problem32
    final = evaluate(params, x, y, loss=LOSS, activation=ACTIVATION)["loss"]
    np.testing.assert_allclose(history["loss"][-1], final, rtol=1e-5)


def test_zero_epochs_returns_the_parameters(problem32):
    params, x, y = problem32
    trained, history = run(params, x, y, epochs=0)
    assert_trees_equal(trained, params)
    assert history["loss"].shape == (0,)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
def test_manual_and_autodiff_gradients_train_alike(dtype, problem32, sgd32):
    if dtype == jnp.float64:
        with jax.enable_x64(True):
            params, x, y = make_problem(jnp.float64)
            manual, _ = run(params, x, y)
            autodiff, _ = run(params, x, y, grad="autodiff")
    else:
        manual, _ = sgd32
        autodiff, _ = run(*problem32, grad="autodiff")
    assert max_rel(manual, autodiff) < TOL[dtype]


def test_same_key_is_bit_identical_and_another_key_differs(problem32, sgd32):
    again, history_again = run(*problem32)
    assert_trees_equal(again, sgd32[0])
    np.testing.assert_array_equal(history_again["loss"], sgd32[1]["loss"])
    other, _ = run(*problem32, key=jax.random.key(SEED + 1))
    assert max_rel(other, sgd32[0]) > 1e-3


def test_optax_optimizer_trains_like_jaxmlp_optim(x64):
    """fit takes any GradientTransformation: optax.adam gives jaxmlp.optim.adam's parameters."""
    params, x, y = make_problem(jnp.float64)
    ours, _ = run(params, x, y, optimizer=ADAM)
    theirs, _ = run(params, x, y, optimizer=optax.adam(1e-2))
    assert max_rel(ours, theirs) < TOL[jnp.float64]


def test_unhashable_optimizer_still_trains(problem32, sgd32):
    """An optimizer that cannot be a static jit argument gets its own, uncached, program."""

    class Unhashable:
        __hash__ = None

        def __init__(self, inner):
            self.init, self.update = inner.init, inner.update

    gc.collect()
    before = train._compiled_epochs._cache_size()
    trained, _ = run(*problem32, optimizer=Unhashable(SGD))
    assert train._compiled_epochs._cache_size() == before
    assert max_rel(trained, sgd32[0]) < 1e-6


# --- compilation ----------------------------------------------------------------------------------------


def test_one_program_per_configuration_and_no_recompile(problem32):
    """A new configuration adds one compiled program (all epochs, all steps); repeating it adds none."""
    params, x, y = problem32
    # A fresh object (optim.sgd is memoized): a configuration compiled nowhere else.
    optimizer = optim.GradientTransformation(SGD.init, lambda grads, state, params=None: SGD.update(grads, state))
    gc.collect()  # entries of garbage optimizers must not vanish mid-test
    before = train._compiled_epochs._cache_size()
    run(params, x, y, optimizer=optimizer)
    assert train._compiled_epochs._cache_size() == before + 1
    # Same shapes, configuration and optimizer object; other values (params, data, key).
    shifted = jax.tree.map(lambda p: p + 1, params)
    run(shifted, x + 1, y, optimizer=optimizer, key=jax.random.key(SEED + 1))
    run(params, x, y, optimizer=optimizer)
    assert train._compiled_epochs._cache_size() == before + 1


# --- divergence -----------------------------------------------------------------------------------------


class InfBiasAt:
    """SGD(0.1) whose update sets hidden unit 0's bias to +inf at step ``step`` (1-based): a tanh unit
    saturates at 1, so the loss stays finite while the parameters are not."""

    def __init__(self, step):
        self.step = step

    def init(self, params):
        return jnp.zeros([], jnp.int32)

    def update(self, grads, count, params=None):
        updates, _ = SGD.update(grads, SGD.init(params), params)
        hit = count + 1 == self.step
        first = updates[0]
        b = first.b.at[0].set(jnp.where(hit, jnp.inf, first.b[0]))
        return (first._replace(b=b),) + tuple(updates[1:]), count + 1


def test_non_finite_parameters_with_a_finite_loss_count_as_divergence(problem32):
    """N = 10, batch 4: two steps per epoch, so an inf made by step 3 is in epoch 2; the loss stays finite."""
    params, x, y = problem32
    optimizer = InfBiasAt(step=3)
    with pytest.raises(TrainingDiverged, match="epoch 2") as info:
        run(params, x, y, optimizer=optimizer)
    err = info.value
    assert err.epoch == 2
    assert np.isfinite(err.history["loss"]).all()  # only the parameters' check can have caught it
    assert_trees_equal(err.params, run(params, x, y, optimizer=optimizer, epochs=1)[0])


@pytest.mark.parametrize("epochs_per_call", [None, 1], ids=["one-call", "call-per-epoch"])
def test_divergence_keeps_the_last_finite_parameters(epochs_per_call, problem32):
    """A huge learning rate: the error names the epoch and carries the parameters of the epoch before."""
    assert issubclass(TrainingDiverged, FloatingPointError)
    params, x, y = problem32
    with pytest.raises(TrainingDiverged) as info:
        run(params, x, y, optimizer=DIVERGING, epochs=6, epochs_per_call=epochs_per_call)
    err = info.value
    assert err.epoch == first_non_finite_epoch(params, x, y, lr=1e3, epochs=6)
    assert err.epoch >= 2  # so that there are last finite parameters to keep
    assert f"epoch {err.epoch}" in str(err)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(err.params))
    np.testing.assert_array_equal(err.history["epoch"], np.arange(1, err.epoch + 1))
    assert np.isfinite(err.history["loss"][:-1]).all() and not np.isfinite(err.history["loss"][-1])
    # Exactly the parameters of a run stopped after the last finite epoch.
    last_good, history = run(params, x, y, optimizer=DIVERGING, epochs=err.epoch - 1,
                             epochs_per_call=epochs_per_call)
    assert_trees_equal(err.params, last_good)
    np.testing.assert_array_equal(err.history["loss"][:-1], history["loss"])


# --- metrics="minibatch" -------------------------------------------------------------------------------


def minibatch_metrics_reference(params, x, y, *, lr, epochs, batch_size, key, loss, activation):
    """Per epoch, the mean over its minibatches of each one's loss (and accuracy) before its SGD step,
    in a Python loop over the same permutations as :func:`sgd_reference`; metrics by textbook formulas."""
    history = {"loss": [], "accuracy": []}
    step = jax.jit(lambda p, xb, yb: jax.tree.map(
        lambda w, g: w - lr * g, p, backward(p, xb, yb, activation=activation, loss=loss)[1]))
    n = x.shape[0]
    for _ in range(epochs):
        key, k_perm = jax.random.split(key)
        perm = np.asarray(permutation(k_perm, n))
        losses, accuracies = [], []
        for i in range(0, (n // batch_size) * batch_size, batch_size):
            rows = perm[i:i + batch_size]
            logits = np.asarray(forward(params, x[rows], activation=activation, output_activation="identity"))
            target = np.asarray(y[rows])
            if loss == "mse":
                losses.append(np.mean((logits - target) ** 2))
            else:
                shifted = logits - logits.max(axis=1, keepdims=True)
                log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                losses.append(-np.mean(log_p[np.arange(len(rows)), target]))
                accuracies.append(np.mean(logits.argmax(axis=1) == target))
            params = step(params, x[rows], y[rows])
        history["loss"].append(np.mean(losses))
        history["accuracy"].append(np.mean(accuracies) if accuracies else np.nan)
    return params, history


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_minibatch_metrics_are_the_running_mean_of_the_steps(x64, loss, grad):
    n_out = 3 if loss == "ce" else 1
    params, x, _ = make_problem(jnp.float64, n=24, sizes=(3, 5, n_out))
    rng = np.random.default_rng(5)
    y = (jnp.asarray(rng.integers(0, 3, 24), jnp.int32) if loss == "ce"
         else jnp.asarray(rng.standard_normal((24, 1))))
    kw = dict(lr=0.1, epochs=EPOCHS, batch_size=5, key=jax.random.key(SEED), loss=loss, activation=ACTIVATION)
    trained, history = fit(params, x, y, optimizer=SGD, loss=loss, activation=ACTIVATION, epochs=EPOCHS,
                           batch_size=5, key=jax.random.key(SEED), grad=grad, metrics="minibatch")
    expected_params, expected = minibatch_metrics_reference(params, x, y, **kw)
    assert max_rel(trained, expected_params) < 1e-10
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-10)
    if loss == "ce":
        np.testing.assert_allclose(history["accuracy"], expected["accuracy"], rtol=1e-6)  # accuracy is float32
        assert 0 < history["accuracy"].min() < 1  # some right and some wrong: the comparison can tell
    else:
        assert set(history) == {"loss", "epoch"}
    # The training itself does not depend on how it is reported.
    full_params, full_history = fit(params, x, y, optimizer=SGD, loss=loss, activation=ACTIVATION, epochs=EPOCHS,
                                    batch_size=5, key=jax.random.key(SEED), grad=grad)
    assert max_rel(trained, full_params) < 1e-12
    assert np.max(np.abs(full_history["loss"] - history["loss"])) > 1e-6  # the two metrics differ


def test_minibatch_metrics_still_detect_divergence(problem32):
    """The running mean sees the loss before each step, so it reports the blow-up an epoch or so later."""
    with pytest.raises(TrainingDiverged) as caught:
        run(*problem32, optimizer=DIVERGING, metrics="minibatch", epochs=10)
    assert caught.value.epoch >= 3
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(caught.value.params))
    assert np.isfinite(caught.value.history["loss"][:-1]).all() and not np.isfinite(caught.value.history["loss"][-1])


def test_ensemble_minibatch_metrics_equal_fit_alone():
    K = len(LEARNING_RATES)
    params, x, y = make_problem(jnp.float32)
    stack = jax.vmap(lambda k: init_mlp(k, SIZES, init="xavier"))(jax.random.split(jax.random.key(1), K))
    _, history = fit_ensemble(stack, x, y, learning_rates=LEARNING_RATES, loss=LOSS, activation=ACTIVATION,
                              epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(SEED), metrics="minibatch")
    assert history["loss"].shape == (EPOCHS, K)
    for i, optimizer in enumerate(ENSEMBLE_OPTIMIZERS):
        _, alone = run(model(stack, i), x, y, optimizer=optimizer, metrics="minibatch")
        np.testing.assert_allclose(history["loss"][:, i], alone["loss"], rtol=TOL[jnp.float32])


def test_minibatch_metrics_full_batch_is_the_loss_before_each_step(x64):
    params, x, y = make_problem(jnp.float64)
    trained, history = run(params, x, y, batch_size=None, epochs=2, metrics="minibatch")
    after_one, _ = run(params, x, y, batch_size=None, epochs=1)
    expected = [loss_fn(p, x, y, loss=LOSS, activation=ACTIVATION) for p in (params, after_one)]
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-12)


@pytest.mark.parametrize("ensemble", [False, True], ids=["fit", "fit_ensemble"])
def test_chunked_evaluation_inside_fit_equals_one_chunk(ensemble, monkeypatch, problem32, sgd32):
    """The per-epoch evaluation in chunks of 3 (N = 10: three chunks and a remainder of 1, under the
    epochs' scan, and vmapped for an ensemble) gives the metrics of one chunk (the shared runs)."""
    params, x, y = problem32
    if ensemble:  # the one-chunk run first: run_ensemble is cached, and must not cache a chunked one
        stack, _, one_chunk = run_ensemble(jnp.float32, LEARNING_RATES)
    else:
        one_chunk = sgd32[1]
    monkeypatch.setattr(evaluation, "CHUNK_BUDGET", 1)
    monkeypatch.setattr(evaluation, "MIN_CHUNK", 3)
    assert evaluation.chunk_size(params) == 3
    if ensemble:
        chunked = fit_ensemble(stack, x, y, learning_rates=LEARNING_RATES, loss=LOSS, activation=ACTIVATION,
                               epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(SEED))[1]
    else:
        chunked = run(params, x, y)[1]
    np.testing.assert_allclose(chunked["loss"], one_chunk["loss"], rtol=1e-6)


def test_fit_ensemble_rejects_a_bad_metrics_value(problem32):
    params, x, y = problem32
    stack = jax.tree.map(lambda leaf: leaf[None], params)
    with pytest.raises(ValueError, match="metrics must be one of"):
        fit_ensemble(stack, x, y, learning_rates=(0.1,), loss=LOSS, metrics="batch")


# --- input checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(grad="numeric"), "grad must be"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=N + 1), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(batch_size=2.0), "batch_size"),
        (dict(epochs=-1), "epochs"),
        (dict(epochs=1.5), "epochs"),
        (dict(metrics="test"), "metrics must be one of"),
    ],
    ids=["grad", "batch-0", "batch-over-N", "batch-bool", "batch-float", "epochs-negative", "epochs-float",
         "metrics"],
)
def test_fit_rejects_bad_arguments(overrides, match, problem32):
    with pytest.raises(ValueError, match=match):
        run(*problem32, **overrides)


# --- fit_ensemble ---------------------------------------------------------------------------------------

LEARNING_RATES = (1e-2, 3e-2)
ENSEMBLE_OPTIMIZERS = tuple(optim.adam(lr) for lr in LEARNING_RATES)


def model(stack, i):
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


def test_ensemble_model_equals_fit_alone(float_dtype):
    K = len(LEARNING_RATES)
    _, x, y = make_problem(float_dtype)
    stack, trained, history = run_ensemble(float_dtype, LEARNING_RATES)
    assert history["loss"].shape == (EPOCHS, K)
    np.testing.assert_array_equal(history["diverged"], np.zeros(K, bool))
    for i, optimizer in enumerate(ENSEMBLE_OPTIMIZERS):
        alone, alone_history = run(model(stack, i), x, y, optimizer=optimizer)
        model_i = model(trained, i)
        assert jax.tree.map(lambda a: a.dtype, model_i) == jax.tree.map(lambda a: a.dtype, alone)
        # To rounding, not bitwise: under vmap XLA may order some sums differently.
        assert max_rel(model_i, alone) < TOL[float_dtype], f"model {i}"
        np.testing.assert_allclose(history["loss"][:, i], alone_history["loss"], rtol=TOL[float_dtype])


def test_ensemble_model_that_diverges_does_not_stop_the_others():
    """Adam steps of 1e30 overflow the loss in epoch 1: that model keeps its initial parameters."""
    stack, trained, history = run_ensemble(jnp.float32, (LEARNING_RATES[0], 1e30))  # no new compile
    np.testing.assert_array_equal(history["diverged"], [False, True])
    assert not np.isfinite(history["loss"][:, 1]).any()
    assert_trees_equal(model(trained, 1), model(stack, 1))
    _, healthy, healthy_history = run_ensemble(jnp.float32, LEARNING_RATES)
    assert_trees_equal(model(trained, 0), model(healthy, 0))
    np.testing.assert_array_equal(history["loss"][:, 0], healthy_history["loss"][:, 0])


@pytest.mark.parametrize("learning_rates", [(1e-2,), (1e-2, 2e-2, 3e-2), 1e-2, ((1e-2,), (2e-2,))],
                         ids=["too-few", "too-many", "scalar", "column"])
def test_ensemble_rejects_learning_rates_of_the_wrong_shape(learning_rates, problem32):
    _, x, y = problem32
    stack = jax.vmap(lambda k: init_mlp(k, SIZES))(jax.random.split(jax.random.key(1), 2))
    with pytest.raises(ValueError, match=r"learning_rates must have shape \(K,\) = \(2,\)"):
        fit_ensemble(stack, x, y, learning_rates=learning_rates, loss=LOSS)


# --- evaluate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss, target", [("mse", "float"), ("bce", "binary"), ("ce", "int"), ("ce", "one-hot")])
def test_evaluate_loss_and_accuracy(loss, target):
    rng = np.random.default_rng(3)
    n_out = 3 if loss == "ce" else 1
    params = init_mlp(jax.random.key(3), [4, 6, n_out])
    x = jnp.asarray(rng.standard_normal((50, 4)), jnp.float32)
    labels = rng.integers(0, n_out if loss == "ce" else 2, size=50)
    y = {"float": jnp.asarray(rng.standard_normal((50, 1)), jnp.float32),
         "binary": jnp.asarray(labels[:, None], jnp.float32),
         "int": jnp.asarray(labels, jnp.int32),
         "one-hot": jax.nn.one_hot(labels, n_out)}[target]
    # Jitted together: eager op-by-op dispatch would compile every primitive of each case on its own.
    metrics, out = jax.jit(lambda p, x, y: (evaluate(p, x, y, loss=loss), forward(p, x)))(params, x, y)
    out = np.asarray(out, np.float64)  # logits: the natural output pairs are monotone
    # The loss from the logits by the textbook formulas, written out here (not through jaxmlp.losses).
    if loss == "mse":
        expected_loss = np.mean((out - np.asarray(y)) ** 2)
    elif loss == "bce":
        p = 1 / (1 + np.exp(-out[:, 0]))
        expected_loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p))
    else:
        log_softmax = out - out.max(axis=1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
        expected_loss = -np.mean(log_softmax[np.arange(50), labels])
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-5)
    if loss == "mse":
        assert set(metrics) == {"loss"}
        return
    predicted = out[:, 0] > 0 if loss == "bce" else out.argmax(axis=1)
    assert 0 < float(metrics["accuracy"]) < 1  # a random net on random labels: some right, some wrong
    np.testing.assert_allclose(metrics["accuracy"], np.mean(predicted == labels), rtol=1e-6)


# --- acceptance on real data ----------------------------------------------------------------------------

# dataset -> (sizes, activation, optimizer, epochs, batch size)
RECIPES = {
    "digits": ((64, 64, 32, 10), "relu", optim.adam(3e-3), 40, 64),
    "breast_cancer": ((30, 16, 1), "relu", optim.adam(3e-3), 20, 64),
    "diabetes": ((10, 16, 1), "relu", optim.adam(1e-2), 60, None),
    "xor": ((2, 8, 1), "tanh", optim.adam(3e-2), 30, 32),
    "xor-perceptron": ((2, 1), "tanh", optim.adam(3e-2), 30, 32),
}


def train_on(name):
    sizes, activation, optimizer, epochs, batch_size = RECIPES[name]
    dataset = name.split("-")[0]
    loss = datasets.spec(dataset).loss
    x_train, y_train, x_test, y_test = datasets.load(dataset, seed=0)
    params, history = fit(init_mlp(jax.random.key(0), sizes), x_train, y_train, optimizer=optimizer, loss=loss,
                          activation=activation, epochs=epochs, batch_size=batch_size, key=jax.random.key(1))
    test = {k: float(v) for k, v in evaluate(params, x_test, y_test, loss=loss, activation=activation).items()}
    if loss == "mse":
        residual = np.asarray(forward(params, x_test, activation=activation)) - np.asarray(y_test)
        test["r2"] = 1 - np.sum(residual**2) / np.sum((np.asarray(y_test) - np.mean(np.asarray(y_test))) ** 2)
    return dict(params=params, history=history, test=test, epochs=epochs)


@pytest.fixture(scope="module")
def trained():
    """Lazily train each recipe once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = train_on(name)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits", "breast_cancer", "xor"])
def test_classifiers_reach_95_percent_held_out(name, trained):
    result = trained(name)
    assert result["test"]["accuracy"] >= (0.97 if name == "xor" else 0.95), result["test"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits", "xor"])
def test_classification_history_has_accuracy(name, trained):
    history = trained(name)["history"]
    assert set(history) == {"loss", "accuracy", "epoch"}
    assert history["loss"].shape == history["accuracy"].shape == (trained(name)["epochs"],)
    assert history["loss"][-1] < history["loss"][0]
    assert ((0 <= history["accuracy"]) & (history["accuracy"] <= 1)).all()


@pytest.mark.slow
def test_regression_explains_40_percent_of_diabetes_variance(trained):
    assert trained("diabetes")["test"]["r2"] >= 0.4


@pytest.mark.slow
def test_perceptron_cannot_learn_xor(trained):
    """No line separates XOR: the one-layer net stays near chance where [2, 8, 1] is perfect."""
    assert trained("xor-perceptron")["test"]["accuracy"] <= 0.8


@pytest.mark.slow
def test_manual_and_autodiff_training_agree_on_xor_in_float64(x64):
    x_train, y_train, _, _ = datasets.load("xor", seed=0)
    x_train, y_train = x_train.astype(jnp.float64), y_train.astype(jnp.float64)
    sizes, activation, optimizer, epochs, batch_size = RECIPES["xor"]
    params = init_mlp(jax.random.key(0), sizes, dtype=jnp.float64)
    kw = dict(optimizer=optimizer, loss="bce", activation=activation, epochs=epochs, batch_size=batch_size,
              key=jax.random.key(1))
    manual, manual_history = fit(params, x_train, y_train, grad="manual", **kw)
    autodiff, autodiff_history = fit(params, x_train, y_train, grad="autodiff", **kw)
    assert max_rel(manual, autodiff) < 1e-10
    np.testing.assert_allclose(manual_history["loss"], autodiff_history["loss"], rtol=1e-10)
    assert manual_history["accuracy"][-1] == 1.0


@pytest.mark.parametrize("n", [1000, 512, 100], ids=["remainder", "exact-chunks", "under-one-chunk"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_chunked_epoch_evaluation_equals_evaluate(x64, n, loss):
    """fit's per-epoch metrics may be evaluated in chunks (here of 256); the recombined means are exact."""
    from jaxmlp.evaluation import evaluate_in_chunks

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, 4)))
    y = jnp.asarray(rng.integers(0, 3, n), jnp.int32) if loss == "ce" else jnp.asarray(rng.standard_normal((n, 3)))
    params = init_mlp(jax.random.key(0), [4, 6, 3], dtype=jnp.float64)
    whole = evaluate(params, x, y, loss=loss, activation="tanh")
    chunked = evaluate_in_chunks(params, x, y, 256, loss=loss, activation="tanh")
    assert set(chunked) == set(whole)
    for k in whole:
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-12)


@pytest.mark.parametrize("kw, error, match", [
    (dict(optimizer="adam"), TypeError, "optimizer must be a GradientTransformation"),
    (dict(epochs_per_call=-1), ValueError, "epochs_per_call must be None or a positive int"),
    (dict(checkpoint_every=0, checkpoint_dir="unused"), ValueError, "checkpoint_every must be None or a positive"),
    (dict(checkpoint_dir="unused"), ValueError, "needs checkpoint_every"),
], ids=["optimizer-name", "epochs_per_call", "checkpoint_every", "dir-without-every"])
def test_fit_rejects_bad_options_before_compiling(kw, error, match):
    params = init_mlp(jax.random.key(0), [3, 4, 1])
    x, y = jnp.ones((8, 3)), jnp.ones((8, 1))
    with pytest.raises(error, match=match):
        fit(params, x, y, **{"optimizer": optim.sgd(0.1), "loss": "mse", **kw})


def test_fit_ensemble_rejects_an_unstacked_params():
    params = init_mlp(jax.random.key(0), [3, 3, 3])  # leaves share a leading size 3 = K by accident
    x, y = jnp.ones((8, 3)), jnp.ones((8, 3))
    with pytest.raises(ValueError, match="params_stack must be Layers stacked"):
        fit_ensemble(params, x, y, learning_rates=jnp.ones(3), loss="mse")


# --- checkpoints: non-dividing checkpoint_every, the callback, mismatches, keep, a mesh -------------------------


class Interrupt:
    """A callback that records ``(epoch, metrics)`` and raises KeyboardInterrupt once, after epoch ``at``."""

    def __init__(self, at=None):
        self.at, self.calls = at, []

    def __call__(self, epoch, metrics):
        self.calls.append((epoch, metrics))
        if epoch == self.at and [e for e, _ in self.calls].count(epoch) == 1:
            raise KeyboardInterrupt


def test_checkpoint_every_that_does_not_divide_epochs(problem32, tmp_path):
    """epochs=5, checkpoint_every=2: calls end at 2, 4 and 5, a checkpoint after each (the last two kept);
    interrupted after 2 and resumed, the run is bit-identical to the uninterrupted one, history included;
    each callback gets the metrics of its call's last epoch."""
    from jaxmlp import checkpoint

    kw = dict(optimizer=ADAM, epochs=5, checkpoint_every=2)
    interrupt, watch = Interrupt(at=2), Interrupt()
    with pytest.raises(KeyboardInterrupt):
        run(*problem32, checkpoint_dir=tmp_path / "a", callback=interrupt, **kw)
    resumed, resumed_history = run(*problem32, checkpoint_dir=tmp_path / "a", callback=interrupt, **kw)
    whole, history = run(*problem32, checkpoint_dir=tmp_path / "b", callback=watch, **kw)
    assert checkpoint.steps(tmp_path / "a") == checkpoint.steps(tmp_path / "b") == [4, 5]
    assert_trees_equal(resumed, whole)
    np.testing.assert_array_equal(resumed_history["loss"], history["loss"])
    np.testing.assert_array_equal(resumed_history["epoch"], np.arange(1, 6))
    assert [e for e, _ in interrupt.calls] == [e for e, _ in watch.calls] == [2, 4, 5]
    for epoch, metrics in watch.calls:
        assert metrics == {"loss": float(history["loss"][epoch - 1])}
    # A rerun of the finished run has nothing left to train: the last checkpoint is epoch 5's.
    again, again_history = run(*problem32, checkpoint_dir=tmp_path / "b", **kw)
    assert_trees_equal(again, whole)
    np.testing.assert_array_equal(again_history["loss"], history["loss"])


@pytest.mark.parametrize("change, match", [
    (dict(optimizer=SGD), r"optimizer state: the checkpoint holds a AdamState .* this run a EmptyState"),
    (dict(sizes=(3, 6, 1)), r"params: \[0\]\.W is \(5, 3\) float32 in the checkpoint but \(6, 3\) float32 in this run"),
], ids=["another-optimizer", "another-architecture"])
def test_resume_refuses_another_run_saying_what_differs(change, match, problem32, tmp_path):
    params, x, y = problem32
    run(params, x, y, optimizer=ADAM, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=2)
    if "sizes" in change:
        params = init_mlp(jax.random.key(0), change["sizes"], init="xavier")
    with pytest.raises(ValueError, match=match) as caught:
        run(params, x, y, optimizer=change.get("optimizer", ADAM), epochs=4, checkpoint_dir=tmp_path,
            checkpoint_every=2)
    assert f"clear {str(tmp_path)!r}" in str(caught.value)


def test_resume_refuses_a_checkpoint_past_epochs(problem32, tmp_path):
    """Asking for fewer epochs than the directory already holds would hand back the later parameters
    with a history longer than asked for."""
    run(*problem32, optimizer=ADAM, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"checkpoint of epoch 2, past epochs=1: pass epochs >= 2"):
        run(*problem32, optimizer=ADAM, epochs=1, checkpoint_dir=tmp_path, checkpoint_every=1)


def test_checkpoint_save_refuses_keep_0_and_writes_nothing(tmp_path):
    from jaxmlp import checkpoint

    with pytest.raises(ValueError, match="keep must be >= 1"):
        checkpoint.save(tmp_path / "ckpt", 1, (jnp.ones(3),), keep=0)
    assert not (tmp_path / "ckpt").exists()


MESH_RESUME = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh
import chex
import jaxmlp
from jaxmlp import fit, init_mlp, optim

jax.config.update("jax_numpy_rank_promotion", "raise")
x = jax.random.normal(jax.random.key(1), (32, 4))
y = jax.random.normal(jax.random.key(2), (32, 1))
params = init_mlp(jax.random.key(0), [4, 8, 1])
mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
kw = dict(optimizer=optim.adam(1e-2), loss="mse", epochs=4, batch_size=8, key=jax.random.key(3), mesh=mesh,
          checkpoint_every=2)

def interrupt(epoch, metrics):
    if epoch == 2:
        raise KeyboardInterrupt

try:
    fit(params, x, y, checkpoint_dir=sys.argv[1] + "/a", callback=interrupt, **kw)
except KeyboardInterrupt:
    pass
resumed, resumed_history = fit(params, x, y, checkpoint_dir=sys.argv[1] + "/a", **kw)
whole, history = fit(params, x, y, checkpoint_dir=sys.argv[1] + "/b", **kw)
chex.assert_trees_all_equal(resumed, whole, strict=True)
np.testing.assert_array_equal(resumed_history["loss"], history["loss"])
assert all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
           for leaf in jax.tree.leaves(resumed)), [leaf.sharding for leaf in jax.tree.leaves(resumed)]

# fit_ensemble over a "model" axis: 4 models on 4 devices, per-model shuffles, a sweep of learning rates.
stack = jax.vmap(lambda k: init_mlp(k, [4, 8, 1]))(jax.random.split(jax.random.key(5), 4))
kw = dict(learning_rates=jnp.asarray([1e-3, 3e-3, 1e-2, 3e-2]), loss="mse", epochs=4, batch_size=8,
          key=jax.random.key(3), shuffle="per_model", mesh=Mesh(np.array(jax.devices()[:4]), ("model",)),
          checkpoint_every=2)
try:
    jaxmlp.fit_ensemble(stack, x, y, checkpoint_dir=sys.argv[1] + "/c", callback=interrupt, **kw)
except KeyboardInterrupt:
    pass
resumed, resumed_history = jaxmlp.fit_ensemble(stack, x, y, checkpoint_dir=sys.argv[1] + "/c", **kw)
whole, history = jaxmlp.fit_ensemble(stack, x, y, checkpoint_dir=sys.argv[1] + "/d", **kw)
chex.assert_trees_all_equal(resumed, whole, strict=True)
np.testing.assert_array_equal(resumed_history["loss"], history["loss"])
assert all(not leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
           for leaf in jax.tree.leaves(resumed)), [leaf.sharding for leaf in jax.tree.leaves(resumed)]
print("ok")
"""


@pytest.mark.slow
def test_resume_under_a_mesh_is_bit_identical(tmp_path):
    """fit(mesh=) over a "data" axis and fit_ensemble(mesh=) over a "model" axis, 4 of 8 forced CPU devices (a
    subprocess, as tests/test_sharding.py): interrupted after epoch 2 and resumed, each equals its
    uninterrupted sharded run bit for bit and stays on the mesh."""
    import os
    import subprocess
    import sys

    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = {**os.environ, "XLA_FLAGS": " ".join(flags + ["--xla_force_host_platform_device_count=8"]),
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", MESH_RESUME, str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr[-4000:]
