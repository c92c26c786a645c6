"""jaxmlp.evaluation: evaluate's loss and accuracy against the textbook formulas, the evaluation in chunks
of bounded memory against the whole-set one (alone, and as fit's and fit_ensemble's per-epoch metrics),
and the chunk size.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _training import ACTIVATION, BATCH, EPOCHS, LEARNING_RATES, LOSS, SEED, run, run_ensemble

from jaxmlp import evaluate, evaluation, fit_ensemble, forward, init_mlp
from jaxmlp.evaluation import evaluate_in_chunks


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


# --- evaluation in chunks ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1000, 512, 100], ids=["remainder", "exact-chunks", "under-one-chunk"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_chunked_epoch_evaluation_equals_evaluate(x64, n, loss):
    """fit's per-epoch metrics may be evaluated in chunks (here of 256); the recombined means are exact."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, 4)))
    y = jnp.asarray(rng.integers(0, 3, n), jnp.int32) if loss == "ce" else jnp.asarray(rng.standard_normal((n, 3)))
    params = init_mlp(jax.random.key(0), [4, 6, 3], dtype=jnp.float64)
    whole = evaluate(params, x, y, loss=loss, activation="tanh")
    chunked = evaluate_in_chunks(params, x, y, 256, loss=loss, activation="tanh")
    assert set(chunked) == set(whole)
    for k in whole:
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-12)


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


def test_chunk_size_bounds_the_activations_of_a_chunk():
    """CHUNK_BUDGET activations (numbers) per chunk, all layers of all models together, but never fewer
    examples than MIN_CHUNK."""
    shapes = lambda sizes: jax.eval_shape(lambda: init_mlp(jax.random.key(0), sizes))  # no compile: shapes only
    small = shapes([3, 5, 1])  # 9 activations an example
    assert evaluation.width(small) == 9
    assert evaluation.chunk_size(small) == evaluation.CHUNK_BUDGET // 9
    assert evaluation.chunk_size(small, 4) == evaluation.CHUNK_BUDGET // 36
    wide = shapes([64, 64, 32, 10])  # 170 activations an example
    assert evaluation.CHUNK_BUDGET // (4096 * 170) < evaluation.MIN_CHUNK
    assert evaluation.chunk_size(wide, 4096) == evaluation.MIN_CHUNK
