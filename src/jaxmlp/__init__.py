"""jaxmlp: from the perceptron to the multi-layer perceptron, as pure JAX functions over pytrees.

Module layout (imports run one way, top to bottom of this list):

- building blocks, which know nothing of MLPs: :mod:`~jaxmlp.types` (``Layer``), :mod:`~jaxmlp.checks`,
  :mod:`~jaxmlp.activations`, :mod:`~jaxmlp.losses`, :mod:`~jaxmlp.initializers`;
- the network: :mod:`~jaxmlp.mlp` (``init_mlp``, ``forward``, ``loss_fn``, ``collapse_linear``);
- backpropagation by hand: :mod:`~jaxmlp.backprop` (``backward``, ``per_example_grads``), and second
  order, :mod:`~jaxmlp.hvp` (``hvp``, Pearlmutter's R-operator);
- verification against autodiff: :mod:`~jaxmlp.report` (the reports), :mod:`~jaxmlp.verify` (the
  gradient checker's engine for any pytree model, knowing nothing of MLPs), :mod:`~jaxmlp.gradcheck`
  (``check_gradients``, ``compare_deltas``, ``symmetry``) and :mod:`~jaxmlp.rules` (``check_vjp``,
  ``check_jvp``, ``check_hvp`` for the rules of any function);
- optimizers, which know only pytrees: :mod:`~jaxmlp.optim`, and :mod:`~jaxmlp.optim_check` (against optax);
- training on top: :mod:`~jaxmlp.shuffle` (the epoch permutation), :mod:`~jaxmlp.checkpoint`,
  :mod:`~jaxmlp.evaluation` (``evaluate``), :mod:`~jaxmlp.loop` (the training loop, written once),
  :mod:`~jaxmlp.train` (``fit``), :mod:`~jaxmlp.ensemble` (``fit_ensemble``, ``evaluate_ensemble``),
  :mod:`~jaxmlp.datasets`;
- at the top: :mod:`~jaxmlp.compilation_cache` (``enable_compilation_cache``: jax's persistent cache,
  opt-in; importing jaxmlp changes no jax setting) and :mod:`~jaxmlp.cli`.
"""

from jaxmlp import activations, datasets, initializers, losses, optim, shuffle
from jaxmlp.backprop import backward, per_example_grads
from jaxmlp.compilation_cache import enable_compilation_cache
from jaxmlp.ensemble import evaluate_ensemble, fit_ensemble
from jaxmlp.gradcheck import check_gradients, compare_deltas, symmetry
from jaxmlp.hvp import hvp
from jaxmlp.mlp import collapse_linear, forward, forward_with_cache, init_mlp, loss_fn
from jaxmlp.report import GradientReport, RuleReport
from jaxmlp.rules import check_hvp, check_jvp, check_vjp
from jaxmlp.train import TrainingDiverged, evaluate, fit
from jaxmlp.types import ForwardPass, Layer

__all__ = [
    "ForwardPass",
    "GradientReport",
    "RuleReport",
    "Layer",
    "TrainingDiverged",
    "activations",
    "backward",
    "check_gradients",
    "check_hvp",
    "check_jvp",
    "check_vjp",
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
    "hvp",
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
