"""The command line, run in-process: ``jaxmlp train`` outputs, bad arguments, and ``jaxmlp gradcheck``.

The CLI turns on jax's persistent compilation cache: here it goes to a temporary ``XDG_CACHE_HOME``, and
jax's cache settings are put back after each test (``test_cache.py`` tests the cache in fresh processes).
"""

import argparse
import contextlib
import io
import json
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_trees_equal

from jaxmlp import activations, backprop, cli, datasets, evaluate
from jaxmlp.types import Layer


@pytest.fixture(autouse=True)
def isolated_compilation_cache(tmp_path_factory, monkeypatch, jax_cache_settings):
    """The CLI's default cache goes to a temporary directory; jax's cache settings are restored after."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))

XOR = ["train", "--dataset", "xor", "--sizes", "2,8,1", "--activation", "tanh", "--epochs", "30",
       "--batch-size", "32"]


def run_main(argv):
    """``(exit code, stdout)`` of ``cli.main(argv)``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def xor_runs(tmp_path_factory):
    """``jaxmlp train`` on XOR with manual and with autodiff gradients: {grad: (code, stdout, out dir)}."""
    runs = {}
    for grad in ("manual", "autodiff"):
        out = tmp_path_factory.mktemp(grad)
        runs[grad] = (*run_main(XOR + ["--grad", grad, "--out", str(out)]), out)
    return runs


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_train_writes_metrics_curve_and_params(grad, xor_runs):
    code, stdout, out = xor_runs[grad]
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["loss_curve.png", "metrics.json", "params.npz"]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["grad"] == grad and metrics["sizes"] == [2, 8, 1]
    test_accuracy = [k for k in metrics if "test" in k and "acc" in k]
    assert test_accuracy == ["test_accuracy"]
    assert isinstance(metrics["test_accuracy"], float) and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] >= 0.97  # the [2, 8, 1] tanh MLP solves XOR
    assert len(metrics["history"]["loss"]) == 30
    assert f"test_accuracy {metrics['test_accuracy']:.4f}" in stdout


@pytest.mark.parametrize("grad", ["manual", "autodiff"])
def test_saved_params_reproduce_the_reported_test_metrics(grad, xor_runs):
    _, _, out = xor_runs[grad]
    metrics = json.loads((out / "metrics.json").read_text())
    with np.load(out / "params.npz") as f:
        assert sorted(f.files) == ["W1", "W2", "b1", "b2"]
        params = tuple(Layer(f[f"W{l}"], f[f"b{l}"]) for l in (1, 2))
    assert [layer.W.shape for layer in params] == [(8, 2), (1, 8)]
    _, _, x_test, y_test = datasets.load("xor", seed=0)
    test = evaluate(params, x_test, y_test, loss="bce", activation="tanh")
    assert float(test["accuracy"]) == metrics["test_accuracy"]
    np.testing.assert_allclose(float(test["loss"]), metrics["test_loss"], rtol=1e-5)


def test_manual_and_autodiff_runs_agree(xor_runs):
    metrics = {g: json.loads((xor_runs[g][2] / "metrics.json").read_text()) for g in xor_runs}
    np.testing.assert_allclose(metrics["manual"]["history"]["loss"], metrics["autodiff"]["history"]["loss"],
                               rtol=1e-4)


