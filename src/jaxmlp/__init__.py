"""jaxmlp: from the perceptron to the multi-layer perceptron, as pure JAX functions over pytrees.

Module layout (imports run one way, top to bottom of this list):

- building blocks, which know nothing of MLPs: :mod:`~jaxmlp.types` (``Layer``), :mod:`~jaxmlp.checks`,
  :mod:`~jaxmlp.activations`, :mod:`~jaxmlp.losses`, :mod:`~jaxmlp.initializers`;
- the network: :mod:`~jaxmlp.mlp` (``init_mlp``, ``forward``, ``loss_fn``, ``collapse_linear``);
- backpropagation by hand: :mod:`~jaxmlp.backprop` (``backward``, ``per_example_grads``);
- verification against autodiff: :mod:`~jaxmlp.verify` (the checker's engine for any pytree model,
  knowing nothing of MLPs), then :mod:`~jaxmlp.gradcheck` (``check_gradients``, with the MLP extras:
  kink flags, layer-wise deltas, the zero-init symmetry diagnostic);
- optimizers, which know only pytrees: :mod:`~jaxmlp.optim`;
- training on top: :mod:`~jaxmlp.shuffle` (the epoch permutation), :mod:`~jaxmlp.train` (``fit``),
  :mod:`~jaxmlp.ensemble` (``fit_ensemble``, ``evaluate_ensemble``), :mod:`~jaxmlp.datasets`,
  :mod:`~jaxmlp.cli`;
- on the side: :mod:`~jaxmlp.programs` (jaxmlp's store of compiled programs, keyed without tracing; a
  building block that optim, verify and train call) and :mod:`~jaxmlp.cache` (``enable_compilation_cache``:
  jax's persistent compilation cache and that store; importing jaxmlp changes no jax setting).
"""

from jaxmlp import activations, datasets, initializers, losses, optim, shuffle
from jaxmlp.backprop import backward, per_example_grads
from jaxmlp.cache import enable_compilation_cache
from jaxmlp.gradcheck import check_gradients, compare_deltas, symmetry
from jaxmlp.verify import GradientReport
from jaxmlp.mlp import collapse_linear, forward, forward_with_cache, init_mlp, loss_fn
from jaxmlp.ensemble import evaluate_ensemble, fit_ensemble
from jaxmlp.train import TrainingDiverged, evaluate, fit
from jaxmlp.types import Cache, Layer
from jaxmlp import programs as _programs

_programs.remember_modules()  # the store's reference for what a later patch rebinds

__all__ = [
    "Cache",
    "GradientReport",
    "Layer",
    "TrainingDiverged",
    "activations",
    "backward",
    "check_gradients",
    "collapse_linear",
    "compare_deltas",
    "datasets",
    "enable_compilation_cache",
    "evaluate",
    "evaluate_ensemble",
    "fit",
    "fit_ensemble",
    "forward",
    "forward_with_cache",
    "init_mlp",
    "initializers",
    "loss_fn",
    "losses",
    "optim",
    "per_example_grads",
    "shuffle",
    "symmetry",
]
__version__ = "0.1.0"
