"""jaxmlp's store of compiled programs (:mod:`jaxmlp.programs`): what (P1) describes and what it refuses,
keys that change with everything that changes the program, and, in fresh processes, entries that are
loaded bit for bit, rewritten when damaged, and never written from an executable jax's cache loaded."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import activations, optim, programs, train


def config(**changes):
    base = dict(loss="bce", activation="relu", output_activation=None, grad="manual", batch_size=16)
    return train._Config(**{**base, **changes})


# ---------------------------------------------------------------- (P1): descriptions


def test_descriptions_are_exact_and_typed():
    d = programs.describe
    assert d(0.1) != d(float(np.nextafter(0.1, 1.0)))  # one ulp apart: two programs
    assert d(1) != d(1.0) != d(True) and d("1") != d(1)
    assert d((1, 2)) != d([1, 2]) and d({"a": 1, "b": 2}) == d({"b": 2, "a": 1})
    assert d(jnp.float32) == d(np.dtype("float32")) != d(jnp.bfloat16)
    assert d(np.float64(0.5)) != d(0.5)  # a strongly typed scalar in jax, unlike the Python float
    assert d(activations.relu) == d(activations.get("relu")) != d(activations.gelu)
    assert d(jaxmlp.loss_fn) == "fn:jaxmlp.mlp.loss_fn"
    assert d(functools.partial(jaxmlp.loss_fn, loss="ce")) != d(functools.partial(jaxmlp.loss_fn, loss="mse"))
    assert d(config()) != d(config(batch_size=32)) and d(config()) != d(config(activation="tanh"))


@pytest.mark.parametrize("thing", [
    pytest.param(lambda z: z, id="a user's function"),
    pytest.param(activations.Activation("mine", jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2), id="a user's Activation"),
    pytest.param(jnp.ones(3), id="an array (not described by its dtype)"),
    pytest.param(np.float32(1.0), id="a NumPy scalar"),
    pytest.param(optax.adam(1e-3), id="an optax optimizer"),
    pytest.param(optim.adam(lambda count: 1e-3), id="a schedule"),
    pytest.param(object(), id="an object"),
    pytest.param(dict, id="a class (NumPy calls every class 'object')"),
])
def test_what_has_no_description(thing):
    with pytest.raises(programs.Undescribable):
        programs.describe(thing)
    with pytest.raises(programs.Undescribable):
        programs.describe(config(activation=thing))  # nested anywhere: the whole configuration has none


def test_jaxmlp_optimizers_are_described_by_how_they_were_built():
    d = programs.describe
    assert d(optim.adam(1e-3)) == d(optim.adam(1e-3)) != d(optim.adam(2e-3))
    assert d(optim.adam(1e-3)) != d(optim.adam(1e-3, b2=0.99)) != d(optim.sgd(1e-3))
    assert d(optim.adam(1e-3, mu_dtype=jnp.bfloat16)) != d(optim.adam(1e-3))


# ---------------------------------------------------------------- (P1): keys


def _fit_key(params, x, y, **static):
    static = {"optimizer": optim.adam(1e-2), "config": config(), "n_epochs": 3, **static}
    return programs.key(train._epochs, static, (params, None, jax.random.key(0), x, y), None)


def test_key_changes_with_everything_that_changes_the_program():
    params = jaxmlp.init_mlp(jax.random.key(0), [5, 8, 1])
    x, y = np.zeros((64, 5), np.float32), np.zeros((64, 1), np.float32)
    base = _fit_key(params, x, y)
    assert _fit_key(params, x, y) == base  # and nothing else
    others = [
        _fit_key(params, x, y, n_epochs=4),
        _fit_key(params, x, y, optimizer=optim.adam(1e-3)),
        _fit_key(params, x, y, config=config(batch_size=32)),
        _fit_key(params, x[:32], y[:32]),  # a shape
        _fit_key(params, x.astype(np.float64), y),  # a dtype
        _fit_key(jaxmlp.init_mlp(jax.random.key(0), [5, 9, 1]), x, y),  # the architecture
        programs.key(train._epochs, {"optimizer": optim.adam(1e-2), "config": config(), "n_epochs": 3},
                     (params, None, jax.random.key(0), x, y), {"xla_backend_optimization_level": 0}),
    ]
    with jax.enable_x64(True):  # jax's configuration, as its own jit cache sees it
        others.append(_fit_key(params, x, y))
    assert len({base, *others}) == len(others) + 1


@pytest.mark.slow
def test_a_structure_that_does_not_pickle_has_no_key():
    class Local(tuple):  # a node class defined in a function: pickle cannot name it
        pass

    jax.tree_util.register_pytree_node(Local, lambda t: (tuple(t), None), lambda _, c: Local(c))
    with pytest.raises(programs.Undescribable):
        programs._argument_key((Local((jnp.ones(2),)),))


def _output_delta(*args):  # a test's function with the name of the one it replaces
    return 0.0


@pytest.mark.parametrize("replacement", [lambda *args: 0.0, _output_delta, jaxmlp.backprop._delta_below],
                         ids=["lambda", "same-name function", "another jaxmlp function"])
def test_a_patched_jaxmlp_function_stops_the_store(replacement, monkeypatch):
    """The source hash of (P1) cannot see a function set into a module at run time: no key while it is there."""
    from jaxmlp import backprop

    params = jaxmlp.init_mlp(jax.random.key(0), [5, 8, 1])
    x, y = np.zeros((64, 5), np.float32), np.zeros((64, 1), np.float32)
    assert programs.patched() is None
    _fit_key(params, x, y)
    monkeypatch.setattr(backprop, "_output_delta", replacement)
    assert programs.patched() == "jaxmlp.backprop._output_delta"
    with pytest.raises(programs.Undescribable, match="patched"):
        _fit_key(params, x, y)
    monkeypatch.undo()
    _fit_key(params, x, y)


@pytest.mark.slow
def test_arguments_placed_elsewhere_have_no_key():
    """A sharded argument, or one on another device, is not stored (the program depends on the placement)."""
    code = textwrap.dedent("""
        import jax, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec
        from jaxmlp import programs
        x = np.zeros((8, 2), np.float32)
        sharded = jax.device_put(x, NamedSharding(jax.make_mesh((2,), ("data",)), PartitionSpec("data")))
        for arg in (sharded, jax.device_put(x, jax.devices()[1])):
            try:
                programs._argument_key((arg,))
            except programs.Undescribable:
                continue
            raise SystemExit(f"described: {arg.sharding}")
        programs._argument_key((jax.device_put(x, jax.devices()[0]),))
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


