"""Benchmarks of jaxmlp's training step against autodiff, plain JAX + optax, and peer libraries.

Run ``python -m benchmarks [--quick] [--device cpu|gpu] [--out DIR]``; see ``benchmarks/README.md``.
``python -m benchmarks.scaling`` times data-parallel ``fit(mesh=...)`` on 1, 2, 4, ... devices.
These are scripts, not tests: ``tests/test_benchmarks.py`` only smoke-tests the harness.
"""
