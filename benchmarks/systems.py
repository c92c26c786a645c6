"""The JAX systems under test, one builder per system, each returning a :class:`~benchmarks.harness.Bench`.

Every system does the same work: one Adam step (lr 1e-3) of an MLP with ReLU hidden layers on a minibatch,
MSE for a one-output config, softmax cross-entropy on integer labels otherwise.

- ``jaxmlp-manual``: ``jaxmlp.backward`` + ``jaxmlp.optim.adam`` + ``optim.apply_updates``, one jitted step;
- ``jaxmlp-autodiff``: the same with ``jax.value_and_grad(jaxmlp.loss_fn)``;
- ``jax-optax``: an independent plain-JAX MLP (weights ``(in, out)``, ``x @ w + b``), ``jax.grad`` and
  ``optax.adam``: the reference;
- ``jaxmlp-fit``: ``jaxmlp.fit`` (whole epochs in one program) divided by its number of steps, with its
  default per-epoch evaluation on the whole training set; ``jaxmlp-fit-minibatch`` with
  ``metrics="minibatch"`` (the running mean of the steps' own losses, no extra forward pass);
- ensembles of K models on one shared minibatch, µs per *model*-step: ``jaxmlp-fit_ensemble``,
  ``jaxmlp-fit_ensemble-minibatch`` (``metrics="minibatch"``), ``jax-optax-vmap`` (``vmap`` of the
  reference step over K, ``lax.scan`` over pre-drawn steps);
- the expert baselines, what a JAX user writes in ten lines for a whole training run (the same work as
  ``jaxmlp-fit``, without its per-epoch metrics): ``expert-scan``, ``lax.scan`` over epochs of a
  ``jax.random.permutation`` shuffle and ``lax.scan`` over its minibatches, ``jax.grad`` + ``optax.adam``;
  ``expert-vmap``, ``jax.vmap`` of that run over K models (one shared key: one shuffle for all).

A config's ``dtype`` is the compute dtype. jaxmlp keeps its parameters in it (its Adam holds float32
moments); the reference keeps float32 master weights and casts to the compute dtype in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

import jaxmlp
from benchmarks.harness import Bench, compile_jit, stateful
from jaxmlp import optim

LR = 1e-3


@dataclass(frozen=True)
class Config:
    """An MLP training problem: layer widths, minibatch size, loss, compute dtype."""

    name: str
    sizes: tuple[int, ...]
    batch: int
    loss: str = "ce"
    dtype: str = "float32"

    @property
    def macs(self) -> int:
        """Σ n_in·n_out: multiply-adds per example of one forward pass."""
        return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def step_flops(self) -> int:
        """FLOPs of one training step: forward 2·B·Σ n_in·n_out, backward ≈ twice that."""
        return 6 * self.batch * self.macs

    @property
    def jdtype(self):
        return jnp.dtype(self.dtype)


# The suite's configs (``benchmarks.suite`` and ``benchmarks.experimental`` both use them: they live here, below both).
SEED = Config("seed", (5, 64, 32, 16, 1), 32, "mse")
MNIST = Config("mnist", (784, 512, 512, 10), 256, "ce")
WIDE = Config("wide", (1024, 2048, 2048, 10), 1024, "ce")
# The README's digits job (benchmarks/first_result.py): 1438 training examples, Adam 3e-3, 40 epochs.
DIGITS = Config("digits", (64, 64, 32, 10), 64, "ce")
DIGITS_LR, DIGITS_EPOCHS = 3e-3, 40

# Dense (no sparsity) peaks from the vendor's datasheet, TFLOP/s, keyed by a substring of device_kind; the
# first key found in device_kind wins, so the more specific names come first. The one table of peaks: the
# suite's MFU columns and benchmarks/gpu_run.py read it.
DOCUMENTED_PEAKS_TFLOPS = {
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "H200": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0},
}


def documented_peaks(device_kind: str) -> dict | None:
    """The datasheet's dense peaks (TFLOP/s: ``bf16``, ``tf32``, ``fp32``) of a device, or None if unknown."""
    return next((v for k, v in DOCUMENTED_PEAKS_TFLOPS.items() if k in device_kind), None)


