"""jaxmlp.checkpoint: atomic checkpoints (save / load / steps / keep), a template that does not match, a
crash mid-write, and the temporaries that killed writers leave behind (removed once their process is gone).

How fit and fit_ensemble resume from checkpoints is ``test_loop.py``'s and ``test_ensemble.py``'s.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _trees import assert_trees_equal

from jaxmlp import checkpoint
from jaxmlp.optim import AdamState
from jaxmlp.types import Layer

TESTS = os.path.dirname(os.path.abspath(__file__))


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
        sys.path.insert(0, {TESTS!r})
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
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp_ckpt_")]  # the torn file stays behind
    assert checkpoint.steps(tmp_path) == [1]
    assert os.listdir(tmp_path) == ["ckpt_00000001.npz"]  # never a ckpt_00000002.npz; the dead writer's temporary
    # is gone too, removed by steps()
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


def test_save_refuses_keep_0_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        checkpoint.save(tmp_path / "ckpt", 1, (jnp.ones(3),), keep=0)
    assert not (tmp_path / "ckpt").exists()


# --- temporaries of killed writers ----------------------------------------------------------------------


def exited_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("cleaner", ["save", "steps"])
def test_temporaries_of_exited_writers_of_this_host_are_removed(cleaner, tmp_path):
    """``.tmp_ckpt_<host>_<pid>_*.npz``: the next save or steps() removes it when its writer, a process of this
    host, has exited; it keeps those of live processes (this one; pid 1, init, always there), those of other
    hosts (whose processes it cannot see), and names it did not write."""
    checkpoint.save(tmp_path, 1, make_state(1))
    host, dead = checkpoint._host(), exited_pid()
    orphan = f".tmp_ckpt_{host}_{dead}_x.npz"
    kept = [f".tmp_ckpt_{host}_{os.getpid()}_x.npz", f".tmp_ckpt_{host}_1_x.npz",
            f".tmp_ckpt_{host}-elsewhere_{dead}_x.npz", ".tmp_ckpt_abc.npz",
            f".tmp_ckpt_{host}_{10**20}_x.npz"]  # no pid os.kill can take (OverflowError): not ours to remove
    for name in [orphan, *kept]:
        (tmp_path / name).write_bytes(b"torn")
    if cleaner == "save":
        checkpoint.save(tmp_path, 2, make_state(2))
        expected_steps = [1, 2]
    else:
        expected_steps = [1]
    assert checkpoint.steps(tmp_path) == expected_steps
    assert sorted(os.listdir(tmp_path)) == sorted(kept + [f"ckpt_{s:08d}.npz" for s in expected_steps])


# A fit with a checkpoint every epoch, as a child process (argv: directory, mode, result file). Mode "stall":
# its third checkpoint stops after its temporary is written, before the rename (the parent kills it there).
# Mode "resume": the same fit resumed to the end, then an uninterrupted one in another directory.
KILLED_FIT = """
import sys, time
import jax
import numpy as np
sys.path.insert(0, {tests!r})
from _training import ADAM, make_problem, run

directory, mode, out = sys.argv[1:]
if mode == "stall":
    savez, saves = np.savez, []

    def stalling_savez(file, **arrays):
        savez(file, **arrays)
        saves.append(file)
        if len(saves) == 3:
            time.sleep(300)

    np.savez = stalling_savez
params, x, y = make_problem()
called_back = []
kw = dict(optimizer=ADAM, epochs={epochs}, checkpoint_every=1)
resumed, history = run(params, x, y, checkpoint_dir=directory, callback=lambda e, m: called_back.append(e), **kw)
whole, whole_history = run(params, x, y, checkpoint_dir=directory + "-whole", **kw)
leaves = {{f"{{name}}_{{i}}": np.asarray(leaf) for name, params in (("resumed", resumed), ("whole", whole))
          for i, leaf in enumerate(jax.tree.leaves(params))}}
np.savez(out, loss=history["loss"], epoch=history["epoch"], whole_loss=whole_history["loss"],
         called_back=called_back, **leaves)
"""


@pytest.mark.slow
def test_a_fit_killed_mid_checkpoint_resumes_bit_identical_and_its_temporary_goes(tmp_path):
    """SIGKILL while fit writes its third checkpoint (epochs 1 and 2 saved): the temporary stays behind,
    named for this host and the killed process; the rerun resumes from epoch 2, removes it, and ends with the
    parameters and history of an uninterrupted run, bit for bit."""
    epochs, directory = 5, tmp_path / "ckpt"
    script = KILLED_FIT.format(tests=TESTS, epochs=epochs)
    child = subprocess.Popen([sys.executable, "-c", script, str(directory), "stall", str(tmp_path / "unused.npz")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    try:
        while True:  # a temporary beside the checkpoint of epoch 2: the third save is under way
            names = os.listdir(directory) if directory.is_dir() else []
            if "ckpt_00000002.npz" in names and any(n.startswith(".tmp_ckpt_") for n in names):
                break
            assert child.poll() is None, f"the child exited ({child.returncode}) first:\n{child.communicate()[0]}"
            assert time.monotonic() < deadline, "the child wrote no third checkpoint in time"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    names = sorted(os.listdir(directory))  # "." sorts first: the temporary, then the checkpoints
    assert names[1:] == ["ckpt_00000001.npz", "ckpt_00000002.npz"], names
    assert names[0].startswith(f".tmp_ckpt_{checkpoint._host()}_{child.pid}_"), names

    out = tmp_path / "resumed.npz"
    result = subprocess.run([sys.executable, "-c", script, str(directory), "resume", str(out)], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert not [n for n in os.listdir(directory) if n.startswith(".tmp_ckpt_")], os.listdir(directory)
    assert checkpoint.steps(directory) == [epochs - 1, epochs]
    with np.load(out) as f:
        np.testing.assert_array_equal(f["called_back"], [3, 4, 5])  # resumed from epoch 2
        np.testing.assert_array_equal(f["epoch"], np.arange(1, epochs + 1))
        np.testing.assert_array_equal(f["loss"], f["whole_loss"])
        pairs = [(f[f"resumed_{i}"], f[f"whole_{i}"]) for i in range(4)]  # W and b of two layers
        assert f"resumed_{len(pairs)}" not in f.files
    for resumed, whole in pairs:
        assert resumed.dtype == whole.dtype and resumed.shape == whole.shape and resumed.tobytes() == whole.tobytes()
