"""Peer libraries doing the same MLP training step with Adam, each imported only if installed.

Each builder returns a :class:`~benchmarks.harness.Bench`, or ``None`` when the library is missing (or,
for PyTorch, when it cannot run on the requested device). Written the way each library's docs write it:

- ``equinox``: an ``eqx.Module`` of ``eqx.nn.Linear`` layers, ``vmap`` over the batch,
  ``eqx.partition`` / ``combine`` under ``jax.jit``, ``optax.adam``;
- ``flax-nnx``: ``nnx.Linear`` layers, ``nnx.split`` / ``nnx.merge`` under ``jax.jit`` (Flax's
  recommended fast path), ``optax.adam``;
- ``torch-eager``: ``nn.Sequential``, ``torch.optim.Adam`` (its default foreach implementation), with
  denormals flushed to zero as XLA:CPU does; PyTorch's default intra-op threads (one per core) unless the
  caller set them;
- ``torch-compile``: the same step function under ``torch.compile`` (default mode, Inductor's C++ CPU
  backend: it needs a C++ compiler). Dynamo breaks the graph at ``loss.backward()``: the forward and
  its backward are one AOTAutograd graph, ``opt.step()`` and ``zero_grad`` another. Its compile time
  (the first three calls, which compile and may recompile, less three steady calls) is reported apart
  from the step time;
- ``torch-func-vmap``: K stacked models, ``torch.func.functional_call`` + ``vmap(grad(loss))``,
  ``torch.optim.Adam`` on the stacked parameters.
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
    for name in ("jax", "jaxlib", "optax", "equinox", "flax", "torch", "numpy", "matplotlib"):
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


def _optax_bench(name, loss_of_params, params, cfg: Config):
    tx, step = optax_step(loss_of_params)
    x, y = data(cfg, cfg.batch)
    state = (params, tx.init(params))
    compiled, compile_s, temp = compile_jit(step, *state, x, y, donate_argnums=(0, 1))
    return Bench(name, stateful(compiled, state, x, y), 1, compile_s, temp)


def equinox_step(cfg: Config) -> Bench | None:
    if not available("equinox"):
        return None
    import equinox as eqx

    class MLP(eqx.Module):
        layers: list

        def __init__(self, sizes, key):
            keys = jax.random.split(key, len(sizes) - 1)
            self.layers = [eqx.nn.Linear(m, n, key=k) for k, m, n in zip(keys, sizes[:-1], sizes[1:])]

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    params, static = eqx.partition(MLP(cfg.sizes, jax.random.key(0)), eqx.is_array)

    def loss(params, x, y):
        model = eqx.combine(params, static)
        compute = jax.tree.map(lambda p: p.astype(cfg.jdtype), model)
        return objective(jax.vmap(compute)(x.astype(cfg.jdtype)), y, cfg.loss)

    return _optax_bench("equinox", loss, params, cfg)


def flax_nnx_step(cfg: Config) -> Bench | None:
    if not available("flax"):
        return None
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List([nnx.Linear(m, n, dtype=cfg.jdtype, rngs=rngs)
                                    for m, n in zip(sizes[:-1], sizes[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return self.layers[-1](x)

    graphdef, params = nnx.split(MLP(cfg.sizes, nnx.Rngs(0)), nnx.Param)

    def loss(params, x, y):
        return objective(nnx.merge(graphdef, params)(x), y, cfg.loss)

    return _optax_bench("flax-nnx", loss, params, cfg)


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
                 settle_s=0.05)


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
                 note=f"{torch.get_num_threads()} threads; torch.compile default mode (inductor)")


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

    return Bench("torch-func-vmap", call, K, sync=_torch_sync(dev), note=f"K={K}; {torch.get_num_threads()} threads",
                 settle_s=0.05)
