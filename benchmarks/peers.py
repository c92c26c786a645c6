"""Peer libraries doing the same MLP training step with Adam, each imported only if installed.

Each builder returns a :class:`~benchmarks.harness.Bench`, or ``None`` when the library is missing (or,
for PyTorch, when it cannot run on the requested device). Written the way each library's docs write it:

- ``equinox``: ``eqx.nn.MLP`` (``eqx.nn.Sequential`` of ``eqx.nn.Linear`` where the hidden widths differ,
  which ``eqx.nn.MLP`` cannot express), ``vmap`` over the batch, ``eqx.filter_grad``, ``optax.adam``, the step
  under ``eqx.filter_jit(donate="all-except-first")``, called with the batch first; ``equinox-jit``: the
  same model with ``eqx.partition`` done once and the step under plain ``jax.jit`` (no per-call filtering);
- ``flax-nnx``: ``nnx.Linear`` layers, ``nnx.Optimizer`` with ``optax.adam``, the step under ``nnx.jit`` at its
  fastest (``nnx.jit_partial(..., graph=False)``: the model and optimizer flattened once, their state donated);
- ``torch-eager``: ``nn.Sequential``, ``torch.optim.Adam`` (its default foreach implementation), with
  denormals flushed to zero as XLA:CPU does; PyTorch's default intra-op threads (one per core) unless the
  caller set them;
- ``torch-compile``: the same step function under ``torch.compile`` (default mode, Inductor's C++ CPU
  backend: it needs a C++ compiler). Dynamo breaks the graph at ``loss.backward()``: the forward and
  its backward are one AOTAutograd graph, ``opt.step()`` and ``zero_grad`` another. Its compile time
  (the first three calls, which compile and may recompile, less three steady calls) is reported apart
  from the step time;
- ``torch-func-vmap``: K stacked models, ``torch.func.functional_call`` + ``vmap(grad(loss))``,
  ``torch.optim.Adam`` on the stacked parameters;
- ``sklearn-mlp``: scikit-learn's ``MLPClassifier`` on the README's digits job (a whole ``fit`` per call).
"""

from __future__ import annotations

import importlib.util

import jax
import numpy as np

from benchmarks.harness import Bench, compile_jit, stateful
from benchmarks.systems import LR, Config, data, objective, optax_step


def available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def versions() -> dict:
    out = {}
    for name in ("jax", "jaxlib", "optax", "equinox", "flax", "torch", "sklearn", "numpy", "matplotlib"):
        if available(name):
            out[name] = getattr(__import__(name), "__version__", "?")
    return out


def library_facts() -> dict:
    """How each installed library computes on this machine (recorded with the results): PyTorch's
    default thread counts, its BLAS and oneDNN, whether Inductor finds a C++ compiler."""
    import shutil

    out = {"jax_backend": jax.default_backend(), "jax_devices": [d.device_kind for d in jax.devices()]}
    if available("torch"):
        import torch

        out["torch"] = dict(default_intra_op_threads=torch.get_num_threads(),
                            default_inter_op_threads=torch.get_num_interop_threads(),
                            mkl=torch.backends.mkl.is_available(), mkldnn=torch.backends.mkldnn.is_available(),
                            cpu_capability=torch.backends.cpu.get_cpu_capability(),
                            cxx_compiler=shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"),
                            parallel_info=torch.__config__.parallel_info())
    return out


def _lowered_stats(lower) -> tuple[float | None, int | None]:
    """``(compile_s, temp_bytes)`` of a peer's own ``.lower(...)``: lowering and compiling timed apart from
    any step (the step's first call then finds jax's caches warm, or compiles again: timed apart too)."""
    import time

    from benchmarks.harness import temp_bytes

    try:
        t0 = time.perf_counter()
        compiled = lower().compile()
        compile_s = time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - a version without .lower: compile time as first call - median call
        return None, None
    inner = getattr(compiled, "compiled", compiled)  # equinox's Compiled wraps jax's
    return compile_s, temp_bytes(inner)


