r"""Experimental formulations of an ensemble step: prototypes for the library, timed beside it.

K models, one shared minibatch X (B × n_0) per step, ReLU hidden layers, Adam. Two formulations, timed
in the same ``lax.scan`` harness as ``jax-optax-vmap`` so that only the step differs:

- ``jaxmlp-vmap``: ``jax.vmap`` over K of the jaxmlp manual step (``backward`` + ``optim.adam``): the step
  that :func:`jaxmlp.fit_ensemble` runs, without its per-epoch evaluation and permutation.
- ``folded``: the backward written for the stack. Weights are kept ``(K, n_in, n_out)``, so each
  forward product is a batched "NN" matmul (``kbi,kio->kbo``), which XLA:CPU's YNNPACK fusion ran up to
  1.5× faster than the "NT" ``A @ W.T`` of ``(K, n_out, n_in)`` weights in isolation. The first layer
  folds K into the matmul's free dimension, since every model sees the same X: one
  ``(B, n_0) @ (n_0, K·n_1)`` product forward and one ``(n_0, B) @ (B, K·n_1)`` for ∂L/∂W[1]. (XLA
  already finds this folding by itself in ``jaxmlp-vmap``: its HLO has the same two GEMMs.) The
  weight gradient ``Σ_b A[b,i] Δ[b,o]`` contracts the batch, the major axis of both operands; XLA:CPU
  runs that batched "TN" product per matrix at 2.8 µs per model-step for the 64 × 32 layer, against
  1.4 µs for writing A[l]ᵀ out first (an optimization barrier keeps XLA from folding the transpose
  back) and an "NN" product. At K = 256 that took this step from 12.8 to 11.2 µs per model-step
  measured alone; inside the suite's runs it varies between 12 and 15 µs with the machine's load.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp import optim

from benchmarks.harness import Bench
from benchmarks.systems import LR, Config, jaxmlp_grad_fn, scan_bench, stacked_params, train_step


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
    from benchmarks.systems import _fit_shape, expert_bench, jaxmlp_fit, jaxmlp_fit_ensemble
    from benchmarks.suite import SEED

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


if __name__ == "__main__":  # python -m benchmarks.experimental [K] [epochs]
    import sys

    compare_with_experts(*(int(a) for a in sys.argv[1:3]))
