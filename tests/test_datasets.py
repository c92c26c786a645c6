"""Tests for jaxmlp.datasets: shapes paired with the losses, determinism, split, standardization."""

import functools
import importlib.util
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import backward, datasets, forward, init_mlp, loss_fn, losses

REAL = ("breast_cancer", "digits", "iris", "diabetes")  # read from scikit-learn's bundled files
_needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs jaxmlp[data]")


def _params(names):
    return [pytest.param(n, marks=_needs_sklearn) if n in REAL else n for n in names]


ALL = _params(datasets.NAMES)
CLASSIFICATION = _params(n for n in datasets.NAMES if datasets.spec(n).task != "regression")


@functools.cache
def _load(name):
    """The dataset at seed 0 as numpy arrays, loaded once per test session."""
    return tuple(np.asarray(a) for a in datasets.load(name, seed=0))


def test_names_cover_every_dataset():
    assert datasets.NAMES == ("xor", "moons", "spirals", "breast_cancer", "digits", "iris", "diabetes")
    for s in datasets.SPECS.values():
        assert s.loss in losses.NAMES
        assert (s.task, s.loss) in {("binary", "bce"), ("multiclass", "ce"), ("regression", "mse")}


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_dtypes_match_spec(name):
    s = datasets.spec(name)
    x_train, y_train, x_test, y_test = _load(name)
    assert len(x_train) + len(x_test) == s.size
    assert len(x_test) == pytest.approx(datasets.TEST_FRACTION * s.size, abs=s.n_out)  # round() per class
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert x.dtype == np.float32 and x.shape == (len(x), s.n_in)
        if s.task == "multiclass":
            assert y.dtype == np.int32 and y.shape == (len(x),)
            assert y.min() >= 0 and y.max() < s.n_out
        else:
            assert y.dtype == np.float32 and y.shape == (len(x), s.n_out)
        if s.task == "binary":
            assert set(np.unique(y)) <= {0.0, 1.0}
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))


@pytest.mark.parametrize("name", ALL)
def test_targets_pair_with_loss_exactly(name):
    """The spec's loss and widths accept the data as it comes, under strict rank promotion.

    Traced only (``eval_shape``): jaxmlp checks shapes while tracing, and rank promotion fails there too.
    """
    s = datasets.spec(name)
    x_train, y_train, _, _ = _load(name)
    params = jax.eval_shape(functools.partial(init_mlp, sizes=[s.n_in, 4, s.n_out]), jax.random.key(0))
    with jax.numpy_rank_promotion("raise"):
        loss = jax.eval_shape(functools.partial(loss_fn, activation="tanh", loss=s.loss), params, x_train, y_train)
    assert loss.shape == ()


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_every_class_in_both_splits(name):
    s = datasets.spec(name)
    _, y_train, _, y_test = _load(name)
    n_classes = 2 if s.task == "binary" else s.n_out
    assert len(np.unique(y_train)) == len(np.unique(y_test)) == n_classes


@pytest.mark.parametrize("name", ALL)
def test_same_seed_identical_other_seed_differs(name):
    again = datasets.load(name, seed=0)
    for a, b in zip(_load(name), again):
        np.testing.assert_array_equal(a, np.asarray(b))
    other = datasets.load(name, seed=1)
    assert not np.array_equal(_load(name)[0], np.asarray(other[0]))
    assert not np.array_equal(_load(name)[2], np.asarray(other[2]))


@pytest.mark.parametrize("name", ALL)
def test_standardized_with_training_statistics(name):
    x_train, y_train, x_test, y_test = _load(name)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    constant = std == 0
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(std[~constant], 1.0, atol=1e-4)
    # Only digits has constant (all-zero border pixel) columns; they stay 0 instead of NaN.
    assert constant.any() == (name == "digits")
    np.testing.assert_array_equal(x_train[:, constant], 0.0)
    # The test split went through the training split's map, not its own: its mean is off zero.
    assert np.abs(x_test.mean(axis=0)).max() > 1e-3
    if datasets.spec(name).task == "regression":
        np.testing.assert_allclose([y_train.mean(), y_train.std()], [0.0, 1.0], atol=1e-5)
        assert abs(float(y_test.mean())) > 1e-3