@pytest.mark.parametrize(
    "sizes, match",
    [
        ("3,8,1", "n_in = 2"),
        ("2,8,2", "n_out = 1"),
        ("2,x,1", "comma-separated ints"),
        ("2,0,1", "positive widths"),
    ],
    ids=["wrong-n_in", "wrong-n_out", "not-an-int", "zero-width"],
)
def test_bad_sizes_exit_nonzero_with_a_message(sizes, match, tmp_path, capsys):
    argv = ["train", "--dataset", "xor", "--sizes", sizes, "--epochs", "1", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        run_main(argv)
    code = info.value.code
    assert code not in (0, None)
    # A usage error exits 2 with argparse's message on stderr; a dataset mismatch exits with its message.
    message = code if isinstance(code, str) else capsys.readouterr().err
    assert match in message and sizes in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_gradcheck_passes_every_combination(capsys):
    start = time.perf_counter()
    assert cli.main(["gradcheck"]) == 0
    elapsed = time.perf_counter() - start
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("sizes"))
    rows = [line for line in lines[header + 1:] if line.strip() and not set(line.strip()) <= set("-| ")]
    rows = rows[:next(i for i, line in enumerate(rows) if "combinations pass" in line)]
    n = len(cli.ARCHITECTURES) * len(cli.PAIRINGS) * len(activations.HIDDEN_NAMES)
    assert len(rows) == n
    assert all(row.split()[-1] == "ok" for row in rows)
    assert f"{n}/{n} combinations pass" in stdout
    print(f"gradcheck: {n} combinations in {elapsed:.1f} s")


@pytest.fixture
def small_gradcheck(monkeypatch):
    """gradcheck reduced to one small architecture, one pairing and two hidden activations."""
    monkeypatch.setattr(cli, "ARCHITECTURES", ((3, 4, 2),))
    monkeypatch.setattr(cli, "PAIRINGS", (("identity", "mse", "float"),))
    monkeypatch.setattr(activations, "HIDDEN_NAMES", ("tanh", "relu"))


@pytest.mark.parametrize("broken", [False, True], ids=["intact", "output-delta-off-by-1%"])
def test_gradcheck_fails_when_backward_is_broken(broken, small_gradcheck, monkeypatch, capsys):
    if broken:
        correct = backprop.output_delta
        monkeypatch.setattr(backprop, "output_delta", lambda *args: 1.01 * correct(*args))
    code = cli.main(["gradcheck"])
    stdout = capsys.readouterr().out
    assert code == (1 if broken else 0)
    assert ("FAIL" in stdout) == broken
    assert ("0/2 combinations pass" if broken else "2/2 combinations pass") in stdout


USER_MODEL = """
import jax, jax.numpy as jnp

def loss(p, x, y):
    return jnp.mean((jnp.tanh(x @ p["W"]) @ p["v"] - y) ** 2)

def backward(p, x, y):  # by hand
    h = jnp.tanh(x @ p["W"])
    r = h @ p["v"] - y
    d = 2 * r / r.size
    dh = d[:, None] * p["v"][None, :] * (1 - h ** 2)
    return jnp.mean(r ** 2), {"W": x.T @ dh, "v": h.T @ d * SCALE}

def model():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    p = {"W": jax.random.normal(k1, (3, 4)), "v": jax.random.normal(k2, (4,))}
    x, y = jax.random.normal(k3, (5, 3)), jnp.arange(5.0)
    return p, (x, y), backward, loss
"""


@pytest.mark.parametrize("scale, code", [(1.0, 0), (1.001, 1)], ids=["right", "v-off-by-0.1%"])
def test_gradcheck_checks_a_users_model_from_a_file(scale, code, tmp_path, capsys):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL.replace("SCALE", repr(scale)))
    assert cli.main(["gradcheck", f"{path}:model"]) == code
    out = capsys.readouterr().out
    assert out.startswith("gradcheck in float64") or out.startswith("gradient check in float64")
    assert ("['v']" in out) and (("FAIL" in out) == bool(code))
    assert cli.main(["gradcheck", f"{path}:model", "--json"]) == code
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == (code == 0) and [r["path"] for r in report["rows"]] == ["['W']", "['v']"]
    assert report["failures"] == ([] if code == 0 else [f for f in report["failures"] if f.startswith("['v']")])


