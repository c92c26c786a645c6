"""jaxmlp.loop, the training loop that fit and fit_ensemble share: how the epochs are cut into compiled calls,
the history's epoch numbers, the last finite parameters the epochs' scan keeps, and the host loop's
checkpoints, callback and resume, run through fit (fit_ensemble's five-part checkpoints are
``test_ensemble.py``'s; the checkpoint files themselves ``test_checkpoint.py``'s; resume under a mesh
``test_sharding.py``'s).

The runs use the small problem of ``_training.py`` (fixture ``problem32``) with Adam, so that they share
compiled programs with one another and with the rest of the suite.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _training import ADAM, SEED, SGD, Interrupt, run
from _trees import assert_trees_equal

from jaxmlp import checkpoint, fit, init_mlp, loop, optim

# --- the calls: epochs per call, cut at every checkpoint ------------------------------------------------


@pytest.mark.parametrize("start, epochs, per_call, every, expected", [
    (0, 5, None, None, [(0, 5)]),
    (0, 5, None, 2, [(0, 2), (2, 2), (4, 1)]),
    (0, 5, 2, None, [(0, 2), (2, 2), (4, 1)]),
    (0, 7, 2, 3, [(0, 2), (2, 1), (3, 2), (5, 1), (6, 1)]),
    (4, 5, None, 2, [(4, 1)]),
    (3, 7, None, 2, [(3, 1), (4, 2), (6, 1)]),
    (5, 5, None, 2, []),
    (0, 0, None, None, []),
], ids=["one-call", "every-2-of-5", "per-call-2-of-5", "per-call-2-every-3", "resumed-at-4", "resumed-off-the-grid",
        "finished", "no-epochs"])
def test_calls_end_at_every_checkpoint_and_after_per_call_epochs(start, epochs, per_call, every, expected):
    """``(first epoch, epochs)`` of each compiled call: at most ``epochs_per_call`` epochs (default: all that
    are left), cut at every multiple of ``checkpoint_every``, from the resumed epoch ``start`` to the last."""
    assert list(loop.calls(start, epochs, per_call, every)) == expected


# --- the history: epochs 1..E, a resumed run's included --------------------------------------------------


def test_history_numbers_the_epochs_of_the_checkpoint_and_of_this_run():
    chunks = [{"loss": np.array([5.0, 6.0]), "accuracy": np.array([0.5, 0.6])}, {"loss": np.array([7.0]),
                                                                                "accuracy": np.array([0.7])}]
    past = {"loss": np.array([1.0, 2.0, 3.0, 4.0]), "accuracy": np.array([0.1, 0.2, 0.3, 0.4])}
    resumed = loop.history(past, chunks, start=4)
    np.testing.assert_array_equal(resumed["epoch"], np.arange(1, 8))
    np.testing.assert_array_equal(resumed["loss"], np.arange(1.0, 8.0))
    np.testing.assert_array_equal(resumed["accuracy"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    fresh = loop.history({}, chunks)
    np.testing.assert_array_equal(fresh["epoch"], [1, 2, 3])
    # A checkpoint without history (an older jaxmlp's): the epochs this run trained, numbered from it.
    np.testing.assert_array_equal(loop.history({}, chunks, start=4)["epoch"], [5, 6, 7])
    nothing = loop.history({}, [])
    assert set(nothing) == {"loss", "epoch"} and nothing["loss"].shape == nothing["epoch"].shape == (0,)


# --- the epochs' scan: the last finite parameters, per model ---------------------------------------------


@pytest.mark.parametrize("models", [None, 2], ids=["one-model", "two-models"])
def test_scan_epochs_keeps_the_parameters_before_the_first_non_finite_epoch(models):
    """Epoch e adds 1 to every parameter; the last model's epoch 3 is not finite, and its later ones are:
    its flag stays False and its ``good`` parameters stay those after epoch 2, while the others (and
    ``params`` itself) train on."""
    shape = () if models is None else (models,)
    bad = jnp.asarray(True) if models is None else jnp.arange(models) == models - 1  # which model has epoch 3 bad

    def epoch(params, count, key):
        count = count + 1
        finite = ~((count == 3) & bad)
        return params + 1, count, key, {"loss": jnp.zeros(shape)}, finite

    zeros = jnp.zeros(shape + (2,))
    carry = loop.Carry(zeros, jnp.int32(0), jax.random.key(0), zeros, jnp.ones(shape, bool))
    carry, metrics, ok = loop.scan_epochs(epoch, carry, 5)
    assert ok.shape == (5,) + shape and metrics["loss"].shape == (5,) + shape
    np.testing.assert_array_equal(carry.params, zeros + 5)
    expected_ok = np.array([True, True, False, False, False])
    if models is None:
        np.testing.assert_array_equal(ok, expected_ok)
        np.testing.assert_array_equal(carry.good, zeros + 2)
    else:
        np.testing.assert_array_equal(ok[:, -1], expected_ok)
        assert ok[:, :-1].all() and carry.ok[:-1].all() and not carry.ok[-1]
        np.testing.assert_array_equal(carry.good[:-1], zeros[:-1] + 5)
        np.testing.assert_array_equal(carry.good[-1], zeros[-1] + 2)


# --- checkpoints, callback and resume, through fit --------------------------------------------------------

RESUME_EPOCHS, EVERY = 6, 2


@pytest.fixture(scope="module")
def runs(problem32, tmp_path_factory):
    """Six epochs of minibatch Adam, run five ways; returns {name: (params, history)} and the directories."""

    def train(**kw):
        return run(*problem32, optimizer=ADAM, epochs=RESUME_EPOCHS, **kw)

    out, dirs = {}, {name: tmp_path_factory.mktemp(name) for name in ("interrupted", "uninterrupted")}
    callback = Interrupt(at=4)
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint_dir=dirs["interrupted"], checkpoint_every=EVERY, callback=callback)
    out["steps_at_interrupt"] = checkpoint.steps(dirs["interrupted"])
    out["resumed"] = train(checkpoint_dir=dirs["interrupted"], checkpoint_every=EVERY, callback=callback)
    out["epochs_called_back"] = callback.epochs
    out["rerun_finished"] = train(checkpoint_dir=dirs["interrupted"], checkpoint_every=EVERY, callback=callback)
    out["uninterrupted"] = train(checkpoint_dir=dirs["uninterrupted"], checkpoint_every=EVERY)
    out["chunked"] = train(epochs_per_call=EVERY)
    out["single_program"] = train()
    return out, dirs


def test_interrupt_after_epoch_4_leaves_its_checkpoint(runs):
    """The callback runs after the checkpoint: interrupting at epoch 4 keeps epochs 2 and 4 (keep=2)."""
    out, _ = runs
    assert out["steps_at_interrupt"] == [2, 4]


def test_resumed_run_is_bit_identical_to_uninterrupted_runs(runs):
    out, dirs = runs
    resumed, history = out["resumed"]
    np.testing.assert_array_equal(history["epoch"], np.arange(1, RESUME_EPOCHS + 1))  # 1-4 from the checkpoint
    assert out["epochs_called_back"] == [2, 4, 6]
    assert_trees_equal(resumed, out["uninterrupted"][0])
    assert_trees_equal(resumed, out["chunked"][0])
    np.testing.assert_array_equal(history["loss"], out["chunked"][1]["loss"])
    np.testing.assert_array_equal(out["uninterrupted"][1]["loss"], out["chunked"][1]["loss"])
    assert checkpoint.steps(dirs["interrupted"]) == checkpoint.steps(dirs["uninterrupted"]) == [4, 6]


def test_chunked_run_matches_a_single_program_to_rounding(runs):
    """Three calls of two epochs against one call of six: the same arithmetic in two compiled programs."""
    out, _ = runs
    for chunked, single in zip(jax.tree.leaves(out["chunked"][0]), jax.tree.leaves(out["single_program"][0])):
        np.testing.assert_allclose(chunked, single, rtol=1e-6, atol=1e-7)


def test_rerun_of_a_finished_run_returns_its_final_parameters(runs):
    out, _ = runs
    params, history = out["rerun_finished"]
    assert_trees_equal(params, out["resumed"][0])
    np.testing.assert_array_equal(history["loss"], out["resumed"][1]["loss"])  # the whole history, from the checkpoint


def test_a_checkpoint_without_history_resumes_numbering_epochs_from_it(runs, problem32, tmp_path):
    """A checkpoint an older jaxmlp wrote (state only, no history): the resumed run returns the epochs it ran,
    numbered from the checkpoint's, and the parameters of the uninterrupted run."""
    out, dirs = runs
    params = problem32[0]
    template = (params, ADAM.init(params), jax.random.key_data(jax.random.key(SEED)))
    saved = checkpoint.load(dirs["uninterrupted"], 4, template)
    checkpoint.save(tmp_path, 4, saved)  # no history=
    assert checkpoint.load_history(tmp_path, 4) == {}
    resumed, history = run(*problem32, optimizer=ADAM, epochs=RESUME_EPOCHS, checkpoint_dir=tmp_path,
                           checkpoint_every=EVERY)
    np.testing.assert_array_equal(history["epoch"], [5, 6])
    np.testing.assert_array_equal(history["loss"], out["uninterrupted"][1]["loss"][4:])
    assert_trees_equal(resumed, out["uninterrupted"][0])