@pytest.mark.parametrize("name", _params(REAL))
def test_real_data_train_test_disjoint(name):
    """No raw example sits in both splits (iris holds one duplicated row, which may)."""
    from sklearn import datasets as skd

    raw = getattr(skd, datasets._SKLEARN[name])().data
    n_duplicates = len(raw) - len(np.unique(raw, axis=0))
    x_train, _, x_test, _ = _load(name)
    train_rows, test_rows = ({row.tobytes() for row in x} for x in (x_train, x_test))
    assert len(train_rows) + len(test_rows) >= len(raw) - n_duplicates
    assert len(train_rows & test_rows) <= n_duplicates


def test_split_partitions_indices_and_stratifies():
    strata = np.repeat([0, 1, 2], [50, 30, 20])
    train, test = datasets._split(strata, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    np.testing.assert_array_equal(np.bincount(strata[test]), [10, 6, 4])


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*moons.*digits"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.spec("mnist")


@pytest.mark.parametrize("name", _params(REAL))
def test_bundled_files_read_as_sklearn_loads_them(name):
    """datasets reads scikit-learn's files with numpy, without importing scikit-learn: the same arrays,
    bit for bit and dtype for dtype, as ``sklearn.datasets.load_<name>()`` (diabetes: its default scaling)."""
    from sklearn import datasets as skd

    bunch = getattr(skd, datasets._SKLEARN[name])()
    x, target = datasets._sklearn(name)
    for ours, theirs in ((x, bunch.data), (target, bunch.target)):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs, strict=True)
        assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes()  # -0.0 and 0.0 told apart too


def test_loading_a_bundled_set_does_not_import_sklearn():
    """Importing scikit-learn took 2.5 of 4.1 s of a warm ``jaxmlp train``; the files need only numpy."""
    code = ("import sys; from jaxmlp import datasets; datasets.load('digits'); datasets.load('diabetes'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize("hide", ["sys.modules", "find_spec"])
def test_missing_sklearn_says_how_to_install(monkeypatch, hide):
    if hide == "sys.modules":
        monkeypatch.setitem(sys.modules, "sklearn", None)
    else:  # not installed at all: importlib finds no package
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "sklearn" else real(n, *a))
    with pytest.raises(ImportError, match=r'dataset .iris. is read from scikit-learn.*pip install "jaxmlp\[data\]"'):
        datasets.load("iris")
    datasets.load("moons")  # generated sets need no scikit-learn


def test_a_scikit_learn_without_the_file_says_which(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "_sklearn_data_dir", lambda name: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dataset 'digits': .*digits.csv.gz.*scikit-learn >= 1.3"):
        datasets.load("digits")


def _accuracy_after_gd(sizes, x_train, y_train, x_test, y_test, steps=1000, lr=1.0):
    """Full-batch gradient descent on BCE with tanh hidden units; (train, test) accuracy."""
    params = init_mlp(jax.random.key(0), sizes, init="xavier")

    @jax.jit
    def fit(params):
        def step(p, _):
            _, g = backward(p, x_train, y_train, activation="tanh", loss="bce")
            return jax.tree.map(lambda w, dw: w - lr * dw, p, g), None

        return jax.lax.scan(step, params, None, length=steps)[0]

    params = fit(params)

    def accuracy(x, y):
        p = forward(params, x, activation="tanh", output_activation="sigmoid")
        return float(jnp.mean((p > 0.5) == (y > 0.5)))

    return accuracy(x_train, y_train), accuracy(x_test, y_test)


def test_xor_needs_a_hidden_layer():
    """A [2, 8, 1] tanh MLP separates xor; a single perceptron [2, 1] cannot."""
    data = datasets.load("xor", seed=0)
    mlp_train, mlp_test = _accuracy_after_gd([2, 8, 1], *data)
    perceptron_train, _ = _accuracy_after_gd([2, 1], *data)
    assert mlp_train >= 0.98 and mlp_test >= 0.95
    assert perceptron_train <= 0.8