def data(cfg: Config, n: int, key=None):
    """``n`` examples: x standard normal in the compute dtype, y ``(n, 1)`` float32 (mse) or int32 labels."""
    kx, ky = jax.random.split(jax.random.key(1) if key is None else key)
    x = jax.random.normal(kx, (n, cfg.sizes[0]), jnp.float32)
    if cfg.loss == "mse":
        y = jnp.sum(x, axis=1, keepdims=True)[:, : cfg.sizes[-1]]
    else:
        y = jax.random.randint(ky, (n,), 0, cfg.sizes[-1], jnp.int32)
    return x.astype(cfg.jdtype), y


# ---- jaxmlp -------------------------------------------------------------------------------------------


def train_step(grad_fn, optimizer, apply_updates=optim.apply_updates):
    """The step every system times: ``grads = grad_fn(params, x, y)``, then ``optimizer``'s update."""

    def step(params, opt_state, x, y):
        updates, opt_state = optimizer.update(grad_fn(params, x, y), opt_state, params)
        return apply_updates(params, updates), opt_state

    return step


def jaxmlp_grad_fn(cfg: Config, grad: str = "manual"):
    """``(params, x, y) -> grads`` of jaxmlp's MLP with ReLU hidden layers: by hand or by ``jax.grad``."""
    kw = dict(activation="relu", loss=cfg.loss)
    if grad == "manual":
        return lambda params, x, y: jaxmlp.backward(params, x, y, **kw)[1]
    return jax.grad(partial(jaxmlp.loss_fn, **kw))


def stacked_params(cfg: Config, K: int):
    """K jaxmlp MLPs of ``cfg``, every leaf with a leading axis K."""
    keys = jax.random.split(jax.random.key(0), K)
    return jax.vmap(lambda k: jaxmlp.init_mlp(k, cfg.sizes, dtype=cfg.jdtype))(keys)


def jaxmlp_step(cfg: Config, grad: str = "manual") -> Bench:
    params = jaxmlp.init_mlp(jax.random.key(0), cfg.sizes, dtype=cfg.jdtype)
    optimizer = optim.adam(LR, mu_dtype=jnp.float32)  # bf16 configs: both moments in float32, as documented
    x, y = data(cfg, cfg.batch)
    state = (params, optimizer.init(params))
    step = train_step(jaxmlp_grad_fn(cfg, grad), optimizer)
    compiled, compile_s, temp = compile_jit(step, *state, x, y, donate_argnums=(0, 1))
    return Bench(f"jaxmlp-{grad}", stateful(compiled, state, x, y), 1, compile_s, temp)