def test_resume_keeps_a_non_default_key_implementation(problem32, tmp_path):
    params, x, _ = problem32
    kw = dict(optimizer=ADAM, epochs=4, key=jax.random.key(SEED, impl="rbg"))
    with pytest.raises(KeyboardInterrupt):
        run(params, x, x[:, :1], checkpoint_dir=tmp_path, checkpoint_every=2, callback=Interrupt(at=2), **kw)
    resumed, _ = run(params, x, x[:, :1], checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    chunked, _ = run(params, x, x[:, :1], epochs_per_call=2, **kw)
    assert_trees_equal(resumed, chunked)


def test_checkpoint_every_that_does_not_divide_epochs(problem32, tmp_path):
    """epochs=5, checkpoint_every=2: calls end at 2, 4 and 5, a checkpoint after each (the last two kept);
    interrupted after 2 and resumed, the run is bit-identical to the uninterrupted one, history included;
    each callback gets the metrics of its call's last epoch, as floats."""
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
    assert interrupt.epochs == watch.epochs == [2, 4, 5]
    for epoch, metrics in watch.calls:
        assert metrics == {"loss": float(history["loss"][epoch - 1])} and type(metrics["loss"]) is float
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


def test_resume_refuses_the_checkpoint_of_a_run_with_other_metrics(tmp_path):
    """A ce run's checkpoint (loss and accuracy) resumed by an mse run (loss only): a ValueError saying so,
    where the histories' merge raised KeyError('accuracy'); nothing is overwritten."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((32, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, 32), jnp.int32)
    params = init_mlp(jax.random.key(0), [4, 8, 3])
    kw = dict(optimizer=optim.sgd(0.1), checkpoint_dir=tmp_path, checkpoint_every=1)
    fit(params, x, labels, loss="ce", epochs=2, **kw)
    with pytest.raises(ValueError, match=r"holds the history of \['accuracy', 'loss'\], but this run reports "
                                         r"\['loss'\]: it is the checkpoint of a run with another loss"):
        fit(params, x, jax.nn.one_hot(labels, 3), loss="mse", epochs=4, **kw)
    assert checkpoint.steps(tmp_path) == [1, 2]


def test_resume_refuses_a_checkpoint_past_epochs(problem32, tmp_path):
    """Asking for fewer epochs than the directory already holds would hand back the later parameters
    with a history longer than asked for."""
    run(*problem32, optimizer=ADAM, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"checkpoint of epoch 2, past epochs=1: pass epochs >= 2"):
        run(*problem32, optimizer=ADAM, epochs=1, checkpoint_dir=tmp_path, checkpoint_every=1)
