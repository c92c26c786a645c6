"""Sharding cases for ``test_sharding.py``, run in a subprocess with 8 forced CPU devices.

Not collected by pytest (no ``test_`` prefix): the parent test starts this script with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` so that the rest of the suite keeps one device.
One process runs every case (the imports and the 8-device client are paid once); each case's outcome,
``"ok"`` or the assertion's traceback, is written to a JSON file that the parent turns into one
test per case::

    python tests/_sharding_worker.py RESULTS.json [CASE ...]

Meshes are built with ``Mesh(devices, names)``, whose axes are ``Auto`` (``jax.make_mesh``'s default
axis type became ``Explicit`` in recent jax; the case ``explicit_axis_mesh`` covers it).
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import jaxmlp
from jaxmlp import optim, train

jax.config.update("jax_numpy_rank_promotion", "raise")  # as tests/conftest.py

N_DEVICES = 8
ATOL = 1e-4  # float32, a few epochs: the sharded batch sums are added in a different order


def data(n=256, n_in=16, n_classes=4):
    kx, ky = jax.random.split(jax.random.key(1))
    return jax.random.normal(kx, (n, n_in)), jax.random.randint(ky, (n,), 0, n_classes)


def mesh_of(n, axis):
    return Mesh(np.array(jax.devices()[:n]), (axis,))


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def assert_close(a, b, what, atol=ATOL):
    diff = max_abs_diff(a, b)
    assert diff <= atol, f"{what}: max |sharded - single device| = {diff:.3g} > atol {atol}"
    return diff


def assert_raises(fn, pattern):
    try:
        fn()
    except ValueError as e:
        assert re.search(pattern, str(e)), f"ValueError raised, but its message {str(e)!r} does not match {pattern!r}"
        return
    raise AssertionError(f"expected a ValueError matching {pattern!r}, nothing was raised")


# ----------------------------------------------------------------------------------------- cases

FIT = dict(optimizer=optim.adam(1e-2), loss="ce", epochs=3)


def data_parallel_matches_single_device():
    """fit(mesh=) with a "data" axis: minibatches with manual grads, full batch with autodiff grads."""
    x, y = data()
    params = jaxmlp.init_mlp(jax.random.key(0), [16, 32, 4])
    cases = [("manual, batch 32 over 8 devices", N_DEVICES, dict(batch_size=32, grad="manual")),
             ("autodiff, full batch 256 over 4 devices", 4, dict(batch_size=None, grad="autodiff")),
             ("manual, batch 64 over 8 devices, minibatch metrics", N_DEVICES,
              dict(batch_size=64, grad="manual", metrics="minibatch"))]
    report = {}
    for what, n, kw in cases:
        ref, h_ref = jaxmlp.fit(params, x, y, **FIT, **kw)
        got, h_got = jaxmlp.fit(params, x, y, **FIT, **kw, mesh=mesh_of(n, "data"))
        report[what] = assert_close(ref, got, what)
        assert_close(h_ref["loss"], h_got["loss"], what + ", history['loss']")
        assert max_abs_diff(ref, params) > 1e-2, f"{what}: the parameters did not train"
        for leaf in jax.tree.leaves(got):
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == n, (
                f"{what}: params should come back replicated over the {n} devices, got {leaf.sharding}")
    return report


def _all_reduced_shapes(hlo: str) -> list[tuple[int, ...]]:
    """The f32 array shapes produced by the all-reduces of a compiled HLO module."""
    shapes = []
    for m in re.finditer(r"=\s*(.*?)\s+all-reduce(?:-start)?\(", hlo):
        shapes += [tuple(int(d) for d in dims.split(",") if d) for dims in re.findall(r"f32\[([\d,]*)\]", m.group(1))]
    return shapes


def gradients_are_all_reduced():
    """The program fit compiles for a "data" mesh all-reduces every gradient, dW (B3) and db (B4)."""
    x, y = data()
    params = jaxmlp.init_mlp(jax.random.key(0), [16, 32, 4])
    calls, compiled = [], train._compiled_epochs

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return compiled(*args, **kwargs)

    train._compiled_epochs = spy
    try:
        jaxmlp.fit(params, x, y, **FIT, batch_size=32, mesh=mesh_of(N_DEVICES, "data"))
    finally:
        train._compiled_epochs = compiled
    assert calls, "fit did not call jaxmlp.train._compiled_epochs; update this test to the new call path"
    args, kwargs = calls[0]
    hlo = compiled.lower(*args, **kwargs).compile().as_text()
    reduced = _all_reduced_shapes(hlo)
    missing = [leaf.shape for leaf in jax.tree.leaves(params) if leaf.shape not in reduced]
    assert not missing, (f"the compiled program does not all-reduce gradients of shapes {missing}; "
                         f"all-reduced f32 shapes: {reduced}")
    return {"all_reduced_shapes": [list(s) for s in reduced]}


def ensemble_model_parallel_matches_unsharded():
    """fit_ensemble(mesh=) with a "model" axis: K = 8 models over 4 devices, 2 each, stay sharded."""
    x, y = data()
    K, n = 8, 4
    stack = jax.vmap(lambda k: jaxmlp.init_mlp(k, [16, 32, 4]))(jax.random.split(jax.random.key(0), K))
    lrs = jnp.geomspace(1e-3, 1e-2, K)
    kw = dict(learning_rates=lrs, loss="ce", epochs=3, batch_size=32)
    ref, h_ref = jaxmlp.fit_ensemble(stack, x, y, **kw)
    got, h_got = jaxmlp.fit_ensemble(stack, x, y, **kw, mesh=mesh_of(n, "model"))
    diff = assert_close(ref, got, "ensemble")
    assert_close(h_ref["loss"], h_got["loss"], "ensemble history['loss']")
    for leaf in jax.tree.leaves(got):
        spec = tuple(leaf.sharding.spec) + (None,) * (leaf.ndim - len(leaf.sharding.spec))
        assert spec == ("model",) + (None,) * (leaf.ndim - 1), f"expected P('model'), got {leaf.sharding}"
        shards = leaf.addressable_shards
        assert len({s.device for s in shards}) == n, f"expected shards on {n} devices, got {shards}"
        assert all(s.data.shape == (K // n,) + leaf.shape[1:] for s in shards), (
            f"every device should hold K/n = {K // n} models, got shard shapes {[s.data.shape for s in shards]}")
    return {"max_abs_diff": diff}


def bad_meshes_raise():
    x, y = data()
    params = jaxmlp.init_mlp(jax.random.key(0), [16, 32, 4])
    stack = jax.tree.map(lambda leaf: np.repeat(np.asarray(leaf)[None], 6, axis=0), params)  # K = 6, no compile
    lrs = np.full((6,), 1e-3, np.float32)
    assert_raises(lambda: jaxmlp.fit(params, x, y, **FIT, batch_size=32, mesh=mesh_of(4, "batch")), r"'data' axis")
    assert_raises(lambda: jaxmlp.fit(params, x, y, **FIT, batch_size=30, mesh=mesh_of(4, "data")),
                  r"batch_size.*30.*divisible.*4")
    assert_raises(lambda: jaxmlp.fit(params, x[:250], y[:250], **FIT, mesh=mesh_of(4, "data")),
                  r"250.*divisible.*4")
    assert_raises(lambda: jaxmlp.fit_ensemble(stack, x, y, learning_rates=lrs, loss="ce", mesh=mesh_of(4, "data")),
                  r"'model' axis")
    assert_raises(lambda: jaxmlp.fit_ensemble(stack, x, y, learning_rates=lrs, loss="ce", mesh=mesh_of(4, "model")),
                  r"K = 6.*divisible.*4")


def explicit_axis_mesh():
    """A ``jax.make_mesh`` mesh (``Explicit`` axes by default in recent jax, 0.10.2 here) works as an Auto one."""
    x, y = data()
    params = jaxmlp.init_mlp(jax.random.key(0), [16, 32, 4])
    ref, _ = jaxmlp.fit(params, x, y, **FIT, batch_size=32)
    got, _ = jaxmlp.fit(params, x, y, **FIT, batch_size=32, mesh=jax.make_mesh((N_DEVICES,), ("data",)))
    assert_close(ref, got, "fit with a jax.make_mesh mesh")
    stack = jax.vmap(lambda k: jaxmlp.init_mlp(k, [16, 32, 4]))(jax.random.split(jax.random.key(0), N_DEVICES))
    kw = dict(learning_rates=jnp.full((N_DEVICES,), 1e-2), loss="ce", epochs=3, batch_size=32)
    ref, _ = jaxmlp.fit_ensemble(stack, x, y, **kw)
    got, _ = jaxmlp.fit_ensemble(stack, x, y, **kw, mesh=jax.make_mesh((N_DEVICES,), ("model",)))
    assert_close(ref, got, "fit_ensemble with a jax.make_mesh mesh")


def _interrupt_after_epoch_2(epoch, metrics):
    if epoch == 2:
        raise KeyboardInterrupt


def _interrupted_and_resumed(fitter, directory):
    """``fitter(checkpoint_dir=...)`` interrupted after epoch 2 and resumed in ``directory``/a, and uninterrupted in
    ``directory``/b: ``((resumed params, history), (uninterrupted params, history))``."""
    try:
        fitter(checkpoint_dir=f"{directory}/a", callback=_interrupt_after_epoch_2)
        raise AssertionError("the callback did not interrupt the run")
    except KeyboardInterrupt:
        pass
    return fitter(checkpoint_dir=f"{directory}/a"), fitter(checkpoint_dir=f"{directory}/b")


def resume_under_a_mesh_is_bit_identical():
    """fit(mesh=) over a "data" axis and fit_ensemble(mesh=) over a "model" axis, 4 of the 8 devices:
    interrupted after epoch 2 and resumed, each equals its uninterrupted sharded run bit for bit and stays on
    the mesh (replicated for fit, sharded over the models for fit_ensemble)."""
    import tempfile

    import chex

    x = jax.random.normal(jax.random.key(1), (32, 4))
    y = jax.random.normal(jax.random.key(2), (32, 1))
    params = jaxmlp.init_mlp(jax.random.key(0), [4, 8, 1])
    kw = dict(optimizer=optim.adam(1e-2), loss="mse", epochs=4, batch_size=8, key=jax.random.key(3),
              mesh=mesh_of(4, "data"), checkpoint_every=2)
    stack = jax.vmap(lambda k: jaxmlp.init_mlp(k, [4, 8, 1]))(jax.random.split(jax.random.key(5), 4))
    ensemble_kw = dict(learning_rates=jnp.asarray([1e-3, 3e-3, 1e-2, 3e-2]), loss="mse", epochs=4, batch_size=8,
                       key=jax.random.key(3), shuffle="per_model", mesh=mesh_of(4, "model"), checkpoint_every=2)
    runs = [("fit", lambda **c: jaxmlp.fit(params, x, y, **kw, **c), True),
            ("fit_ensemble", lambda **c: jaxmlp.fit_ensemble(stack, x, y, **ensemble_kw, **c), False)]
    for what, fitter, replicated in runs:
        with tempfile.TemporaryDirectory() as directory:
            (resumed, resumed_history), (whole, history) = _interrupted_and_resumed(fitter, directory)
        chex.assert_trees_all_equal(resumed, whole, strict=True)
        np.testing.assert_array_equal(resumed_history["loss"], history["loss"], err_msg=what)
        for leaf in jax.tree.leaves(resumed):
            assert leaf.sharding.is_fully_replicated == replicated and len(leaf.sharding.device_set) == 4, (
                f"{what}: resumed params should be {'replicated' if replicated else 'sharded'} over 4 devices, "
                f"got {leaf.sharding}")


CASES = {f.__name__: f for f in (data_parallel_matches_single_device, gradients_are_all_reduced,
                                 ensemble_model_parallel_matches_unsharded, bad_meshes_raise, explicit_axis_mesh,
                                 resume_under_a_mesh_is_bit_identical)}


def main(argv):
    out, names = argv[0], argv[1:] or list(CASES)
    if jax.device_count() < N_DEVICES:
        raise SystemExit(f"needs {N_DEVICES} devices, got {jax.devices()}: "
                         f"run with XLA_FLAGS=--xla_force_host_platform_device_count={N_DEVICES}")
    results = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            results[name] = {"ok": True, "info": CASES[name]()}
        except Exception:  # noqa: BLE001 -- reported to the parent test, which fails with it
            results[name] = {"ok": False, "error": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - t0
        print(f"{name}: {'ok' if results[name]['ok'] else 'FAILED'}", flush=True)
        with open(out, "w") as f:  # rewritten after each case: a crash later keeps the earlier results
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