def equinox_model(cfg: Config, key):
    """``eqx.nn.MLP`` (ReLU hidden layers, identity output) when the hidden widths are equal, as it requires;
    else the same layers as ``eqx.nn.Sequential`` of ``eqx.nn.Linear`` and ``eqx.nn.Lambda(jax.nn.relu)``.
    Parameters in float32 (bf16 configs cast them in the loss)."""
    import equinox as eqx

    hidden = cfg.sizes[1:-1]
    if len(set(hidden)) == 1:
        return eqx.nn.MLP(cfg.sizes[0], cfg.sizes[-1], hidden[0], len(hidden), activation=jax.nn.relu, key=key)
    keys = jax.random.split(key, len(cfg.sizes) - 1)
    layers = []
    for k, m, n in zip(keys, cfg.sizes[:-1], cfg.sizes[1:]):
        layers += [eqx.nn.Linear(m, n, key=k), eqx.nn.Lambda(jax.nn.relu)]
    return eqx.nn.Sequential(layers[:-1])


def equinox_training(cfg: Config):
    """``(step, loss, model, opt_state, x, y)``: Equinox's own idiom, ``step((x, y), model, opt_state) -> (model,
    opt_state)`` under ``eqx.filter_jit(donate="all-except-first")`` (model and optimizer state donated, the
    batch not), ``eqx.filter_grad``, ``optax.adam``, ``eqx.apply_updates``; ``vmap`` of the model over the batch."""
    import equinox as eqx
    import optax

    model = equinox_model(cfg, jax.random.key(0))
    tx = optax.adam(LR)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    def loss(model, x, y):
        compute = jax.tree.map(lambda p: p.astype(cfg.jdtype) if eqx.is_inexact_array(p) else p, model)
        return objective(jax.vmap(compute)(x.astype(cfg.jdtype)), y, cfg.loss)

    @eqx.filter_jit(donate="all-except-first")
    def step(batch, model, opt_state):
        grads = eqx.filter_grad(loss)(model, *batch)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    return step, loss, model, opt_state, *data(cfg, cfg.batch)


def equinox_step(cfg: Config) -> Bench | None:
    if not available("equinox"):
        return None
    step, loss, model, opt_state, x, y = equinox_training(cfg)
    cell = [jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, (model, opt_state))]
    compile_s, temp = _lowered_stats(lambda: step.lower((x, y), *cell[0]))

    def call():
        cell[0] = step((x, y), *cell[0])
        return cell[0]

    return Bench("equinox", call, 1, compile_s, temp, note="eqx.filter_jit(donate='all-except-first') + optax.adam",
                 probe=lambda: float(loss(cell[0][0], x, y)))


def equinox_jit_step(cfg: Config) -> Bench | None:
    """``equinox``'s model and loss with the filtering done once, outside the loop: ``eqx.partition`` into
    arrays and static parts, the step (``jax.grad`` + ``optax.adam`` on the arrays, ``eqx.combine`` inside)
    under plain ``jax.jit``, state donated. Equinox's docs allow plain ``jax.jit``; it skips
    ``filter_jit``'s per-call flattening of the model, which dominates small, dispatch-bound steps."""
    if not available("equinox"):
        return None
    import equinox as eqx

    params, static = eqx.partition(equinox_model(cfg, jax.random.key(0)), eqx.is_array)

    def loss(params, x, y):
        compute = jax.tree.map(lambda p: p.astype(cfg.jdtype), params)
        return objective(jax.vmap(eqx.combine(compute, static))(x.astype(cfg.jdtype)), y, cfg.loss)

    tx, step = optax_step(loss)
    x, y = data(cfg, cfg.batch)
    state = (params, tx.init(params))
    compiled, compile_s, temp = compile_jit(step, *state, x, y, donate_argnums=(0, 1))
    call = stateful(compiled, state, x, y)
    last = [state]

    def tracked():
        last[0] = call()
        return last[0]

    return Bench("equinox-jit", tracked, 1, compile_s, temp,
                 note="eqx.partition once, jax.jit(donate_argnums=(0, 1)) + optax.adam",
                 probe=lambda: float(loss(last[0][0], x, y)))


