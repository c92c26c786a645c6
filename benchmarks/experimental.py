r"""Experimental formulations of an ensemble step: prototypes for the library, timed beside it.

K models, one shared minibatch X (B × n_0) per step, ReLU hidden layers, Adam. Two formulations, timed
in the same ``lax.scan`` harness as ``jax-optax-vmap`` so that only the step differs:

- ``jaxmlp-vmap``: ``jax.vmap`` over K of the jaxmlp manual step (``backward`` + ``optim.adam``): the step
  that :func:`jaxmlp.fit_ensemble` ran before it wrote Δᵀ out (below), without its per-epoch evaluation
  and permutation.
- ``folded``: the backward written for the stack. Weights are kept ``(K, n_in, n_out)``, so each
  forward product is a batched "NN" matmul (``kbi,kio->kbo``). The first layer folds K into the
  matmul's free dimension, since every model sees the same X: one ``(B, n_0) @ (n_0, K·n_1)`` product
  forward and one ``(n_0, B) @ (B, K·n_1)`` for ∂L/∂W[1]. (XLA already finds this folding by itself
  under ``vmap``.) The weight gradient ``Σ_b A[b,i] Δ[b,o]`` contracts the batch, the major axis of
  both operands; XLA:CPU runs that batched "TN" product per matrix (a plain ``dot`` thunk, not a
  YNNPACK fusion), at twice the cost of writing one operand's transpose out first (an optimization
  barrier keeps XLA from folding the transpose back) and an "NN" product.

What the library took: :func:`jaxmlp.fit_ensemble` writes Δ[l]ᵀ (not A[l-1]ᵀ) out, so the "NN" product
gives ∂L/∂W[l] directly in the library's ``(K, n_out, n_in)`` layout (for layers 2..L the same values,
bit for bit, as ``vmap`` of ``backward``), and takes layer 1 of a shared minibatch as (X_bᵀ Δ[1])ᵀ,
one product for all K. The ``(K, n_in, n_out)`` forward gained nothing: the 32 × 64 × 32 forward
product costs the same "NT" or "NN" (about 1.1 µs per model-step, the largest single operation
left), and the extra transposes cost more. ``python -m benchmarks.experimental profile 64 8`` lists
where the time of ``fit_ensemble`` and ``expert-vmap`` goes, operation by operation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.harness import Bench
from benchmarks.systems import (
    LR,
    SEED,
    Config,
    _fit_shape,
    expert_bench,
    jaxmlp_fit,
    jaxmlp_fit_ensemble,
    jaxmlp_grad_fn,
    scan_bench,
    stacked_params,
    train_step,
)
from jaxmlp import optim


def manual_vmap_ensemble(cfg: Config, K: int, n_steps: int = 64) -> Bench:
    params = stacked_params(cfg, K)
    optimizer = optim.adam(LR)
    step = train_step(jaxmlp_grad_fn(cfg, "manual"), optimizer)
    state = (params, jax.vmap(optimizer.init)(params))
    return scan_bench("jaxmlp-vmap", jax.vmap(step, in_axes=(0, 0, None, None)), state, cfg, K, n_steps)


# ---- folded ----------------------------------------------------------------------------------------


def folded_loss_and_grads(Ws, bs, X, Y, loss):
    """Loss (summed over models) and gradients of K stacked MLPs on a shared batch, by hand.

    ``Ws[0]`` is ``(n_0, K, n_1)`` (the shared-input layer, K folded into the output dimension), the
    others ``(K, n_in, n_out)``; ``bs[l]`` is ``(K, n_out)``. The equations are jaxmlp's (F1)-(B4).
    """
    B, L = X.shape[0], len(Ws)
    n0, K, n1 = Ws[0].shape
    Z1 = (X @ Ws[0].reshape(n0, K * n1)).reshape(B, K, n1)  # (F1), one GEMM for all K models
    A = [X, jnp.transpose(jax.nn.relu(Z1 + bs[0][None]), (1, 0, 2))]  # A[1] as (K, B, n_1)
    Zs = [None, Z1]
    for l in range(1, L):
        Z = jnp.einsum("kbi,kio->kbo", A[l], Ws[l]) + bs[l][:, None, :]  # (F1)
        Zs.append(Z)
        A.append(jax.nn.relu(Z) if l < L - 1 else Z)  # (F2)
    out = A[L]
    if loss == "mse":
        n = B * out.shape[-1]
        per_model = jnp.sum((out - Y[None]) ** 2, axis=(1, 2)) / n
        delta = (2.0 / n) * (out - Y[None])  # (B1-mse)
    else:
        logp = jax.nn.log_softmax(out, axis=-1)
        onehot = jax.nn.one_hot(Y, out.shape[-1], dtype=out.dtype)
        per_model = -jnp.sum(logp * onehot[None], axis=(1, 2)) / B
        delta = (jnp.exp(logp) - onehot[None]) / B  # (B1-ce)
    dWs, dbs = [None] * L, [None] * L
    for l in range(L - 1, 0, -1):
        A_T = jax.lax.optimization_barrier(jnp.swapaxes(A[l], 1, 2))  # A[l]ᵀ written out: (B3) becomes "NN"
        dWs[l] = jnp.einsum("kib,kbo->kio", A_T, delta)  # (B3)
        dbs[l] = jnp.sum(delta, axis=1)  # (B4)
        delta = jnp.einsum("kbo,kio->kbi", delta, Ws[l]) * (Zs[l] > 0 if l > 1 else  # (B2)
                                                             jnp.transpose(Zs[1], (1, 0, 2)) > 0)
    dbs[0] = jnp.sum(delta, axis=1)  # (B4)
    delta_flat = jnp.transpose(delta, (1, 0, 2)).reshape(B, K * n1)
    dWs[0] = (X.T @ delta_flat).reshape(n0, K, n1)  # (B3), one GEMM for all K models
    return per_model, (tuple(dWs), tuple(dbs))


def folded_init(cfg: Config, K: int):
    params = stacked_params(cfg, K)
    Ws = [jnp.transpose(p.W, (2, 0, 1) if l == 0 else (0, 2, 1)) for l, p in enumerate(params)]
    return tuple(Ws), tuple(p.b for p in params)


def folded_ensemble(cfg: Config, K: int, n_steps: int = 64) -> Bench:
    optimizer = optim.adam(LR)
    step = train_step(lambda params, x, y: folded_loss_and_grads(*params, x, y, cfg.loss)[1], optimizer)
    params = folded_init(cfg, K)
    return scan_bench("folded", step, (params, optimizer.init(params)), cfg, K, n_steps)



# ---- jaxmlp against the expert baselines, in one run ----------------------------------------------------------


def compare_with_experts(K: int = 64, epochs: int = 8, per_epoch: int = 128, repeats: int = 7, log=print) -> dict:
    """The issue's comparison on the seed config (batch 32, ``per_epoch`` x 32 examples, ``epochs`` epochs per
    call), in one run: ``fit`` against ``expert-scan``, ``fit_ensemble`` (K models) against ``expert-vmap``,
    both metrics modes, µs per model-step. Returns the ratios; logs the medians and the machine's load."""
    import os

    from benchmarks.harness import measure

    log(f"load average before: {os.getloadavg()}")
    flops = SEED.step_flops * epochs * per_epoch
    with jax.numpy_rank_promotion("allow"):  # the expert writes `x @ w + b`
        single = [jaxmlp_fit(SEED, flops, m) for m in ("full", "minibatch")]
        single.append(expert_bench(SEED, 1, *reversed(_fit_shape(SEED, flops))))
        ensemble = [jaxmlp_fit_ensemble(SEED, K, epochs, per_epoch, m) for m in ("full", "minibatch")]
        ensemble.append(expert_bench(SEED, K, epochs, per_epoch))
        stats = {**measure(single, repeats=repeats, min_repeat_s=0.2),
                 **measure(ensemble, repeats=repeats, min_repeat_s=0.2)}
    for name, s in stats.items():
        log(f"{name:32s} {s['us_per_step']:8.2f} us per model-step [{s['us_min']:.2f}, {s['us_max']:.2f}]  {s['note']}")
    ratios = {f"{a}/{b}": stats[a]["us_per_step"] / stats[b]["us_per_step"] for a, b in [
        ("jaxmlp-fit", "expert-scan"), ("jaxmlp-fit-minibatch", "expert-scan"),
        ("jaxmlp-fit_ensemble", "expert-vmap"), ("jaxmlp-fit_ensemble-minibatch", "expert-vmap")]}
    for name, r in ratios.items():
        log(f"{name:48s} {r:.3f}")
    log(f"load average after: {os.getloadavg()}")
    return ratios