def test_gradcheck_of_a_module_target_and_bad_targets(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels.py").write_text(USER_MODEL.replace("SCALE", "1.0"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["gradcheck", "mymodels:model"]) == 0
    for target, match in [("nofile.py:model", "no such file"), (f"{tmp_path / 'mymodels.py'}:absent", "no function"),
                          ("mymodels", "expected path/to/file.py:name or module:name")]:
        with pytest.raises(SystemExit, match=match):
            cli.main(["gradcheck", target])


# ---- Usage errors, help, and what `train` prints ------------------------------------------------------

@pytest.mark.parametrize("argv, match", [
    (["train", "--dataset", "mnist"], r"argument --dataset: invalid choice: 'mnist' \(choose from 'xor', .*'digits'"),
    (["train", "--activation", "swish"], r"argument --activation: invalid choice: 'swish' \(choose from .*'relu'"),
    (["train", "--init", "glorot"], r"argument --init: invalid choice: 'glorot' \(choose from .*'he'"),
    (["train", "--batch-size", "-5"], r"argument --batch-size: expected a non-negative int, got '-5'"),
    (["train", "--lr", "-0.1"], r"argument --lr: expected a positive float, got '-0.1'"),
    (["train", "--lr=-1e-3"], r"argument --lr: expected a positive float, got '-1e-3'"),
    (["train", "--lr", "nan"], r"argument --lr: expected a positive float, got 'nan'"),
    (["train", "--epochs", "0"], r"argument --epochs: expected a positive int, got '0'"),
    (["train", "--momentum", "1"], r"argument --momentum: expected a float in \[0, 1\), got '1'"),
    (["train", "--checkpoint-every", "0"], r"argument --checkpoint-every: expected a positive int"),
    (["gradcheck", "--batch", "0"], r"argument --batch: expected a positive int, got '0'"),
    (["gradcheck", "--h=-1e-6"], r"argument --h: expected a positive float"),
], ids=["dataset", "activation", "init", "batch-size", "lr", "lr-equals", "lr-nan", "epochs", "momentum",
        "checkpoint-every", "gradcheck-batch", "gradcheck-h"])
def test_bad_arguments_are_usage_errors(argv, match, capsys):
    """Exit 2 with argparse's usage line and a message naming the valid values: no traceback, no run."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err.startswith("usage: jaxmlp") and re.search(match, err), err
    assert "Traceback" not in err


def test_a_diverging_train_exits_1_with_a_message_not_a_traceback(capsys):
    code = cli.main(["train", "--dataset", "digits", "--sizes", "64,16,10", "--epochs", "1", "--optimizer", "sgd",
                     "--lr", "1e6", "--no-progress", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert err.startswith("jaxmlp train: training diverged in epoch 1") and "Try a smaller --lr" in err, err


def test_train_help_lists_every_flags_choices_and_default(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    train = next(a for a in cli.parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    flags = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 17
    for action in flags:
        flag = action.option_strings[0]
        help_part = text[text.index(flag + (" {" if action.choices else " ")):]
        help_part = help_part[:help_part.index("(default:") + 80]
        assert "(default:" in help_part, flag  # before the next flag's text
        if action.choices:
            assert "{" + ",".join(action.choices) + "}" in text, flag
    for expected in ("--epochs EPOCHS epochs (positive) (default: 40)", "(default: digits)",
                     "(default: relu)", "(default: 0.003)", "(default: adam)", "(default: he)",
                     "(default: 64)", "{xor,moons,spirals,breast_cancer,digits,iris,diabetes}"):
        assert expected in text, expected


def test_one_epoch_prints_no_nan_and_says_nothing_was_saved():
    code, stdout = run_main(XOR[:-4] + ["--epochs", "1", "--batch-size", "32"])
    assert code == 0
    assert "nan" not in stdout.lower()
    assert "time per step not measured (a single compiled call" in stdout
    assert "nothing saved: pass --out DIR" in stdout


@pytest.mark.parametrize("epochs, every, expected", [(40, None, 10), (41, None, 1), (1, None, 1), (7, None, 1),
                                                     (9, None, 1), (100, None, 25), (30, None, 6), (40, 5, 5)])
def test_epochs_per_call(epochs, every, expected):
    """A divisor of the epochs (one compiled program), about 4 calls; the checkpoint interval when saving."""
    assert cli._epochs_per_call(epochs, every) == expected


@pytest.fixture
def fit_calls(monkeypatch):
    """The epoch reached by each compiled call of ``fit`` that the CLI makes (its callback's first argument)."""
    from jaxmlp import train

    calls = []
    real_fit = train.fit

    def fit(*args, callback, **kw):
        return real_fit(*args, callback=lambda e, m: (calls.append(e), callback(e, m)), **kw)

    monkeypatch.setattr(train, "fit", fit)
    return calls


def test_train_reports_progress_once_per_compiled_call(fit_calls):
    """40 epochs: 4 calls of 10 epochs (4 host round trips), not one per epoch."""
    code, stdout = run_main(XOR[:-4] + ["--epochs", "40", "--batch-size", "32", "--no-progress"])
    assert code == 0 and fit_calls == [10, 20, 30, 40]
    assert "compiled calls of 10 epochs x 10 steps" in stdout


# ---- What the flags do ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, reference", [
    ("adam", lambda optax, a: optax.adam(a.lr)),
    ("sgd", lambda optax, a: optax.sgd(a.lr)),
    ("gd", lambda optax, a: optax.sgd(a.lr)),
    ("momentum", lambda optax, a: optax.sgd(a.lr, momentum=a.momentum)),
    ("nesterov", lambda optax, a: optax.sgd(a.lr, momentum=a.momentum, nesterov=True)),
])
def test_optimizer_flag_maps_to_the_named_optimizer(name, reference):
    """--optimizer NAME --lr --momentum: three compiled updates equal optax's NAME with those hyperparameters."""
    import optax

    args = argparse.Namespace(optimizer=name, lr=0.05, momentum=0.8)
    ours, ref = cli._optimizer(args), reference(optax, args)
    rng = np.random.default_rng(0)
    params = {"w": np.asarray(rng.normal(size=(3,)), np.float32)}
    state, ref_state = ours.init(params), ref.init(params)
    update, ref_update = jax.jit(ours.update), jax.jit(ref.update)  # compiled, as fit runs them
    for _ in range(3):
        grads = {"w": np.asarray(rng.normal(size=(3,)), np.float32)}
        updates, state = update(grads, state, params)
        ref_updates, ref_state = ref_update(grads, ref_state, params)
        np.testing.assert_array_equal(updates["w"], ref_updates["w"])  # bit for bit, as test_optim.py


