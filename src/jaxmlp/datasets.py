"""Small datasets, split and standardized, with targets shaped for jaxmlp's losses.

``load(name, *, seed=0) -> (x_train, y_train, x_test, y_test)``, all ``jax.Array``:

- ``x`` is float32 of shape ``(N, n_in)`` (cast it yourself, e.g. ``x.astype(jnp.float64)``, to train
  in float64);
- ``y`` matches the output of a network with ``n_out`` units **exactly** (no broadcast):

  ==========  ===============================  ========  ============================
  task        y                                loss      output layer
  ==========  ===============================  ========  ============================
  binary      float32 ``(N, 1)``, values 0/1   ``bce``   1 unit, sigmoid
  multiclass  int32 labels ``(N,)`` in [0, C)  ``ce``    C units, softmax
  regression  float32 ``(N, 1)``, standardized ``mse``   1 unit, identity
  ==========  ===============================  ========  ============================

``spec(name)`` returns a :class:`DatasetSpec` ``(task, loss, n_in, n_out, size)`` so that training code
can pick the loss and the layer widths ``[n_in, ..., n_out]`` without loading the data.

Datasets (``NAMES``)::

    name           source                      size   n_in  task
    xor            generated (numpy)            400      2  binary
    moons          generated (numpy)            400      2  binary
    spirals        generated (numpy)            400      2  binary
    breast_cancer  sklearn (bundled, Wisconsin) 569     30  binary, 1 = benign, 0 = malignant
    digits         sklearn (bundled, 8x8 UCI)  1797     64  multiclass, 10 classes (digits 0-9)
    iris           sklearn (bundled, Fisher)    150      4  multiclass, 3 species
    diabetes       sklearn (bundled, Efron)     442     10  regression, disease progression after 1 y

- ``xor``: each coordinate is ``s * u`` with a random sign ``s = ±1`` and ``u ~ U(0.1, 1)``, so the
  points fill the four quadrants with a margin of 0.1 around the axes; ``y = 1`` where
  ``x1 x2 > 0``. No line separates it (a perceptron tops out near 75 %), a ``[2, 8, 1]`` tanh MLP
  reaches 100 %.
- ``moons``: two interleaving half circles, ``(cos t, sin t)`` (y = 0) and ``(1 - cos t, 0.5 - sin t)``
  (y = 1), ``t ~ U(0, π)``, plus Gaussian noise of std 0.1 (as ``sklearn.datasets.make_moons``).
- ``spirals``: two arms of 1.5 turns, ``r = t``, ``θ = 3π t + π y`` with ``t ~ U(0.05, 1)``, plus
  Gaussian noise of std 0.02; neighbouring arms lie 1/3 apart along any ray.

The generated sets draw their points and their split from ``numpy.random.default_rng(seed)``, so the
seed changes both. The scikit-learn sets are read with numpy from files that ship inside the scikit-learn
package (nothing is downloaded, and scikit-learn is not imported: that took 1.5-2.5 s); they equal
``sklearn.datasets.load_<name>()``'s arrays. scikit-learn is the optional extra ``pip install "jaxmlp[data]"``.

**Split.** 80 % train, 20 % test, stratified by class (a plain permutation for regression): each
class's examples are permuted with ``default_rng(seed)`` and ``round(0.2 n_c)`` of them go to test;
both splits are then shuffled. Same seed, identical arrays; different seed, a different split.

**Standardization.** Every input column is standardized with the *training* split's statistics,
``x ← (x - mean_train) / std_train``, applied to both splits, so ``x_train`` has mean 0 and std 1 per
column and ``x_test`` only approximately. Columns constant on the training split (digits has
all-zero border pixels) are divided by 1 instead of 0. The regression target is standardized the
same way, with ``y_train``'s mean and std: losses and predictions are in units of that std.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

TEST_FRACTION = 0.2


class DatasetSpec(NamedTuple):
    """What a dataset asks of a network: ``sizes = [n_in, ..., n_out]``, trained with ``loss``."""

    task: str  # "binary", "multiclass" or "regression"
    loss: str  # "bce", "ce" or "mse", a name from jaxmlp.losses.NAMES
    n_in: int
    n_out: int
    size: int  # number of examples, train and test together


SPECS = {
    "xor": DatasetSpec("binary", "bce", 2, 1, 400),
    "moons": DatasetSpec("binary", "bce", 2, 1, 400),
    "spirals": DatasetSpec("binary", "bce", 2, 1, 400),
    "breast_cancer": DatasetSpec("binary", "bce", 30, 1, 569),
    "digits": DatasetSpec("multiclass", "ce", 64, 10, 1797),
    "iris": DatasetSpec("multiclass", "ce", 4, 3, 150),
    "diabetes": DatasetSpec("regression", "mse", 10, 1, 442),
}
NAMES = tuple(SPECS)


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of dataset ``name``; raises ``ValueError`` for an unknown name."""
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")
    return SPECS[name]


# --- Generated datasets: (x float64 (N, 2), labels int (N,)) from a numpy Generator. ---------------


def _xor(rng, n):
    x = rng.choice([-1.0, 1.0], size=(n, 2)) * rng.uniform(0.1, 1.0, size=(n, 2))
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)


