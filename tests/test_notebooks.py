"""The lesson notebooks in ``notebooks/``: each runs on CPU without error, and each pair is in sync.

Every notebook is kept as a Jupytext pair, ``NN_name.py`` (percent format, the one to edit and diff) and
``NN_name.ipynb`` (executed, with its figures, for reading on GitHub). The tests

- execute a copy of every ``.ipynb`` in a fresh kernel of this interpreter (nbclient), on CPU, with
  strict rank promotion, and check that no cell raised and that the figures were drawn. The lesson
  notebooks ``assert`` every number their text quotes ("momentum reaches f below 1e-25", "X beats Y") on
  the numbers they just computed, so a change that makes the text false fails here. ``CELL_TIMEOUT_S``
  only stops a hung kernel; how long the notebooks take is not a test (time goes in ``benchmarks/``);
- check that the cells of each ``.ipynb`` equal Jupytext's reading of its ``.py``, and that the
  committed ``.ipynb`` was executed (every code cell ran, no error output).

After editing a ``.py``, regenerate its executed notebook with
``python notebooks/execute.py notebooks/NN_name.py``.

Skipped when the notebook tools (nbclient, nbformat, jupytext, ipykernel) are not installed; the
``test`` extra installs them.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT_S = 600  # a hung kernel, not a time budget
BENCHMARKS = "05_appendix_library"  # the appendix, whose benchmark section plots results when they exist


def _ids(paths):
    return [p.stem for p in paths]


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory):
    """Kernels run this interpreter, on CPU, with strict rank promotion, and import from ``notebooks/``.

    A kernelspec named ``python3`` pointing at ``sys.executable`` is put first on ``JUPYTER_PATH``, so
    that a user-level ``python3`` kernelspec for another Python cannot hijack the run. The kernel
    inherits the environment set here.
    """
    root = tmp_path_factory.mktemp("jupyter")
    kernelspec.write_kernel_spec(root / "kernels" / "python3")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        mp.setenv("JAX_PLATFORMS", "cpu")
        mp.setenv("JAX_NUMPY_RANK_PROMOTION", "raise")
        mp.delenv("JAXMLP_BENCHMARK_RESULTS", raising=False)
        # The notebooks import their helper modules (mlp_by_hand.py) from notebooks/; the copies run elsewhere.
        mp.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOKS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]))
        yield mp


def _execute(source: Path, tmp_path: Path, section: str | None = None):
    """Execute a copy of ``source``'s ``.ipynb`` in ``tmp_path``; return the executed notebook. With
    ``section`` (a ``## `` heading's start), only the first code cell (the imports) and that section's cells."""
    copy = tmp_path / source.with_suffix(".ipynb").name
    shutil.copyfile(source.with_suffix(".ipynb"), copy)
    nb = nbformat.read(copy, as_version=4)
    if section is not None:
        first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "\n## " in "\n" + c.source]
        start = next(i for i in heads if ("\n" + nb.cells[i].source).split("\n## ", 1)[1].startswith(section))
        end = next((i for i in heads if i > start), len(nb.cells))
        nb.cells = [nb.cells[first], *nb.cells[start:end]]
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell (a failed assert too)
    return nb


def _outputs(nb, output_type=None):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if output_type is None or o.output_type == output_type]


def _images(nb):
    return [o for o in _outputs(nb) if "image/png" in o.get("data", {})]


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_notebook_executes(source, tmp_path, kernel_env):
    nb = _execute(source, tmp_path)
    assert not _outputs(nb, "error")
    assert _images(nb), f"{source.name} drew no figure"


def _fake_results(path: Path):
    """A ``results.json`` shaped like ``python -m benchmarks``' output (rows of its keys, a machine)."""
    rows = []
    for system, factor in [("jaxmlp-manual", 1.0), ("jaxmlp-autodiff", 1.25), ("jax-optax", 0.5)]:
        for config in ["seed", "mnist"]:
            for batch in [32, 256]:
                t = factor * (10.0 + batch / 8)
                rows.append(dict(system=system, config=config, batch=batch, K=1, dtype="float32", us_per_step=t,
                                 us_min=0.9 * t, us_max=1.2 * t, gflops=1.0, peak_fraction=0.01, compile_s=0.5,
                                 temp_bytes=4096))
    rows.append({**rows[0], "system": "jaxmlp-fit-ensemble", "K": 8})  # ensembles: tabled, not plotted
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"machine": {"device_kind": "cpu", "device_platform": "cpu", "cpu_count": 2},
                                "versions": {"jax": "0.0"}, "rows": rows}))
    (path.parent / "scaling_cpu.json").write_text(json.dumps({"rows": [{"mode": "dp", "devices": 1}]}))


@pytest.mark.slow
def test_benchmarks_notebook_plots_results(tmp_path, kernel_env, monkeypatch):
    """With a results file present, the appendix's benchmark section (run alone: the whole notebook runs
    above, on the committed results) tabulates it and draws both figures."""
    _fake_results(tmp_path / "results" / "cpu" / "results.json")
    monkeypatch.setenv("JAXMLP_BENCHMARK_RESULTS", str(tmp_path / "results"))
    nb = _execute(NOTEBOOKS_DIR / f"{BENCHMARKS}.py", tmp_path, section="6. Benchmarks")
    assert "\n## 6. Benchmarks" in nb.cells[1].source and not _outputs(nb, "error")
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    assert "benchmark runs found: 1" in text  # the scaling file has no rows of this kind
    assert "results/cpu/results.json: 13 rows" in text
    assert "jaxmlp-manual / jaxmlp-autodiff: mnist B=32: 0.80, mnist B=256: 0.80" in text
    assert "jaxmlp-manual / jax-optax: mnist B=32: 2.00" in text
    assert "using results/cpu/results.json" in text
    # the step-time figure (a panel per config) and the ratio figure, each followed by its line
    assert "figure: step time per configuration (results/cpu/results.json)" in text
    assert "figure: manual / reference ratios (results/cpu/results.json)" in text


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_pair_in_sync(source):
    """The .ipynb holds exactly the cells of its Jupytext .py twin."""
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"missing {ipynb.name}: run `python notebooks/execute.py notebooks/{source.name}`"
    paired = jupytext.read(source)
    committed = nbformat.read(ipynb, as_version=4)
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert cells(committed) == cells(paired), (
        f"{ipynb.name} is out of sync with {source.name}: run `python notebooks/execute.py notebooks/{source.name}`")
    assert committed.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"


@pytest.mark.parametrize("source", SOURCES, ids=_ids(SOURCES))
def test_committed_notebook_was_executed(source):
    """The committed .ipynb shows its outputs on GitHub: every code cell ran, in order, without error."""
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{source.name}: execution counts {counts}"
    assert not _outputs(nb, "error")
    assert _images(nb), f"{source.with_suffix('.ipynb').name} has no figure"