def _fit_shape(cfg: Config, target_flops: float):
    """(steps per epoch, epochs) so that one fit call is about ``target_flops`` of training (8 to 4096 steps)."""
    steps = min(4096, max(8, int(target_flops // cfg.step_flops)))
    per_epoch = min(64, steps)
    return per_epoch, max(1, steps // per_epoch)


def _suffix(metrics: str) -> str:
    return "" if metrics == "full" else "-" + metrics


def jaxmlp_fit(cfg: Config, target_flops: float = 2e9, metrics: str = "full") -> Bench:
    per_epoch, epochs = _fit_shape(cfg, target_flops)
    params = jaxmlp.init_mlp(jax.random.key(0), cfg.sizes, dtype=cfg.jdtype)
    x, y = data(cfg, cfg.batch * per_epoch)
    optimizer = optim.adam(LR)
    run = partial(jaxmlp.fit, optimizer=optimizer, loss=cfg.loss, activation="relu", epochs=epochs,
                  batch_size=cfg.batch, key=jax.random.key(2), metrics=metrics)

    def call():
        return run(params, x, y)[0]

    note = f"{epochs} epochs x {per_epoch} steps per call; metrics={metrics!r}"
    return Bench("jaxmlp-fit" + _suffix(metrics), call, per_epoch * epochs, note=note)


def jaxmlp_fit_ensemble(cfg: Config, K: int, epochs: int = 1, per_epoch: int = 64, metrics: str = "full") -> Bench:
    params = stacked_params(cfg, K)
    lrs = jnp.geomspace(1e-4, 1e-2, K)
    x, y = data(cfg, cfg.batch * per_epoch)
    run = partial(jaxmlp.fit_ensemble, learning_rates=lrs, loss=cfg.loss, activation="relu", epochs=epochs,
                  batch_size=cfg.batch, key=jax.random.key(2), metrics=metrics)

    def call():
        return run(params, x, y)[0]

    note = f"K={K}; {epochs} epochs x {per_epoch} steps per call; metrics={metrics!r}"
    return Bench("jaxmlp-fit_ensemble" + _suffix(metrics), call, K * epochs * per_epoch, note=note)


def digits_data():
    """The digits job's training set ``(x, y)`` as numpy arrays: jaxmlp's split and standardization (float32)."""
    import numpy as np

    from jaxmlp import datasets

    x, y, _, _ = (np.asarray(a) for a in datasets.load("digits", seed=0))
    return x, y


def digits_fit(epochs: int = DIGITS_EPOCHS, metrics: str = "full") -> Bench:
    """The README's digits job as a user runs it: ``jaxmlp.fit`` of [64, 64, 32, 10] (ReLU, softmax CE), Adam
    3e-3, batch 64, ``epochs`` epochs, one call per repeat; per step (22 steps per epoch: the last partial
    batch is dropped)."""
    x, y = (jnp.asarray(a) for a in digits_data())
    params = jaxmlp.init_mlp(jax.random.key(0), DIGITS.sizes)
    run = partial(jaxmlp.fit, optimizer=optim.adam(DIGITS_LR), loss="ce", activation="relu", epochs=epochs,
                  batch_size=DIGITS.batch, key=jax.random.key(1), metrics=metrics)

    def call():
        return run(params, x, y)[0]

    per_epoch = x.shape[0] // DIGITS.batch
    note = f"digits job: {epochs} epochs x {per_epoch} steps per call; metrics={metrics!r}"
    return Bench("jaxmlp-fit" + _suffix(metrics), call, epochs * per_epoch, note=note)


# ---- the reference: plain JAX + optax ------------------------------------------------------------------


def ref_init(key, sizes, dtype=jnp.float32):
    """He-normal weights ``(in, out)`` and zero biases, a list of dicts."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (m, n), dtype) * jnp.sqrt(2.0 / m).astype(dtype), "b": jnp.zeros((n,), dtype)}
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def ref_loss(params, x, y, *, loss, compute_dtype=jnp.float32):
    h = x.astype(compute_dtype)
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"].astype(compute_dtype) + layer["b"].astype(compute_dtype))
    return objective(h @ params[-1]["w"].astype(compute_dtype) + params[-1]["b"].astype(compute_dtype), y, loss)


def objective(out, y, loss: str):
    """The mean loss of float32 network outputs ``out``: MSE, or softmax cross-entropy on integer labels."""
    out = out.astype(jnp.float32)
    if loss == "mse":
        return jnp.mean((out - y) ** 2)
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(out, y))


def optax_step(loss_of_params):
    """``(optax.adam, step)``: ``jax.grad`` of ``loss_of_params`` and ``optax.adam``, the reference's step."""
    tx = optax.adam(LR)
    return tx, train_step(jax.grad(loss_of_params), tx, optax.apply_updates)


def ref_step_fn(cfg: Config):
    return optax_step(partial(ref_loss, loss=cfg.loss, compute_dtype=cfg.jdtype))


def reference_step(cfg: Config) -> Bench:
    tx, step = ref_step_fn(cfg)
    params = ref_init(jax.random.key(0), cfg.sizes)
    x, y = data(cfg, cfg.batch)
    state = (params, tx.init(params))
    compiled, compile_s, temp = compile_jit(step, *state, x, y, donate_argnums=(0, 1))
    return Bench("jax-optax", stateful(compiled, state, x, y), 1, compile_s, temp)


def scan_steps(step, n_steps):
    """``n_steps`` steps of ``step(params, opt_state, x, y)`` over pre-drawn batches, as one program."""

    def run(params, opt_state, xs, ys):
        def body(carry, batch):
            return step(*carry, *batch), None

        return jax.lax.scan(body, (params, opt_state), (xs, ys), length=n_steps)[0]

    return run


def scan_bench(name, step, state, cfg: Config, K: int, n_steps: int) -> Bench:
    """``n_steps`` of ``step`` on pre-drawn minibatches of ``cfg`` as one program (:func:`scan_steps`),
    timed per model-step for K models."""
    xs, ys = data(cfg, cfg.batch * n_steps)
    xs, ys = xs.reshape(n_steps, cfg.batch, -1), ys.reshape((n_steps, cfg.batch) + ys.shape[1:])
    compiled, compile_s, temp = compile_jit(scan_steps(step, n_steps), *state, xs, ys, donate_argnums=(0, 1))
    return Bench(name, stateful(compiled, state, xs, ys), K * n_steps, compile_s, temp,
                 note=f"K={K}; {n_steps} steps per call (lax.scan)")


def expert_run(cfg: Config, epochs: int, batch: int):
    """``(tx, run)``, ``run(params, opt_state, key, x, y) -> (params, opt_state)`` the expert's whole run."""
    tx, step = ref_step_fn(cfg)

    def run(params, opt_state, key, x, y):
        n = x.shape[0]

        def epoch(carry, k):
            rows = jax.random.permutation(k, n)[: (n // batch) * batch].reshape(n // batch, batch)
            carry, _ = jax.lax.scan(lambda c, r: (step(*c, x[r], y[r]), None), carry, rows)
            return carry, None

        return jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))[0]

    return tx, run


def expert_bench(cfg: Config, K: int, epochs: int, per_epoch: int) -> Bench:
    """The expert run of ``epochs`` x ``per_epoch`` steps: one model (``expert-scan``), or ``jax.vmap`` of it
    over K models sharing the key (``expert-vmap``); per model-step."""
    tx, run = expert_run(cfg, epochs, cfg.batch)
    x, y = data(cfg, cfg.batch * per_epoch)
    if K == 1:
        params = ref_init(jax.random.key(0), cfg.sizes)
        state, name = (params, tx.init(params)), "expert-scan"
    else:
        params = jax.vmap(lambda k: ref_init(k, cfg.sizes))(jax.random.split(jax.random.key(0), K))
        state, name = (params, jax.vmap(tx.init)(params)), "expert-vmap"
        run = jax.vmap(run, in_axes=(0, 0, None, None, None))
    key = jax.random.key(2)
    compiled, compile_s, temp = compile_jit(run, *state, key, x, y, donate_argnums=(0, 1))
    cell = [jax.tree.map(jnp.copy, state)]

    def call():
        cell[0] = compiled(*cell[0], key, x, y)
        return cell[0]

    return Bench(name, call, K * epochs * per_epoch, compile_s, temp,
                 note=f"K={K}; {epochs} epochs x {per_epoch} steps per call (jax.random.permutation shuffle)")


def reference_vmap_ensemble(cfg: Config, K: int, n_steps: int = 64) -> Bench:
    """K reference models (``vmap``) on one shared minibatch per step, ``n_steps`` per call (``lax.scan``)."""
    tx, step = ref_step_fn(cfg)
    params = jax.vmap(lambda k: ref_init(k, cfg.sizes))(jax.random.split(jax.random.key(0), K))
    state = (params, jax.vmap(tx.init)(params))
    return scan_bench("jax-optax-vmap", jax.vmap(step, in_axes=(0, 0, None, None)), state, cfg, K, n_steps)