def _moons(rng, n):
    labels = np.arange(n) % 2
    t = rng.uniform(0.0, np.pi, size=n)
    outer = np.stack([np.cos(t), np.sin(t)], axis=1)
    inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(labels[:, None] == 0, outer, inner)
    return x + 0.1 * rng.standard_normal((n, 2)), labels


def _spirals(rng, n):
    labels = np.arange(n) % 2
    t = rng.uniform(0.05, 1.0, size=n)
    theta = 3.0 * np.pi * t + np.pi * labels
    x = t[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return x + 0.02 * rng.standard_normal((n, 2)), labels


_GENERATED = {"xor": _xor, "moons": _moons, "spirals": _spirals}
_SKLEARN = {  # dataset -> scikit-learn's loader, which the tests compare with
    "breast_cancer": "load_breast_cancer",
    "digits": "load_digits",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}


def _sklearn_data_dir(name):
    """The directory of the data files inside the installed scikit-learn package, found without importing it."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"dataset {name!r} is read from scikit-learn's bundled files; install it with "
            f'pip install "jaxmlp[data]"'
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")


def _labelled_csv(path):
    """``(x, labels)`` from one of scikit-learn's ``n_samples,n_features,names...`` csv files: the last
    column is the label (as ``sklearn.datasets.load_iris`` and ``load_breast_cancer`` read them)."""
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return data[:, :-1], data[:, -1].astype(np.int64)


def _sklearn(name):
    """``(x float64, target)`` of a bundled scikit-learn set, read with numpy: importing scikit-learn costs
    1.5-2.5 s, reading the file milliseconds. Equal, array for array, to ``sklearn.datasets.load_<name>()``'s
    ``data`` and ``target`` (tests/test_datasets.py checks it)."""
    data_dir = _sklearn_data_dir(name)
    try:
        return _read_sklearn_files(name, data_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"dataset {name!r}: {e} (in the installed scikit-learn's data directory); jaxmlp reads the files "
            f'that scikit-learn >= 1.3 ships: pip install "jaxmlp[data]"') from e


def _read_sklearn_files(name, data_dir):
    if name in ("iris", "breast_cancer"):
        return _labelled_csv(os.path.join(data_dir, f"{name}.csv"))
    if name == "digits":
        data = np.loadtxt(os.path.join(data_dir, "digits.csv.gz"), delimiter=",", dtype=np.float64)
        return data[:, :-1], data[:, -1].astype(np.int64)
    x = np.loadtxt(os.path.join(data_dir, "diabetes_data_raw.csv.gz"), dtype=np.float64)
    target = np.loadtxt(os.path.join(data_dir, "diabetes_target.csv.gz"), dtype=np.float64)
    # load_diabetes() scales by default: sklearn.preprocessing.scale, then / sqrt(N), as here (scale's
    # re-centering branches for badly conditioned columns do not fire on this file).
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    x -= mean
    x /= np.where(std < 10 * np.finfo(std.dtype).eps, 1.0, std)
    x /= x.shape[0] ** 0.5
    return x, target


# --- Split and standardization. ---------------------------------------------------------------------


def _split(strata, rng, test_fraction=TEST_FRACTION):
    """Indices ``(train, test)`` partitioning ``range(len(strata))``, ``round(f n_c)`` of each stratum in test."""
    test = []
    for c in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == c))
        test.append(members[: round(test_fraction * len(members))])
    test = np.concatenate(test)
    train = np.setdiff1d(np.arange(len(strata)), test)
    return rng.permutation(train), rng.permutation(test)


def _standardize(train, test):
    """Both splits standardized with ``train``'s column mean and std (std 0 replaced by 1)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def load(name: str, *, seed: int = 0):
    """Load dataset ``name`` (one of ``NAMES``), split and standardized; see the module docstring.

    Args:
      name: the dataset's name, e.g. ``"moons"`` or ``"digits"``.
      seed: seeds ``numpy.random.default_rng``, which draws the split (and the points of a generated set).

    Returns:
      ``(x_train, y_train, x_test, y_test)`` as jax arrays: ``x`` float32 ``(N, n_in)``; ``y`` float32
      ``(N, 1)`` for binary (0/1) and regression (standardized) tasks, int32 ``(N,)`` for multiclass.
    """
    s = spec(name)
    rng = np.random.default_rng(seed)
    if name in _GENERATED:
        x, target = _GENERATED[name](rng, s.size)
    else:
        x, target = _sklearn(name)
    strata = np.zeros(len(x), np.int64) if s.task == "regression" else target
    train, test = _split(strata, rng)

    x_train, x_test = _standardize(x[train], x[test])
    if s.task == "multiclass":
        y_train, y_test = target[train].astype(np.int32), target[test].astype(np.int32)
    else:
        y = target.astype(np.float64)[:, None]
        y_train, y_test = y[train], y[test]
        if s.task == "regression":
            y_train, y_test = _standardize(y_train, y_test)
        y_train, y_test = y_train.astype(np.float32), y_test.astype(np.float32)
    return (
        jnp.asarray(x_train.astype(np.float32)),
        jnp.asarray(y_train),
        jnp.asarray(x_test.astype(np.float32)),
        jnp.asarray(y_test),
    )
