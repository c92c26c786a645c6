"""Time and peak memory of ``check_gradients`` on a real network, in a fresh process.

    python -m benchmarks.gradcheck_scale [--sizes 784 512 512 10] [--batch 64] [--out FILE.json]

Checks jaxmlp's backward of the MLP (float64, the default finite-difference strategy: every coordinate
of leaves of at most 256 entries, 16 random directions per larger leaf) and reports the wall time of
the first call (compilation included), of a repeat call with the same shapes, and the process's peak
resident memory (Linux's ``VmHWM``, else ``ru_maxrss``), which includes jax's own import (measured apart,
before the check).
Issue 10's targets for [784, 512, 512, 10] at batch 64: under 10 s and 1 GB on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def _peak_mb() -> float:
    """This process's peak resident memory, MB: Linux's ``VmHWM`` (of this program only), else ``ru_maxrss``,
    which on Linux also counts the parent's memory at the fork before this program started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 512, 10])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import jaxmlp

    base_mb = _peak_mb()
    key = jax.random.key(0)
    k_p, k_x, k_y = jax.random.split(key, 3)
    with jax.enable_x64(True):
        params = jaxmlp.init_mlp(k_p, args.sizes, dtype=jnp.float64)
        x = jax.random.normal(k_x, (args.batch, args.sizes[0]), jnp.float64)
        labels = jax.random.randint(k_y, (args.batch,), 0, args.sizes[-1])
    t0 = time.perf_counter()
    report = jaxmlp.check_gradients(params, x, labels, activation="relu", loss="ce")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = jaxmlp.check_gradients(params, x, labels, activation="relu", loss="ce")
    repeat = time.perf_counter() - t0
    n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    result = dict(sizes=args.sizes, batch=args.batch, parameters=int(n_params), ok=bool(report.ok and again.ok),
                  first_call_s=round(first, 3), repeat_call_s=round(repeat, 3),
                  peak_rss_mb=round(_peak_mb(), 1), rss_after_import_mb=round(base_mb, 1),
                  load_average_1min=round(os.getloadavg()[0], 2), jax=jax.__version__)
    print(report)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