def _metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def _params(out):
    with np.load(Path(out) / "params.npz") as f:
        return {k: f[k] for k in f.files}


def test_checkpoint_dir_resumes_to_the_uninterrupted_run(tmp_path, fit_calls):
    """10 epochs with --checkpoint-dir, then the same command with --epochs 20: it runs only epochs 11-20
    (calls ending at 15 and 20) and ends bit-identical to one uninterrupted 20-epoch run."""
    base = XOR[:-4] + ["--batch-size", "32", "--checkpoint-every", "5", "--no-progress"]
    ckpt = tmp_path / "ckpt"
    assert run_main(base + ["--epochs", "10", "--checkpoint-dir", str(ckpt)])[0] == 0
    assert fit_calls == [5, 10] and any(ckpt.iterdir())
    del fit_calls[:]
    code, _ = run_main(base + ["--epochs", "20", "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "resumed")])
    assert code == 0 and fit_calls == [15, 20]
    assert run_main(base + ["--epochs", "20", "--out", str(tmp_path / "straight")])[0] == 0
    resumed, straight = _params(tmp_path / "resumed"), _params(tmp_path / "straight")
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k])
    assert _metrics(tmp_path / "resumed")["test_loss"] == _metrics(tmp_path / "straight")["test_loss"]


def test_regression_reports_r2_of_the_saved_params(tmp_path):
    """diabetes: test_r2 = 1 - Σ(ŷ - y)² / Σ(y - ȳ)², recomputed here in NumPy from params.npz."""
    code, stdout = run_main(["train", "--dataset", "diabetes", "--sizes", "10,16,1", "--epochs", "20",
                             "--no-progress", "--out", str(tmp_path)])
    assert code == 0
    metrics, p = _metrics(tmp_path), _params(tmp_path)
    _, _, x, y = (np.asarray(a, np.float64) for a in datasets.load("diabetes", seed=0))
    y_hat = np.maximum(x @ p["W1"].T + p["b1"], 0) @ p["W2"].T + p["b2"]
    r2 = 1 - np.sum((y_hat - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert metrics["loss"] == "mse" and "test_accuracy" not in metrics
    np.testing.assert_allclose(metrics["test_r2"], r2, rtol=1e-4)
    assert 0.2 < r2 < 1  # 20 epochs of a small MLP explain part of the variance
    assert f"test_r2 {metrics['test_r2']:.4f}" in stdout


@pytest.mark.parametrize("init", ["zeros", "he"])
def test_init_flag_reaches_the_network(init, tmp_path):
    """--init zeros: every hidden z and a = tanh(z) is 0, so (B1)-(B4) give W1, b1 and W2 zero gradients
    for ever and only b2 moves; with --init he, W1 is not zero."""
    code, _ = run_main(XOR[:-4] + ["--epochs", "5", "--batch-size", "32", "--init", init, "--no-progress",
                                   "--out", str(tmp_path)])
    p = _params(tmp_path)
    assert code == 0 and _metrics(tmp_path)["init"] == init
    zero = [k for k in ("W1", "b1", "W2") if not p[k].any()]
    assert zero == (["W1", "b1", "W2"] if init == "zeros" else ["b1"] if not p["b1"].any() else [])
    assert p["b2"].any()


@pytest.mark.slow
def test_readme_first_command_on_digits():
    """`jaxmlp train` with every default, as the README's first command, reaches the README's 0.969."""
    code, stdout = run_main(["train", "--no-progress"])
    assert code == 0
    assert "digits (multiclass, 1438 train / 359 test), sizes [64, 64, 32, 10], relu, loss ce, adam lr 0.003, " \
           "batch 64, 40 epochs of 22 steps" in stdout
    accuracy = float(re.search(r"test_accuracy (\d\.\d+)", stdout).group(1))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "(0.969 test accuracy with the defaults)" in readme
    assert f"{accuracy:.3f}" == "0.969"


def test_unusable_cache_dir_warns_and_trains(tmp_path, capsys):
    """--cache-dir on a file: the run goes on without the cache, and says so on stderr."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    assert cli.main(XOR[:-4] + ["--epochs", "1", "--no-progress", "--cache-dir", str(not_a_dir)]) == 0
    out, err = capsys.readouterr()
    assert "test_accuracy" in out
    assert err.startswith("jaxmlp: no compilation cache (") and str(not_a_dir) in err
    assert jax.config.jax_compilation_cache_dir != str(not_a_dir)


def test_cli_adamw_flags():
    """``jaxmlp train --optimizer adamw --lr --weight-decay``: optax's AdamW with those, bit for bit."""
    args = cli.parser().parse_args(["train", "--optimizer", "adamw", "--lr", "0.05", "--weight-decay", "0.01"])
    ours, reference = cli._optimizer(args), optax.adamw(0.05, weight_decay=0.01)
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.3)}
    grads = {"w": jnp.array([0.1, -0.2, 0.3]), "b": jnp.array(-0.05)}
    # Compiled, as fit runs it (eagerly, float32 β^t is computed by another algorithm, optax's too).
    (updates, _), (expected, _) = jax.jit(ours.update)(grads, ours.init(params), params), \
        jax.jit(reference.update)(grads, reference.init(params), params)
    assert_trees_equal(updates, expected)
    assert cli.parser().parse_args(["train"]).weight_decay == 1e-4  # optax's default
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(["train", "--weight-decay", "-0.1"])
    assert exit_.value.code == 2