# ---------------------------------------------------------------- in fresh processes

FIT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, optax
    import jaxmlp
    from jaxmlp import optim, programs
    jaxmlp.enable_compilation_cache(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (rng.normal(size=(64, 1)) > 0).astype(np.float32)
    params = jaxmlp.init_mlp(jax.random.key(0), [5, 8, 1])
    opt = optax.adam(1e-2) if sys.argv[2] == "optax" else optim.adam(1e-2)
    if sys.argv[3:] == ["jax-writes"]:  # as if jax's cache had kept the store's program (another jaxmlp did)
        import contextlib
        programs._jax_cache_writes_off = contextlib.nullcontext
    params, history = jaxmlp.fit(params, x, y, optimizer=opt, loss="bce", epochs=3, batch_size=16)
    print(json.dumps({"loss": history["loss"].tolist(), "W": np.asarray(params[0].W).tolist(),
                      "store": programs.stats()}))
""")


def fit_process(cache, optimizer="jaxmlp", *flags):
    result = subprocess.run([sys.executable, "-c", FIT, str(cache), optimizer, *flags], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def entries(cache):
    return sorted((cache / "programs").iterdir())


@pytest.mark.slow
def test_damaged_entry_is_compiled_afresh_and_rewritten(tmp_path):
    first = fit_process(tmp_path)
    [entry] = entries(tmp_path)
    entry.write_bytes(b"not a program")
    second = fit_process(tmp_path)
    assert second["store"] == {"hits": 0, "misses": 1, "writes": 1, "skipped": 0}
    assert entry.stat().st_size > 1000
    third = fit_process(tmp_path)
    assert third["store"]["hits"] == 1
    assert first["loss"] == second["loss"] == third["loss"] and first["W"] == third["W"]


@pytest.mark.slow
def test_executable_from_jax_cache_is_not_written(tmp_path):
    """With the store's entry gone but jax's cache holding the same program, jax hands back a loaded
    executable, whose serialization lacks its kernels (running what it loads failed with "Function ...
    not found"): it is used, and not written."""
    first = fit_process(tmp_path, "jaxmlp", "jax-writes")
    [entry] = entries(tmp_path)
    entry.unlink()
    second = fit_process(tmp_path)
    assert second["store"] == {"hits": 0, "misses": 1, "writes": 0, "skipped": 0}
    assert entries(tmp_path) == []
    third = fit_process(tmp_path)  # still nothing written, and still right
    assert second["loss"] == third["loss"] == first["loss"] and third["W"] == first["W"]


@pytest.mark.slow
def test_store_writes_no_jax_entry_of_its_own(tmp_path):
    """So that a store entry that is removed or damaged is compiled afresh (and rewritten), not loaded
    from jax's cache in a form that cannot be written."""
    fit_process(tmp_path)
    names = [p.name for p in tmp_path.iterdir()]
    assert "programs" in names and not any("stored" in n for n in names)


@pytest.mark.slow
def test_undescribable_calls_go_through_jit(tmp_path):
    first = fit_process(tmp_path, "optax")
    assert first["store"] == {"hits": 0, "misses": 0, "writes": 0, "skipped": 1}
    assert entries(tmp_path) == []
    reference = fit_process(tmp_path, "jaxmlp")  # jaxmlp's adam equals optax's bit for bit (test_optim)
    assert first["loss"] == reference["loss"]


def test_store_off_by_default_and_entries_private(tmp_path):
    code = "import jaxmlp; from jaxmlp import programs; print(programs.directory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "None"  # importing jaxmlp turns nothing on
    programs._write(str(tmp_path / "entry.xla"), _compiled_tiny())
    assert os.stat(tmp_path / "entry.xla").st_mode & 0o077 == 0  # only its owner may read or write it


def _compiled_tiny():
    return jax.jit(lambda v: v * 2).lower(jnp.ones(3)).compile()
