"""One benchmarked system in its own process: ``python -m benchmarks.worker``, driven by
:func:`benchmarks.harness.measure_isolated` over stdin/stdout (see :func:`benchmarks.harness.serve`)."""

from benchmarks.harness import serve

if __name__ == "__main__":
    serve()
