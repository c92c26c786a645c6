"""fit: against hand-written reference loops, autodiff and optax; divergence; metrics="minibatch"; bad
arguments; and acceptance on real data.

The tests share the small problem of ``_training.py`` (fixtures ``problem32`` and ``sgd32``) and its
optimizers, so that most fits reuse a program another test compiled. The ensemble's tests are in
``test_ensemble.py``, evaluate's in ``test_evaluation.py``, the host loop's (calls, callback, checkpoints,
resume) in ``test_loop.py``, and the compile counts in ``test_perf.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _training import (
    ACTIVATION,
    ADAM,
    BATCH,
    DIVERGING,
    EPOCHS,
    LOSS,
    SEED,
    SGD,
    TOL,
    N,
    Unhashable,
    make_problem,
    run,
)
from _trees import assert_trees_equal, max_rel

from jaxmlp import TrainingDiverged, backward, datasets, evaluate, fit, forward, init_mlp, loss_fn, optim
from jaxmlp.shuffle import permutation
from jaxmlp.types import Layer


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
    """An optimizer that cannot be a static jit argument still trains, as the hashable one does (that it gets
    its own, uncached, program is test_perf.py's)."""
    trained, _ = run(*problem32, optimizer=Unhashable(SGD))
    assert max_rel(trained, sgd32[0]) < 1e-6


def test_adamw_and_a_schedule_train_as_optax_does(x64):
    """jaxmlp's AdamW (Nesterov) with an optax schedule inside fit: optax's AdamW's parameters."""
    params, x, y = make_problem(jnp.float64, n=16)
    schedule = optax.cosine_decay_schedule(1e-2, 12)  # 3 epochs of 4 steps
    trained, history = run(params, x, y, optimizer=optim.adamw(schedule, weight_decay=0.1, nesterov=True))
    expected, _ = run(params, x, y, optimizer=optax.adamw(schedule, weight_decay=0.1, nesterov=True))
    assert history["loss"].shape == (EPOCHS,)
    assert max_rel(trained, expected) <= 1e-12
    assert max_rel(trained, params) > 1e-3  # it trained


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


def test_minibatch_metrics_full_batch_is_the_loss_before_each_step(x64):
    params, x, y = make_problem(jnp.float64)
    trained, history = run(params, x, y, batch_size=None, epochs=2, metrics="minibatch")
    after_one, _ = run(params, x, y, batch_size=None, epochs=1)
    expected = [loss_fn(p, x, y, loss=LOSS, activation=ACTIVATION) for p in (params, after_one)]
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-12)


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


@pytest.mark.parametrize("kw, error, match", [
    (dict(optimizer="adam"), TypeError, "optimizer must be a GradientTransformation"),
    (dict(epochs_per_call=-1), ValueError, "epochs_per_call must be None or a positive int"),
    (dict(checkpoint_every=0, checkpoint_dir="unused"), ValueError, "checkpoint_every must be None or a positive"),
    (dict(checkpoint_dir="unused"), ValueError, "needs checkpoint_every"),
    (dict(key=0), TypeError, r"key must be a jax.random key.*got int: 0"),
    (dict(params=(Layer(jnp.full((1, 3), jnp.nan), jnp.zeros(1)),)), ValueError,
     r"params\[0\]\.W holds 3 non-finite values.*Start from finite parameters"),
    (dict(key=jax.random.split(jax.random.key(0), 3)), TypeError, r"key must be .*shape \(3,\)"),
], ids=["optimizer-name", "epochs_per_call", "checkpoint_every", "dir-without-every", "key-int", "key-split",
        "params-nan"])
def test_fit_rejects_bad_options_before_compiling(kw, error, match):
    params = init_mlp(jax.random.key(0), [3, 4, 1])
    x, y = jnp.ones((8, 3)), jnp.ones((8, 1))
    with pytest.raises(error, match=match):
        fit(**{"params": params, "x": x, "y": y, "optimizer": optim.sgd(0.1), "loss": "mse", **kw})


def test_fit_takes_nested_lists_as_loss_fn_does():
    params = init_mlp(jax.random.key(0), [2, 3, 1])
    x, y = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [[1.0], [1.0], [0.0], [0.0]]
    kw = dict(optimizer=optim.sgd(0.1), loss="bce", epochs=2)
    _, from_lists = fit(params, x, y, **kw)
    _, from_arrays = fit(params, jnp.asarray(x), jnp.asarray(y), **kw)
    np.testing.assert_array_equal(from_lists["loss"], from_arrays["loss"])


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
