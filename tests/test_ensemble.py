"""fit_ensemble and evaluate_ensemble: each model against fit of that model alone, divergence of one model,
resume against an uninterrupted run, the averaged prediction against a formula, and the errors of bad sweeps.

Most tests share one small problem (K = 3 tanh MLPs [3, 5, 1], N = 10, MSE: :func:`problem`) and module-level
factories; the section "two models of the shared problem" trains K = 2 models of ``_training.py``'s problem,
in float64 and float32, against fit's runs of it. The HLO of the ensemble's program is checked in
``test_perf.py``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _training import (
    ACTIVATION,
    BATCH,
    EPOCHS,
    LEARNING_RATES,
    LOSS,
    SEED,
    SIZES,
    TOL,
    Interrupt,
    N,
    make_problem,
    model,
    run,
    run_ensemble,
)
from _trees import assert_trees_equal, max_rel

from jaxmlp import TrainingDiverged, evaluate, evaluate_ensemble, fit, fit_ensemble, init_mlp, optim

K = 3
RTOL = 1e-5  # float32, a few epochs: vmap may order some sums differently from a lone fit
LRS, MOMENTA = (0.05, 0.1, 0.2), (0.9, 0.5, 0.0)


def sgd_momentum(h):
    return optim.sgd(h["learning_rate"], h["momentum"])


def optax_adamw(h):
    return optax.adamw(h["learning_rate"], weight_decay=h["weight_decay"])


@functools.cache
def problem(n_out=1, loss=LOSS, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((N, SIZES[0])), jnp.float32)
    if loss == "ce":
        y = jnp.asarray(rng.integers(0, n_out, N), jnp.int32)
    elif loss == "bce":
        y = jnp.asarray(rng.integers(0, 2, (N, 1)), jnp.float32)
    else:
        y = jnp.asarray(rng.standard_normal((N, 1)), jnp.float32)
    sizes = SIZES[:-1] + (n_out,)
    stack = jax.vmap(lambda k: init_mlp(k, sizes, init="xavier"))(jax.random.split(jax.random.key(1), K))
    return stack, x, y


KW = dict(loss=LOSS, activation=ACTIVATION, epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(SEED))


def alone(stack, i, optimizer, **overrides):
    """fit of model i alone, configured as the ensemble."""
    _, x, y = problem()
    return fit(model(stack, i), x, y, optimizer=optimizer, **{**KW, **overrides})


def assert_models_equal_fits(trained, history, fits, rtol=RTOL):
    for i, (params, fit_history) in enumerate(fits):
        assert max_rel(model(trained, i), params) < rtol, f"model {i}"
        np.testing.assert_allclose(history["loss"][:, i], fit_history["loss"], rtol=rtol)


# --- (E1): the optimizer of each model ---------------------------------------------------------------------


@pytest.mark.parametrize("factory, hyperparams, lone", [
    (sgd_momentum, {"learning_rate": LRS, "momentum": MOMENTA}, lambda lr, m: optim.sgd(lr, m)),
    (optax_adamw, {"learning_rate": (1e-2, 3e-2, 1e-1), "weight_decay": (0.0, 0.1, 1.0)},
     lambda lr, wd: optax.adamw(lr, weight_decay=wd)),
], ids=["jaxmlp-sgd-momentum", "optax-adamw"])
def test_factory_with_two_hyperparameters_equals_separate_fits(factory, hyperparams, lone):
    stack, x, y = problem()
    trained, history = fit_ensemble(stack, x, y, optimizer=factory,
                                    hyperparams={k: jnp.asarray(v) for k, v in hyperparams.items()}, **KW)
    assert history["loss"].shape == (EPOCHS, K)
    np.testing.assert_array_equal(history["diverged"], np.zeros(K, bool))
    values = list(zip(*hyperparams.values()))
    assert_models_equal_fits(trained, history, [alone(stack, i, lone(*v)) for i, v in enumerate(values)])
    # The comparison can tell: model 0 with model 1's hyperparameters is another model.
    assert max_rel(model(trained, 0), alone(stack, 0, lone(*values[1]))[0]) > 1e-3


def test_one_optax_optimizer_for_every_model():
    stack, x, y = problem()
    optimizer = optax.sgd(0.1)
    trained, history = fit_ensemble(stack, x, y, optimizer=optimizer, **KW)
    assert_models_equal_fits(trained, history, [alone(stack, i, optimizer) for i in range(K)])


def test_learning_rates_is_adam_shorthand():
    stack, x, y = problem()
    lrs = jnp.asarray((1e-2, 3e-2, 1e-1))
    short = fit_ensemble(stack, x, y, learning_rates=lrs, **KW)
    long = fit_ensemble(stack, x, y, optimizer=lambda h: optim.adam(h["learning_rate"]),
                        hyperparams={"learning_rate": lrs}, **KW)
    assert_trees_equal(short[0], long[0])


# --- (E2): data order --------------------------------------------------------------------------------------


def test_per_model_shuffle_equals_fits_with_fold_in_keys():
    stack, x, y = problem()
    kw = {**KW, "optimizer": optim.sgd(0.1)}
    trained, history = fit_ensemble(stack, x, y, shuffle="per_model", **kw)
    key = KW["key"]
    fits = [alone(stack, i, optim.sgd(0.1), key=jax.random.fold_in(key, i)) for i in range(K)]
    assert_models_equal_fits(trained, history, fits)
    # The comparison can tell: the shared shuffle (every model on `key`'s minibatches) trains model 1 otherwise.
    shared, _ = fit_ensemble(stack, x, y, **kw)
    assert max_rel(model(trained, 1), model(shared, 1)) > 1e-3


# --- divergence, whatever the optimizer --------------------------------------------------------------------


def test_a_diverging_model_keeps_the_parameters_fit_stops_at():
    """SGD at 1e3 diverges; the ensemble keeps that model's last finite parameters, the ones fit's
    TrainingDiverged carries, and trains the others as fit does."""
    stack, x, y = problem()
    lrs, momenta = jnp.asarray((0.1, 1e3, 0.05)), jnp.asarray((0.5, 0.5, 0.9))
    trained, history = fit_ensemble(stack, x, y, optimizer=sgd_momentum,
                                    hyperparams={"learning_rate": lrs, "momentum": momenta}, **{**KW, "epochs": 6})
    np.testing.assert_array_equal(history["diverged"], [False, True, False])
    with pytest.raises(TrainingDiverged) as caught:
        alone(stack, 1, optim.sgd(1e3, 0.5), epochs=6)
    assert max_rel(model(trained, 1), caught.value.params) < RTOL
    assert not np.isfinite(history["loss"][caught.value.epoch - 1:, 1]).any()
    np.testing.assert_allclose(history["loss"][: caught.value.epoch - 1, 1], caught.value.history["loss"][:-1],
                               rtol=RTOL)
    healthy = alone(stack, 0, optim.sgd(0.1, 0.5), epochs=6)
    assert max_rel(model(trained, 0), healthy[0]) < RTOL


# --- other configurations, in-process ------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [dict(grad="autodiff"), dict(batch_size=None), dict(compute_dtype=jnp.bfloat16),
                                       dict(loss="ce"), dict(metrics="minibatch")],
                         ids=["autodiff", "full-batch", "bfloat16", "ce", "minibatch-metrics"])
def test_each_configuration_equals_fit_alone(overrides):
    n_out = 3 if overrides.get("loss") == "ce" else 1
    stack, x, y = problem(n_out, overrides.get("loss", LOSS))
    kw = {**KW, **overrides}
    trained, history = fit_ensemble(stack, x, y, optimizer=optim.adam(3e-2), **kw)
    fits = [fit(model(stack, i), x, y, optimizer=optim.adam(3e-2), **kw) for i in range(K)]
    # bfloat16 matmuls: to bfloat16 rounding (2^-8 relative), the other cases to float32 rounding.
    assert_models_equal_fits(trained, history, fits, rtol=2**-8 if "compute_dtype" in overrides else RTOL)
    if n_out == 3:
        np.testing.assert_allclose(history["accuracy"], np.stack([f[1]["accuracy"] for f in fits], axis=1))


# --- checkpoints, resume, epochs_per_call, callback ----------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """Five epochs, checkpoints every 2 (which does not divide 5), per-model shuffles and a diverging
    model: interrupted after epoch 2 and resumed; uninterrupted; and in one program."""
    stack, x, y = problem()
    hyper = {"learning_rate": jnp.asarray((0.1, 1e3, 0.05)), "momentum": jnp.asarray((0.5, 0.5, 0.9))}
    kw = dict(KW, epochs=5, optimizer=sgd_momentum, hyperparams=hyper, shuffle="per_model")
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("interrupted", "uninterrupted")}
    interrupt, watch = Interrupt(at=2), Interrupt()
    with pytest.raises(KeyboardInterrupt):
        fit_ensemble(stack, x, y, checkpoint_dir=dirs["interrupted"], checkpoint_every=2, callback=interrupt, **kw)
    out = dict(resumed=fit_ensemble(stack, x, y, checkpoint_dir=dirs["interrupted"], checkpoint_every=2,
                                    callback=interrupt, **kw),
               uninterrupted=fit_ensemble(stack, x, y, checkpoint_dir=dirs["uninterrupted"], checkpoint_every=2,
                                          callback=watch, **kw),
               single=fit_ensemble(stack, x, y, **kw),
               interrupt=interrupt, watch=watch, dirs=dirs)
    return out


def test_interrupted_sweep_resumes_bit_identical(sweep_runs):
    resumed, uninterrupted = sweep_runs["resumed"], sweep_runs["uninterrupted"]
    assert_trees_equal(resumed[0], uninterrupted[0])
    for k in ("loss", "epoch", "diverged"):
        np.testing.assert_array_equal(resumed[1][k], uninterrupted[1][k])
    np.testing.assert_array_equal(resumed[1]["epoch"], np.arange(1, 6))  # epochs 1-2 come from the checkpoint
    np.testing.assert_array_equal(resumed[1]["diverged"], [False, True, False])
    assert [e for e, _ in sweep_runs["interrupt"].calls] == [2, 4, 5]


def test_checkpoints_every_2_of_5_epochs_and_after_the_last(sweep_runs):
    from jaxmlp import checkpoint

    for d in sweep_runs["dirs"].values():
        assert checkpoint.steps(d) == [4, 5]
    assert [e for e, _ in sweep_runs["watch"].calls] == [2, 4, 5]


def test_calls_of_two_epochs_match_one_program_to_rounding(sweep_runs):
    (chunked, chunked_history), (single, single_history) = sweep_runs["uninterrupted"], sweep_runs["single"]
    healthy = np.array([0, 2])
    assert max_rel(jax.tree.map(lambda t: t[healthy], chunked), jax.tree.map(lambda t: t[healthy], single)) < RTOL
    np.testing.assert_allclose(chunked_history["loss"][:, healthy], single_history["loss"][:, healthy], rtol=RTOL)
    assert_trees_equal(model(chunked, 1), model(single, 1))  # the diverged model: its last finite parameters


def test_callback_gets_each_calls_last_epoch_per_model(sweep_runs):
    history = sweep_runs["uninterrupted"][1]
    for epoch, metrics in sweep_runs["watch"].calls:
        assert set(metrics) == {"loss", "diverged"}
        np.testing.assert_array_equal(metrics["loss"], history["loss"][epoch - 1])
        assert metrics["loss"].shape == metrics["diverged"].shape == (K,)
    assert not sweep_runs["watch"].calls[0][1]["diverged"][0]
    assert sweep_runs["watch"].calls[-1][1]["diverged"][1]


def test_resume_refuses_another_sweep_saying_what_differs(sweep_runs):
    stack, x, y = problem()
    directory = sweep_runs["dirs"]["uninterrupted"]
    with pytest.raises(ValueError, match=r"optimizer state.*AdamState.*clear") as caught:
        fit_ensemble(stack, x, y, learning_rates=jnp.full((K,), 1e-2), checkpoint_dir=directory, checkpoint_every=2,
                     **dict(KW, epochs=6))
    assert str(directory) in str(caught.value)


# --- evaluate_ensemble -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "bce", "ce"])
def test_evaluate_ensemble_against_evaluate_and_the_averaged_prediction(loss):
    n_out = 3 if loss == "ce" else 1
    stack, x, y = problem(n_out, loss, seed=1)
    metrics = evaluate_ensemble(stack, x, y, loss=loss, activation=ACTIVATION)
    for i in range(K):
        alone_metrics = evaluate(model(stack, i), x, y, loss=loss, activation=ACTIVATION)
        for k, v in alone_metrics.items():
            np.testing.assert_allclose(metrics[k][i], v, rtol=1e-6)
    assert metrics["loss"].shape == (K,)
    # The averaged prediction, by textbook formulas in float64: the mean of the models' probabilities.
    xx = np.asarray(x, np.float64)
    p64 = [[np.asarray(leaf, np.float64) for leaf in layer] for layer in stack]  # [(W, b), ...] stacked over K
    logits = np.stack([np.tanh(xx @ p64[0][0][i].T + p64[0][1][i]) @ p64[1][0][i].T + p64[1][1][i] for i in range(K)])
    yy = np.asarray(y, np.float64)
    if loss == "mse":
        mean = logits.mean(0)
        expected = np.mean((mean - yy) ** 2)
    elif loss == "bce":
        mean = (1 / (1 + np.exp(-logits))).mean(0)
        expected = -np.mean(yy * np.log(mean) + (1 - yy) * np.log(1 - mean))
        accuracy = np.mean((mean > 0.5) == (yy > 0.5))
    else:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        mean = (e / e.sum(-1, keepdims=True)).mean(0)
        labels = np.asarray(y)
        expected = -np.mean(np.log(mean[np.arange(N), labels]))
        accuracy = np.mean(mean.argmax(-1) == labels)
    np.testing.assert_allclose(metrics["ensemble_loss"], expected, rtol=1e-5)
    if loss != "mse":
        np.testing.assert_allclose(metrics["ensemble_accuracy"], accuracy)
    # The ensemble is not one of its models: its loss differs from every model's.
    assert np.min(np.abs(np.asarray(metrics["loss"]) - expected)) > 1e-4


# --- two models of the shared problem, float64 and float32 -------------------------------------------------

ENSEMBLE_OPTIMIZERS = tuple(optim.adam(lr) for lr in LEARNING_RATES)  # model i of run_ensemble, alone


def test_ensemble_model_equals_fit_alone(float_dtype):
    n_models = len(LEARNING_RATES)
    _, x, y = make_problem(float_dtype)
    stack, trained, history = run_ensemble(float_dtype, LEARNING_RATES)
    assert history["loss"].shape == (EPOCHS, n_models)
    np.testing.assert_array_equal(history["diverged"], np.zeros(n_models, bool))
    for i, optimizer in enumerate(ENSEMBLE_OPTIMIZERS):
        lone, lone_history = run(model(stack, i), x, y, optimizer=optimizer)
        model_i = model(trained, i)
        assert jax.tree.map(lambda a: a.dtype, model_i) == jax.tree.map(lambda a: a.dtype, lone)
        # To rounding, not bitwise: under vmap XLA may order some sums differently.
        assert max_rel(model_i, lone) < TOL[float_dtype], f"model {i}"
        np.testing.assert_allclose(history["loss"][:, i], lone_history["loss"], rtol=TOL[float_dtype])


def test_ensemble_model_that_diverges_does_not_stop_the_others():
    """Adam steps of 1e30 overflow the loss in epoch 1: that model keeps its initial parameters."""
    stack, trained, history = run_ensemble(jnp.float32, (LEARNING_RATES[0], 1e30))  # no new compile
    np.testing.assert_array_equal(history["diverged"], [False, True])
    assert not np.isfinite(history["loss"][:, 1]).any()
    assert_trees_equal(model(trained, 1), model(stack, 1))
    _, healthy, healthy_history = run_ensemble(jnp.float32, LEARNING_RATES)
    assert_trees_equal(model(trained, 0), model(healthy, 0))
    np.testing.assert_array_equal(history["loss"][:, 0], healthy_history["loss"][:, 0])


def test_ensemble_minibatch_metrics_equal_fit_alone():
    n_models = len(LEARNING_RATES)
    params, x, y = make_problem(jnp.float32)
    stack = jax.vmap(lambda k: init_mlp(k, SIZES, init="xavier"))(jax.random.split(jax.random.key(1), n_models))
    _, history = fit_ensemble(stack, x, y, learning_rates=LEARNING_RATES, loss=LOSS, activation=ACTIVATION,
                              epochs=EPOCHS, batch_size=BATCH, key=jax.random.key(SEED), metrics="minibatch")
    assert history["loss"].shape == (EPOCHS, n_models)
    for i, optimizer in enumerate(ENSEMBLE_OPTIMIZERS):
        _, lone_history = run(model(stack, i), x, y, optimizer=optimizer, metrics="minibatch")
        np.testing.assert_allclose(history["loss"][:, i], lone_history["loss"], rtol=TOL[jnp.float32])


def test_adamw_with_per_model_hyperparameters_equals_fit(x64):
    """Traced hyperparameters: model i trains as ``fit`` does with ``adamw(lr_i, weight_decay=wd_i)``."""
    params, x, y = make_problem(jnp.float64, n=16)
    stack = jax.tree.map(lambda p: jnp.stack([p, p]), params)
    hyper = {"learning_rate": jnp.array([1e-2, 3e-2]), "weight_decay": jnp.array([0.0, 0.5])}
    trained, _ = fit_ensemble(stack, x, y, optimizer=lambda h: optim.adamw(**h), hyperparams=hyper, **KW)
    alone_1, _ = run(params, x, y, optimizer=optim.adamw(3e-2, weight_decay=0.5))
    assert max_rel(model(trained, 1), alone_1) <= 1e-12
    assert max_rel(model(trained, 0), alone_1) > 1e-3  # the models differ


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, error, match", [
    (dict(optimizer=sgd_momentum, hyperparams={"learning_rate": LRS[:2], "momentum": MOMENTA}), ValueError,
     r"hyperparams\['learning_rate'\] must have shape \(K,\) = \(3,\).*got shape \(2,\)"),
    (dict(optimizer=sgd_momentum, hyperparams={"learning_rate": 0.1, "momentum": MOMENTA}), ValueError,
     r"hyperparams\['learning_rate'\] must have shape \(K,\)"),
    (dict(optimizer=lambda h: optim.sgd(h["learning_rate"]), hyperparams={"learning_rate": LRS, "momentum": MOMENTA}),
     ValueError, r"hyperparams \['momentum'\] are not used by the optimizer factory"),
    (dict(optimizer=lambda h: optax.adam(h["learning_rate"], b1=h["b1"]),
          hyperparams={"learning_rate": LRS, "b1": MOMENTA, "b2": MOMENTA}),
     ValueError, r"hyperparams \['b2'\] are not used"),
    (dict(optimizer=sgd_momentum, hyperparams={"learning_rate": LRS, "mom": MOMENTA}), ValueError,
     r"reads hyperparams\['momentum'\], but hyperparams has only \['learning_rate', 'mom'\]"),
    (dict(optimizer=optim.adam(1e-2), learning_rates=LRS), ValueError, "not both"),
    (dict(optimizer=lambda h: "adam", hyperparams={"learning_rate": LRS}), TypeError,
     "must return a GradientTransformation.*returned str"),
    (dict(optimizer=optim.adam(1e-2), hyperparams={"learning_rate": LRS}), ValueError,
     "hyperparams= needs optimizer= to be a callable"),
    (dict(optimizer=sgd_momentum), TypeError, "needs hyperparams="),
    (dict(), TypeError, "needs optimizer="),
    (dict(optimizer=optim.adam(1e-2), shuffle="each"), ValueError, "shuffle must be one of"),
    (dict(optimizer=optim.adam(1e-2), key="seed"), TypeError, "key must be a jax.random key"),
], ids=["hyperparams-too-short", "hyperparams-scalar", "unused-name", "unused-optax-name", "missing-name",
        "learning_rates-and-optimizer", "factory-returns-str", "hyperparams-without-factory",
        "factory-without-hyperparams", "no-optimizer", "shuffle", "key"])
def test_bad_sweeps_are_refused_before_compiling(kw, error, match):
    stack, x, y = problem()
    with pytest.raises(error, match=match):
        fit_ensemble(stack, x, y, loss=LOSS, **kw)


def test_a_model_starting_from_nan_is_refused_not_returned_as_its_last_finite_params():
    stack, x, y = problem()
    stack = (stack[0]._replace(b=stack[0].b.at[1, 0].set(jnp.nan)),) + tuple(stack[1:])
    with pytest.raises(ValueError, match=r"params\[0\]\.b holds 1 non-finite values.*row 1"):
        fit_ensemble(stack, x, y, loss=LOSS, optimizer=optim.adam(1e-2))


@pytest.mark.parametrize("learning_rates", [(1e-2,), (1e-2, 2e-2, 3e-2), 1e-2, ((1e-2,), (2e-2,))],
                         ids=["too-few", "too-many", "scalar", "column"])
def test_ensemble_rejects_learning_rates_of_the_wrong_shape(learning_rates, problem32):
    _, x, y = problem32
    stack = jax.vmap(lambda k: init_mlp(k, SIZES))(jax.random.split(jax.random.key(1), 2))
    with pytest.raises(ValueError, match=r"learning_rates must have shape \(K,\) = \(2,\)"):
        fit_ensemble(stack, x, y, learning_rates=learning_rates, loss=LOSS)


def test_fit_ensemble_rejects_a_bad_metrics_value(problem32):
    params, x, y = problem32
    stack = jax.tree.map(lambda leaf: leaf[None], params)
    with pytest.raises(ValueError, match="metrics must be one of"):
        fit_ensemble(stack, x, y, learning_rates=(0.1,), loss=LOSS, metrics="batch")


def test_fit_ensemble_rejects_an_unstacked_params():
    params = init_mlp(jax.random.key(0), [3, 3, 3])  # leaves share a leading size 3 = K by accident
    x, y = jnp.ones((8, 3)), jnp.ones((8, 3))
    with pytest.raises(ValueError, match="params_stack must be Layers stacked"):
        fit_ensemble(params, x, y, learning_rates=jnp.ones(3), loss="mse")
