"""Shared test configuration.

Strict rank promotion: any implicit broadcast between arrays of different ranks raises, which catches
the classic ``(B,)`` against ``(B, 1)`` bug that silently turns an MSE into a ``(B, B)`` matrix.

Float64 is enabled per test, never globally: the ``x64`` fixture (and ``float_dtype``'s float64 case)
runs the test inside ``jax.enable_x64(True)``. Module-level ``jnp`` constants in the library would be
computed in float32 at import and break those tests (``test_activations.py`` checks it in a fresh
process, enabling float64 only after ``import jaxmlp``).

The shared small training problem (``_training.py``) and its float32 run are session fixtures
(``problem32``, ``sgd32``): the tests of fit, the loop, the evaluation and the compiled programs compare
against the same run.
"""

import jax
import jax.numpy as jnp
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# The files that take minutes (executing the notebooks, running the benchmark scripts), collected first:
# pytest-xdist hands whole files to workers in collection order, and one of these started last would run
# alone at the end.
LONGEST_FIRST = ("test_notebooks.py", "test_benchmarks.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file stays


@pytest.fixture
def x64():
    """Run the test with float64 enabled (arrays must be created inside the test)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float64", "float32"])
def float_dtype(request):
    """The test's float dtype; the float64 case runs with float64 enabled."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield jnp.float64
    else:
        yield jnp.float32


@pytest.fixture(autouse=True, scope="session")
def _cache_home(tmp_path_factory):
    """The CLI turns its cache on by default: in tests it goes to a directory of the session, not ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def problem32():
    """The shared float32 problem: ``(params, x, y)`` of :func:`_training.make_problem`."""
    import _training  # here, not at the top: a session that runs no training test does not import jaxmlp

    return _training.make_problem(jnp.float32)


@pytest.fixture(scope="session")
def sgd32(problem32):
    """The shared float32 run: minibatch SGD, manual gradients, key SEED (:func:`_training.run`)."""
    import _training

    return _training.run(*problem32)


@pytest.fixture
def jax_cache_settings():
    """enable_compilation_cache changes three jax settings for the process: put them back after the test."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
