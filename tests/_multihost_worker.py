"""One process of the two-process ``fit(mesh=)`` test in ``test_sharding.py`` (not collected by pytest).

Each process joins a local coordinator with ``jax.distributed.initialize``, brings 2 CPU devices
(from ``XLA_FLAGS``, set by the parent) and runs the same :func:`jaxmlp.fit` call on a global
``"data"`` mesh over all 4 devices, CPU collectives across processes going through gloo. It writes
the trained params and loss history to ``OUT.npz``; the parent compares both processes with each
other and with a single-process run::

    python tests/_multihost_worker.py COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID OUT.npz

Exit status 3 with a line ``UNSUPPORTED: ...`` means the installed jax cannot run CPU collectives
across processes (the parent then skips).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

# Shared with test_sharding.py, which computes the single-process reference from the same values.
SIZES, N, BATCH, EPOCHS, LR = [16, 32, 4], 256, 32, 3, 1e-2


def problem():
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (N, SIZES[0]))
    y = jax.random.randint(ky, (N,), 0, SIZES[-1])
    return x, y


def train(mesh=None):
    import jaxmlp
    from jaxmlp import optim

    x, y = problem()
    params = jaxmlp.init_mlp(jax.random.key(0), SIZES)
    return jaxmlp.fit(params, x, y, optimizer=optim.adam(LR), loss="ce", epochs=EPOCHS, batch_size=BATCH,
                      key=jax.random.key(2), mesh=mesh)


def main(address, num_processes, process_id, out):
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError as e:  # older jax: no cross-process CPU collectives
        print(f"UNSUPPORTED: jax {jax.__version__} has no jax_cpu_collectives_implementation ({e})", flush=True)
        raise SystemExit(3) from None
    jax.distributed.initialize(coordinator_address=address, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=60)
    from jax.sharding import Mesh

    assert jax.process_count() == num_processes, jax.process_count()
    assert jax.local_device_count() == 2 and jax.device_count() == 2 * num_processes, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert mesh.is_multi_process
    params, history = train(mesh)
    leaves = jax.tree.leaves(params)
    for leaf in leaves:
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == jax.device_count(), leaf.sharding
    np.savez(out, *[np.asarray(leaf.addressable_data(0)) for leaf in leaves], loss=history["loss"])
    print(f"process {process_id}: ok, loss {history['loss']}", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
