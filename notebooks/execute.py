"""Regenerate the executed ``.ipynb`` of each lesson notebook from its Jupytext ``.py`` twin.

    python notebooks/execute.py                          # every notebooks/NN_*.py
    python notebooks/execute.py notebooks/02_*.py        # some of them

Each ``.py`` (percent format, the file to edit) is read with Jupytext, executed with nbclient in a
kernel of this interpreter (cwd ``notebooks/``, on CPU, with strict rank promotion as in the tests) and
written next to it as ``.ipynb`` with its outputs, so the figures render on GitHub. This is
``jupytext --to ipynb --execute`` without nbconvert. ``tests/test_notebooks.py`` checks that the two
files stay in sync.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbclient
from ipykernel.kernelspec import write_kernel_spec

CELL_TIMEOUT_S = 120


def main(paths):
    here = Path(__file__).resolve().parent
    sources = [Path(p).resolve() for p in paths] or sorted(here.glob("[0-9][0-9]_*.py"))
    with tempfile.TemporaryDirectory() as jupyter_path:
        # Kernel "python3" = this interpreter, whatever other python3 kernelspecs are installed.
        write_kernel_spec(Path(jupyter_path) / "kernels" / "python3")
        os.environ["JUPYTER_PATH"] = jupyter_path
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")  # as the tests run them
        for source in sources:
            nb = jupytext.read(source)
            start = time.perf_counter()
            nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                    resources={"metadata": {"path": str(source.parent)}}).execute()
            jupytext.write(nb, source.with_suffix(".ipynb"))
            print(f"{source.with_suffix('.ipynb').name}: executed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
