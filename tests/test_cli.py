"""The command line, run in-process: ``jaxmlp train`` outputs, bad arguments, and ``jaxmlp gradcheck``."""

import contextlib
import io
import json
import time

import numpy as np
import pytest

from jaxmlp import activations, backprop, cli, datasets, evaluate
from jaxmlp.types import Layer

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
        correct = backprop._output_delta
        monkeypatch.setattr(backprop, "_output_delta", lambda *args: 1.01 * correct(*args))
    code = cli.main(["gradcheck"])
    stdout = capsys.readouterr().out
    assert code == (1 if broken else 0)
    assert ("FAIL" in stdout) == broken
    assert ("0/2 combinations pass" if broken else "2/2 combinations pass") in stdout
