"""Time and peak memory of ``check_gradients`` on a real network, in a fresh process.

    python -m benchmarks.gradcheck_scale [--model mlp|layer_norm] [--failing] [--out FILE.json]
    python -m benchmarks.gradcheck_scale --model layer_norm --both     # passing and failing, fresh processes

``mlp``: jaxmlp's backward of [784, 512, 512, 10] (``--sizes``), float64, batch 64. ``layer_norm``: the
34-leaf, 483,850-parameter layer-norm MLP of issue 23 (64 inputs, 8 blocks of Dense 256 + LayerNorm +
GELU, a 10-way softmax cross-entropy head), float64, batch 64, with ``jax.value_and_grad`` as the checked
backward; ``--failing`` plants one entry of a 256 x 256 weight off by 1e-4 relative. Both use the default
finite-difference budget. It reports the wall time of the first call (compilation included), of a repeat
call with the same shapes, and the process's peak resident memory (Linux's ``VmHWM``, else
``ru_maxrss``), which includes jax's own import (measured apart, before the check). Targets: the MLP under
10 s and 1 GB (issue 10); the layer-norm MLP under 10 s and 1 GB, failing at most 1.5x passing (issue 23).
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


def layer_norm_mlp(key, n_in=64, width=256, blocks=8, n_out=10):
    """The 34-leaf layer-norm MLP: ``(params, loss_fn)``, params a dict of blocks (float64 under x64)."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(key, blocks + 1)
    dims = [n_in] + [width] * blocks
    params = {f"block{i}": {"W": jax.random.normal(keys[i], (dims[i], width)) / jnp.sqrt(dims[i]),
                            "b": jnp.zeros(width), "gamma": jnp.ones(width), "beta": jnp.zeros(width)}
              for i in range(blocks)}
    params["out"] = {"W": jax.random.normal(keys[-1], (width, n_out)) / jnp.sqrt(width), "b": jnp.zeros(n_out)}

    def loss_fn(params, x, labels):
        h = x
        for i in range(blocks):
            p = params[f"block{i}"]
            z = h @ p["W"] + p["b"][None]
            z = (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-5)
            h = jax.nn.gelu(z * p["gamma"][None] + p["beta"][None], approximate=False)
        logits = h @ params["out"]["W"] + params["out"]["b"][None]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])

    return params, loss_fn


def _problem(args):
    """``(params, args, check kwargs)`` of the chosen model, float64."""
    import jax
    import jax.numpy as jnp

    import jaxmlp

    k_p, k_x, k_y = jax.random.split(jax.random.key(0), 3)
    if args.model == "mlp":
        params = jaxmlp.init_mlp(k_p, args.sizes, dtype=jnp.float64)
        x = jax.random.normal(k_x, (args.batch, args.sizes[0]), jnp.float64)
        labels = jax.random.randint(k_y, (args.batch,), 0, args.sizes[-1])
        kw = dict(activation="relu", loss="ce")
        if args.failing:
            def slip(p, x, y):  # one entry of the 512 x 512 layer off by 1e-4 relative
                loss, g = jaxmlp.backward(p, x, y, **kw)
                W = g[1].W
                return loss, (g[0], g[1]._replace(W=W.at[3, 7].multiply(1 + 1e-4)), *g[2:])
            kw = dict(backward_fn=slip, loss_fn=lambda p, x, y: jaxmlp.loss_fn(p, x, y, **kw))
        return params, (x, labels), kw
    params, loss_fn = layer_norm_mlp(k_p)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(k_x, (args.batch, 64), jnp.float64)
    labels = jax.random.randint(k_y, (args.batch,), 0, 10)
    backward = jax.jit(jax.value_and_grad(loss_fn))
    if args.failing:
        right = backward

        def backward(p, x, y):
            loss, g = right(p, x, y)
            W = g["block3"]["W"]
            return loss, {**g, "block3": {**g["block3"], "W": W.at[5, 7].multiply(1 + 1e-4)}}
    return params, (x, labels), dict(backward_fn=backward, loss_fn=loss_fn)


def _both(argv) -> dict:
    """Passing, then failing, each in a fresh process: their times and the ratio."""
    import subprocess
    import sys

    runs = {}
    for failing in (False, True):
        cmd = [sys.executable, "-m", "benchmarks.gradcheck_scale", *argv] + (["--failing"] if failing else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs["failing" if failing else "passing"] = json.loads(out[out.rindex("\n{"):])
    runs["failing_over_passing"] = round(runs["failing"]["first_call_s"] / runs["passing"]["first_call_s"], 3)
    print(json.dumps(runs, indent=1))
    return runs


def main(argv=None) -> dict:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("mlp", "layer_norm"), default="mlp")
    ap.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 512, 10])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--failing", action="store_true", help="plant one entry off by 1e-4 relative")
    ap.add_argument("--both", action="store_true", help="passing and failing, each in a fresh process")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    if args.both:
        return _both([a for a in argv if a != "--both"])

    import jax

    import jaxmlp

    base_mb = _peak_mb()
    with jax.enable_x64(True):
        params, call_args, kw = _problem(args)
    t0 = time.perf_counter()
    report = jaxmlp.check_gradients(params, *call_args, **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = jaxmlp.check_gradients(params, *call_args, **kw)
    repeat = time.perf_counter() - t0
    n_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    result = dict(model=args.model, failing=args.failing, leaves=len(jax.tree.leaves(params)),
                  sizes=args.sizes if args.model == "mlp" else None, batch=args.batch,
                  parameters=int(n_params), ok=bool(report.ok and again.ok), fd_spent=report.fd_spent,
                  first_call_s=round(first, 3), repeat_call_s=round(repeat, 3),
                  peak_rss_mb=round(_peak_mb(), 1), rss_after_import_mb=round(base_mb, 1),
                  load_average_1min=round(os.getloadavg()[0], 2), jax=jax.__version__)
    print(report)
    print("\n" + json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
