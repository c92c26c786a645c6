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
        programs._seen.clear(); programs.remember_modules()  # this is the code now, not a patch of it
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


# ---------------------------------------------------------------- what a review found (each was a wrong or failed call)


@pytest.mark.parametrize("patch", ["partial", "jit", "constant", "same name from another module"])
def test_any_rebound_attribute_stops_the_store(patch, monkeypatch):
    """A partial, a jit wrapper or a constant set into a module is not a plain function, but it changes
    what is traced all the same (a partial-patched backward passed gradcheck from the intact program)."""
    from jaxmlp import backprop, ensemble

    replacement = {"partial": ("_output_delta", functools.partial(backprop._output_delta)),
                   "jit": ("_output_delta", jax.jit(backprop._output_delta, static_argnums=(2, 3, 4))),
                   "constant": ("IN_ORDER_MIN", 1),
                   "same name from another module": None}[patch]
    if replacement is None:
        monkeypatch.setattr(train, "_loss_grads_output", ensemble._loss_grads_output)
        where = "jaxmlp.train._loss_grads_output"
    else:
        monkeypatch.setattr(backprop, *replacement)
        where = f"jaxmlp.backprop.{replacement[0]}"
    assert programs.patched() == where
    monkeypatch.undo()
    assert programs.patched() is None


def test_source_changed_on_disk_after_import_has_no_key(tmp_path):
    """The code in memory is the code at import: after an edit on disk (a notebook kernel, an upgrade
    while a job runs) neither the old nor the new hash describes it."""
    import shutil

    shutil.copytree(os.path.dirname(jaxmlp.__file__), tmp_path / "jaxmlp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from jaxmlp import programs
        assert programs.__file__.startswith({str(tmp_path)!r})
        programs._source_hash()
        with open({str(tmp_path / "jaxmlp" / "backprop.py")!r}, "a") as f:
            f.write("# edited")
        try:
            programs._source_hash()
        except programs.Undescribable as e:
            print("refused:", e)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "refused: jaxmlp's source changed on disk" in result.stdout


def test_unreadable_source_has_no_key(monkeypatch):
    monkeypatch.setattr(programs, "_SOURCE", None)  # as for a zip import
    with pytest.raises(programs.Undescribable, match="cannot be read"):
        programs._source_hash()


def test_an_optimizer_keeps_the_description_it_was_built_with():
    """The optimizer cache returns the first object for equal arguments (0.1 == np.float64(0.1)): its
    description must stay that of the arguments it was built from."""
    first = optim.sgd(0.4321)
    described = programs.describe(first)
    assert optim.sgd(np.float64(0.4321)) is first and programs.describe(first) == described
    assert "float:" in described
    other = optim.sgd(np.float64(0.1234))
    assert "float64:" in programs.describe(other)
    assert optim.sgd(0.1234) is other and "float64:" in programs.describe(other)


def test_calls_the_store_cannot_take_go_through_jit(tmp_path, monkeypatch):
    """Traced arguments (inside an outer jit), a key that fails to compute, and jax's debug modes: the
    caller's jit, as before the store existed."""
    programs.enable(tmp_path)
    params = jaxmlp.init_mlp(jax.random.key(0), [3, 4, 1])
    state = jax.jit(lambda p: train._init_state(optim.adam(1e-3), p))(params)  # traced: no key
    assert jax.tree.structure(state) == jax.tree.structure(optim.adam(1e-3).init(params))
    before = programs.stats()
    with jax.debug_nans(True):
        with pytest.raises(FloatingPointError):
            programs.call(jnp.log, {}, -jnp.ones(2), fallback=jax.jit(jnp.log))
    assert programs.stats() == before  # not even a key was computed
    monkeypatch.setattr(programs, "_argument_key", lambda args: 1 / 0)
    assert programs.call(train._optimizer_init, {"optimizer": optim.adam(1e-3)}, params,
                         fallback=functools.partial(train._compiled_init, optimizer=optim.adam(1e-3))) is not None
    assert programs.stats()["skipped"] == before["skipped"] + 1


def test_a_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.warns(UserWarning, match="writable by others"):
        programs.enable(shared)
    assert programs.directory() is None
    programs.enable(tmp_path / "mine")
    assert programs.directory() == str(tmp_path / "mine") and os.stat(tmp_path / "mine").st_mode & 0o077 == 0
