#!/usr/bin/env bash
# The GPU run in one command (see benchmarks/gpu_run.py): the suite with --device gpu (bf16, width 8192, MFU),
# fit against a per-step jitted loop, fit_ensemble at K = 256 and 4096 against vmap of jax.grad + optax, and
# check_gradients on [784, 512, 512, 10] (float64, batch 64); JSON under benchmarks/results/gpu-<device>/.
#
#   bash benchmarks/gpu_run.sh [--full] [--repeats N] [--no-peers] [--out DIR]
#   bash benchmarks/gpu_run.sh --tiny --device cpu --out DIR     # tiny sizes on the CPU (the test suite runs this)
#
# Python: $PYTHON if set, else the repository's .venv if there is one, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
  py="$root/.venv/bin/python"
else
  py=python3
fi
# Every process of the run (the suite's workers, the gradient check) shares the one GPU: none preallocates.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
exec "$py" -m benchmarks.gpu_run "$@"
