"""Atomic checkpoints (save / load / steps / keep), and fit resuming from them bit-identically."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _trees import assert_trees_equal

from jaxmlp import checkpoint, fit, init_mlp, optim
from jaxmlp.optim import AdamState
from jaxmlp.types import Layer


def make_state(seed=0):
    """A training state as fit writes it: (params, Adam state, key data); float64 and int leaves included."""
    rng = np.random.default_rng(seed)
    params = (Layer(rng.standard_normal((4, 3)), rng.standard_normal(4)),
              Layer(rng.standard_normal((1, 4)).astype(np.float32), rng.standard_normal(1).astype(np.float32)))
    opt_state = AdamState(count=np.int32(seed + 5), mu=jax.tree.map(np.ones_like, params),
                          nu=jax.tree.map(np.zeros_like, params))
    return params, opt_state, np.asarray(jax.random.key_data(jax.random.key(seed)))


# --- save / load / steps --------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    state = make_state()
    path = checkpoint.save(tmp_path, 3, state)
    assert os.path.basename(path) == "ckpt_00000003.npz"
    assert checkpoint.steps(tmp_path) == [3]
    assert_trees_equal(checkpoint.load(tmp_path, 3, make_state(seed=1)), state)


def test_steps_lists_complete_checkpoints_oldest_first(tmp_path):
    assert checkpoint.steps(tmp_path / "missing") == []
    for step in (10, 2, 7):
        checkpoint.save(tmp_path, step, make_state(), keep=10)
    (tmp_path / ".tmp_ckpt_abc.npz").write_bytes(b"torn")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert checkpoint.steps(tmp_path) == [2, 7, 10]


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_prunes_the_oldest(keep, tmp_path):
    for step in range(1, 6):
        checkpoint.save(tmp_path, step, make_state(step), keep=keep)
    assert checkpoint.steps(tmp_path) == list(range(6 - keep, 6))
    assert sorted(os.listdir(tmp_path)) == [f"ckpt_{s:08d}.npz" for s in range(6 - keep, 6)]
    assert_trees_equal(checkpoint.load(tmp_path, 5, make_state()), make_state(5))


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_interrupted_write_leaves_the_previous_checkpoint_only(error, tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 1, make_state(1))

    def torn_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temporary file, then it fails
        raise error

    monkeypatch.setattr(np, "savez", torn_savez)
    with pytest.raises(type(error)):
        checkpoint.save(tmp_path, 2, make_state(2))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt_00000001.npz"]
    assert checkpoint.steps(tmp_path) == [1]
    assert_trees_equal(checkpoint.load(tmp_path, 1, make_state()), make_state(1))


def test_crash_mid_write_never_leaves_a_torn_checkpoint(tmp_path):
    """A process killed while writing (no cleanup runs): the new step is absent, the previous one loads."""
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_checkpoint import make_state
        from jaxmlp import checkpoint

        checkpoint.save({str(tmp_path)!r}, 1, make_state(1))

        def crash(file, **arrays):
            file.write(b"PK\\x03\\x04 half a zip file")
            file.flush()
            os._exit(17)

        np.savez = crash
        checkpoint.save({str(tmp_path)!r}, 2, make_state(2))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 17, result.stderr
    assert checkpoint.steps(tmp_path) == [1]
    assert "ckpt_00000002.npz" not in os.listdir(tmp_path)  # a crash may leave a .tmp_ckpt_ file, never this
    assert_trees_equal(checkpoint.load(tmp_path, 1, make_state()), make_state(1))


@pytest.mark.parametrize(
    "template, match",
    [
        (lambda s: (s[0], s[1]), "holds 14 arrays but the training state has 13"),
        (lambda s: (s[0][:1], s[1], s[2]), "holds 14 arrays but the training state has 12"),
        (lambda s: ((Layer(s[0][0].W.T, s[0][0].b), s[0][1]), s[1], s[2]), r"array 0 has shape \(4, 3\)"),
        (lambda s: ((Layer(s[0][0].W.astype(np.float32), s[0][0].b), s[0][1]), s[1], s[2]), "dtype float64"),
    ],
    ids=["fewer-leaves", "fewer-layers", "shape", "dtype"],
)
def test_load_rejects_a_mismatched_template(template, match, tmp_path):
    checkpoint.save(tmp_path, 1, make_state())
    with pytest.raises(ValueError, match=match):
        checkpoint.load(tmp_path, 1, template(make_state()))


# --- resuming fit ---------------------------------------------------------------------------------------

ADAM = optim.adam(1e-2)  # one object for every run below: they share compiled programs
EPOCHS, EVERY = 6, 2


class Interrupt:
    """A progress callback that raises KeyboardInterrupt once, after epoch ``at`` (and its checkpoint)."""

    def __init__(self, at):
        self.at, self.seen = at, []

    def __call__(self, epoch, metrics):
        self.seen.append(epoch)
        if epoch == self.at and self.seen.count(epoch) == 1:  # once: a stray one would stop pytest itself
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six epochs of minibatch Adam, run five ways; returns {name: (params, history)} and the directories."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((10, 3)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((10, 1)), jnp.float32)
    params = init_mlp(jax.random.key(0), [3, 5, 1], init="xavier")

    def train(**kw):
        return fit(params, x, y, optimizer=ADAM, loss="mse", activation="tanh", epochs=EPOCHS, batch_size=4,
                   key=jax.random.key(7), **kw)

    out, dirs = {}, {name: tmp_path_factory.mktemp(name) for name in ("interrupted", "uninterrupted")}
    callback = Interrupt(at=4)
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint_dir=dirs["interrupted"], checkpoint_every=EVERY, callback=callback)
    out["steps_at_interrupt"] = checkpoint.steps(dirs["interrupted"])
    out["resumed"] = train(checkpoint_dir=dirs["interrupted"], checkpoint_every=EVERY, callback=callback)
    out["epochs_called_back"] = callback.seen
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
    np.testing.assert_array_equal(history["epoch"], np.arange(1, EPOCHS + 1))  # epochs 1-4 from the checkpoint
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


def test_resume_keeps_a_non_default_key_implementation(tmp_path):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((10, 3)), jnp.float32)
    params = init_mlp(jax.random.key(0), [3, 5, 1], init="xavier")
    kw = dict(optimizer=ADAM, loss="mse", activation="tanh", epochs=4, batch_size=4,
              key=jax.random.key(7, impl="rbg"))
    with pytest.raises(KeyboardInterrupt):
        fit(params, x, x[:, :1], checkpoint_dir=tmp_path, checkpoint_every=2, callback=Interrupt(at=2), **kw)
    resumed, _ = fit(params, x, x[:, :1], checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    chunked, _ = fit(params, x, x[:, :1], epochs_per_call=2, **kw)
    assert_trees_equal(resumed, chunked)


def test_a_checkpoint_without_history_resumes_numbering_epochs_from_it(runs, tmp_path):
    """A checkpoint an older jaxmlp wrote (state only, no history): the resumed run returns the epochs it ran,
    numbered from the checkpoint's, and the parameters of the uninterrupted run."""
    out, dirs = runs
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((10, 3)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((10, 1)), jnp.float32)
    params = init_mlp(jax.random.key(0), [3, 5, 1], init="xavier")
    kw = dict(optimizer=ADAM, loss="mse", activation="tanh", epochs=EPOCHS, batch_size=4, key=jax.random.key(7),
              checkpoint_every=EVERY)
    template = (params, ADAM.init(params), jax.random.key_data(jax.random.key(7)))
    saved = checkpoint.load(dirs["uninterrupted"], 4, template)
    checkpoint.save(tmp_path, 4, saved)  # no history=
    assert checkpoint.load_history(tmp_path, 4) == {}
    resumed, history = fit(params, x, y, checkpoint_dir=tmp_path, **kw)
    np.testing.assert_array_equal(history["epoch"], [5, 6])
    np.testing.assert_array_equal(history["loss"], out["uninterrupted"][1]["loss"][4:])
    assert_trees_equal(resumed, out["uninterrupted"][0])