def flax_nnx_training(cfg: Config):
    """``(step, model, optimizer, x, y)``: Flax NNX's own idiom, ``nnx.Linear`` layers (parameters float32,
    compute in the config's dtype), ``nnx.Optimizer(model, optax.adam, wrt=nnx.Param)``, the step under
    ``nnx.jit`` at its fastest: ``nnx.jit_partial(step, model, optimizer, graph=False, donate_argnums=0)``
    (Flax >= 0.12; the model and optimizer flattened once, their state donated), else
    ``nnx.cached_partial(nnx.jit(step, donate_argnames=...), model, optimizer)``. ``step(x, y)`` returns the
    loss and updates the model in place."""
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List([nnx.Linear(m, n, dtype=cfg.jdtype, rngs=rngs)
                                    for m, n in zip(sizes[:-1], sizes[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return self.layers[-1](x)

    model = MLP(cfg.sizes, nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: objective(m(x), y, cfg.loss))(model)
        optimizer.update(model, grads)
        return loss

    if hasattr(nnx, "jit_partial"):
        step = nnx.jit_partial(train_step, model, optimizer, graph=False, donate_argnums=0)
    else:
        step = nnx.cached_partial(nnx.jit(train_step, donate_argnames=("model", "optimizer")), model, optimizer)
    return step, model, optimizer, *data(cfg, cfg.batch)


def flax_nnx_step(cfg: Config) -> Bench | None:
    if not available("flax"):
        return None
    from flax import nnx

    step, model, _, x, y = flax_nnx_training(cfg)
    compile_s, temp = _lowered_stats(lambda: step.lower(x, y))
    how = "nnx.jit_partial(graph=False)" if hasattr(nnx, "jit_partial") else "nnx.cached_partial(nnx.jit(...))"
    return Bench("flax-nnx", lambda: step(x, y), 1, compile_s, temp, note=f"{how}, donated; optax.adam",
                 probe=lambda: float(objective(model(x), y, cfg.loss)))


def sklearn_digits(epochs: int | None = None) -> Bench | None:
    """scikit-learn's ``MLPClassifier`` on the README's digits job (as ``benchmarks/first_result.py`` runs it):
    hidden (64, 32) ReLU, Adam 3e-3, batch 64, ``epochs`` epochs, no L2, no early stop, float32 input; one
    ``fit`` of a fresh classifier per call, per step (it also trains on each epoch's last partial batch)."""
    if not available("sklearn"):
        return None
    import math
    import warnings

    from sklearn.neural_network import MLPClassifier

    from benchmarks.systems import DIGITS, DIGITS_EPOCHS, DIGITS_LR, digits_data

    epochs = DIGITS_EPOCHS if epochs is None else epochs
    x, y = digits_data()

    def call():
        clf = MLPClassifier(hidden_layer_sizes=DIGITS.sizes[1:-1], activation="relu", solver="adam",
                            learning_rate_init=DIGITS_LR, batch_size=DIGITS.batch, max_iter=epochs, alpha=0.0,
                            tol=0.0, n_iter_no_change=epochs, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are the job
            return clf.fit(x, y)

    steps = epochs * math.ceil(len(x) / DIGITS.batch)
    return Bench("sklearn-mlp", call, steps, sync=lambda out: out,
                 note=f"digits job: {epochs} epochs x {steps // epochs} steps per fit call; {x.dtype} input")


def _torch_device(device: str):
    import torch

    # XLA:CPU flushes denormals to zero; PyTorch does not by default, and Adam's second moment of a dead
    # unit decays into the denormal range, where every multiply traps to microcode: the mnist step then
    # runs 30× slower after a few hundred steps. Flush them, as XLA does.
    torch.set_flush_denormal(True)
    if device == "gpu":
        return torch.device("cuda") if torch.cuda.is_available() else None
    return torch.device("cpu")


def _torch_sync(device):
    import torch

    return (lambda out: torch.cuda.synchronize()) if device.type == "cuda" else (lambda out: out)


def _torch_model(cfg: Config, dev):
    import torch

    layers = []
    for m, n in zip(cfg.sizes[:-1], cfg.sizes[1:]):
        layers += [torch.nn.Linear(m, n), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(dev, _torch_dtype(cfg))


def _torch_data(cfg: Config, n: int, dev):
    import torch

    x, y = data(cfg, n)
    x = torch.from_numpy(np.array(x.astype(np.float32))).to(dev, _torch_dtype(cfg))  # a writable copy
    return x, torch.from_numpy(np.array(y)).to(dev, torch.float32 if cfg.loss == "mse" else torch.int64)


def _torch_dtype(cfg: Config):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]


def _torch_loss(out, y, loss):
    import torch.nn.functional as F

    out = out.float()
    return F.mse_loss(out, y) if loss == "mse" else F.cross_entropy(out, y)


def _torch_probe(model, x, y, cfg: Config):
    def probe():
        import torch

        with torch.no_grad():
            return float(_torch_loss(model(x), y, cfg.loss))

    return probe


def _torch_training(cfg: Config, device: str):
    """``(device, model, Adam optimizer, x, y)`` of one PyTorch training step, or None without torch or
    without the device."""
    if not available("torch"):
        return None
    import torch

    dev = _torch_device(device)
    if dev is None:
        return None
    model = _torch_model(cfg, dev)
    return dev, model, torch.optim.Adam(model.parameters(), lr=LR), *_torch_data(cfg, cfg.batch, dev)


def torch_eager_step(cfg: Config, device: str = "cpu") -> Bench | None:
    setup = _torch_training(cfg, device)
    if setup is None:
        return None
    import torch

    dev, model, opt, x, y = setup

    def call():
        opt.zero_grad(set_to_none=True)
        _torch_loss(model(x), y, cfg.loss).backward()
        opt.step()

    return Bench("torch-eager", call, 1, sync=_torch_sync(dev), note=f"{torch.get_num_threads()} threads",
                 settle_s=0.05, probe=_torch_probe(model, x, y, cfg))


def torch_compile_step(cfg: Config, device: str = "cpu") -> Bench | None:
    """``torch-eager``'s step under ``torch.compile``; compile seconds measured over the first calls."""
    setup = _torch_training(cfg, device)
    if setup is None:
        return None
    import time

    import torch

    dev, model, opt, x, y = setup

    @torch.compile
    def step():
        opt.zero_grad(set_to_none=True)
        loss = _torch_loss(model(x), y, cfg.loss)
        loss.backward()
        opt.step()
        return loss

    sync = _torch_sync(dev)

    def timed_calls(n):
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            sync(step())
            t.append(time.perf_counter() - t0)
        return t

    first = timed_calls(3)  # compiles (and recompiles once the optimizer's state exists)
    steady = sorted(timed_calls(3))[1]
    compile_s = max(sum(first) - 3 * steady, 0.0)
    return Bench("torch-compile", step, 1, compile_s=compile_s, sync=sync, settle_s=0.05,
                 note=f"{torch.get_num_threads()} threads; torch.compile default mode (inductor)",
                 probe=_torch_probe(model, x, y, cfg))


def torch_func_ensemble(cfg: Config, K: int, device: str = "cpu") -> Bench | None:
    if not available("torch"):
        return None
    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    dev = _torch_device(device)
    if dev is None:
        return None
    models = [_torch_model(cfg, dev) for _ in range(K)]
    params, _ = stack_module_state(models)
    base = models[0].to("meta")
    stacked = [p.detach().requires_grad_() for p in params.values()]
    names = list(params)
    opt = torch.optim.Adam(stacked, lr=LR)
    x, y = _torch_data(cfg, cfg.batch, dev)

    def loss(p, x, y):
        return _torch_loss(functional_call(base, dict(zip(names, p)), (x,)), y, cfg.loss)

    grads_of = vmap(grad(loss), in_dims=(0, None, None))

    def call():
        for p, g in zip(stacked, grads_of(tuple(stacked), x, y)):
            p.grad = g
        opt.step()

    def probe():  # the K models' mean loss
        with torch.no_grad():
            return float(vmap(loss, in_dims=(0, None, None))(tuple(stacked), x, y).mean())

    return Bench("torch-func-vmap", call, K, sync=_torch_sync(dev), note=f"K={K}; {torch.get_num_threads()} threads",
                 settle_s=0.05, probe=probe)