# ---- where the time goes: XLA's operations, one profile of each program ------------------------------------------


PROFILE_FLAGS = "--xla_cpu_enable_xprof_traceme=true --xla_dump_to={dump} --xla_dump_hlo_as_text"


def _op_shapes(dump: str) -> dict:
    """``{operation name: (shape, opcode)}`` of every optimized module XLA dumped into ``dump``."""
    import glob
    import re

    shapes = {}
    for path in glob.glob(f"{dump}/*after_optimizations.txt"):
        module = path.split("/")[-1].split(".")[1]
        for line in open(path):
            m = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(", line)
            if m:
                shapes[(module, m.group(1))] = (m.group(2).split("{")[0], m.group(3))
    return shapes


def profile_ensemble(K: int = 64, epochs: int = 8, per_epoch: int = 128, min_us: float = 0.05, log=print) -> dict:
    """Per-operation time of one ``fit_ensemble`` call and one ``expert-vmap`` call (the benches of
    :func:`compare_with_experts`), in µs per model-step, from XLA:CPU's per-thunk trace events. An operation
    run once per step (``per_epoch * epochs`` times) is the step's, the rest the epoch's (evaluation,
    permutation, divergence check). Run in a fresh process: the flags must be set before jax starts
    (``python -m benchmarks.experimental profile [K] [epochs]``). Lists the operations of at least ``min_us``;
    returns ``{system: {"step": µs, "epoch": µs}}``, the sums over all operations. The trace's times are
    wall-clock per operation: on 2 busy cores they include waiting, so compare them within one run."""
    import collections
    import glob
    import os
    import tempfile

    from jax.profiler import ProfileData

    dump = os.environ.get("JAXMLP_PROFILE_DUMP")
    if dump is None or "xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
        raise RuntimeError("run as `python -m benchmarks.experimental profile`, which sets XLA_FLAGS first")
    log(f"load average before: {os.getloadavg()}")
    steps = K * epochs * per_epoch
    out = {}
    with jax.numpy_rank_promotion("allow"):
        benches = [jaxmlp_fit_ensemble(SEED, K, epochs, per_epoch), expert_bench(SEED, K, epochs, per_epoch)]
    for bench in benches:
        jax.block_until_ready(bench.call())  # compiled (fit_ensemble compiles on its first call) and warm
    shapes = _op_shapes(dump)
    for bench in benches:
        trace = tempfile.mkdtemp()
        with jax.profiler.trace(trace):
            jax.block_until_ready(bench.call())
        total, count = collections.Counter(), collections.Counter()
        for plane in ProfileData.from_file(glob.glob(f"{trace}/**/*.xplane.pb", recursive=True)[0]).planes:
            for line in plane.lines:
                for event in line.events:
                    total[event.name] += event.duration_ns
                    count[event.name] += 1
        known = {name: shape for (module, name), shape in shapes.items()
                 if ("ensemble" in module) == (bench.system != "expert-vmap")}
        parts = collections.Counter()
        log(f"== {bench.system}: µs per model-step, per operation (shape, opcode, runs)")
        for name, ns in total.most_common():
            if name not in known or known[name][1] == "while":
                continue
            part = "step" if count[name] >= epochs * per_epoch else "epoch"
            parts[part] += ns / steps / 1e3
            if ns / steps / 1e3 >= min_us:
                log(f"  {ns / steps / 1e3:6.3f}  {part:5s} {known[name][0]:22s} {known[name][1]:8s} x{count[name]:<6d} {name}")
        log(f"  total of the operations: step {parts['step']:.2f}, epoch {parts['epoch']:.2f}")
        out[bench.system] = dict(parts)
    log(f"load average after: {os.getloadavg()}")
    return out


if __name__ == "__main__":  # python -m benchmarks.experimental [profile] [K] [epochs]
    import os
    import subprocess
    import sys
    import tempfile

    args = sys.argv[1:]
    if args[:1] == ["profile"]:
        if "JAXMLP_PROFILE_DUMP" not in os.environ:  # rerun with the flags set before jax starts
            dump = tempfile.mkdtemp()
            env = dict(os.environ, JAXMLP_PROFILE_DUMP=dump,
                       XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + PROFILE_FLAGS.format(dump=dump)).strip())
            sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.experimental", *args], env=env))
        profile_ensemble(*(int(a) for a in args[1:3]))
    else:
        compare_with_experts(*(int(a) for a in args[:2]))
