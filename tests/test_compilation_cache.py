"""The persistent compilation cache (:mod:`jaxmlp.cache`), in fresh processes: a second process compiles
nothing for a ``fit`` that the first compiled; ``--no-cache`` writes nothing; importing jaxmlp changes no
jax setting and imports neither scikit-learn, matplotlib nor tqdm.

Compilations are counted with jax's own monitoring events (a cache miss, a cache hit), never with a clock.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # fresh Python processes: a few seconds each

FIT = textwrap.dedent("""
    import json, sys
    from jax import monitoring
    events = {}
    count = lambda name, *_, **__: events.__setitem__(name, events.get(name, 0) + 1)
    monitoring.register_event_listener(count)
    monitoring.register_event_duration_secs_listener(count)  # backend_compile_duration: every program
    import jax, numpy as np
    import jaxmlp
    from jaxmlp import optim
    from jaxmlp import programs
    path = jaxmlp.enable_compilation_cache(sys.argv[1], store_programs=sys.argv[2] == "store")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (rng.normal(size=(64, 1)) > 0).astype(np.float32)
    params = jaxmlp.init_mlp(jax.random.key(0), [5, 8, 1])
    params, history = jaxmlp.fit(params, x, y, optimizer=optim.adam(1e-2), loss="bce", epochs=3, batch_size=16)
    print(json.dumps({"path": path, "loss": history["loss"].tolist(),
                      "programs": events.get("/jax/core/compile/backend_compile_duration", 0),
                      "written": events.get("/jax/compilation_cache/cache_misses", 0),  # jax's name
                      "hits": events.get("/jax/compilation_cache/cache_hits", 0), "store": programs.stats()}))
""")


def python(code, *args, env=None):
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_second_process_compiles_nothing_the_first_compiled(tmp_path):
    """jax's persistent cache alone (``store_programs=False``): every program is written, then loaded."""
    cache = tmp_path / "cache"
    first = json.loads(python(FIT, str(cache), "jax").splitlines()[-1])
    entries = sorted(os.listdir(cache))
    assert first["path"] == str(cache) and first["programs"] >= 1 and first["hits"] == 0
    assert first["written"] == first["programs"] == len(entries)  # every program, the small ones included
    second = json.loads(python(FIT, str(cache), "jax").splitlines()[-1])
    assert second["programs"] == second["hits"] == first["programs"]  # every program loaded, none compiled
    assert second["written"] == 0
    assert second["loss"] == first["loss"]  # the loaded programs compute what the compiled ones did
    assert sorted(os.listdir(cache)) == entries
    assert first["store"]["misses"] == second["store"]["hits"] == 0  # jaxmlp's store stayed off


def test_second_process_traces_nothing_with_the_store(tmp_path):
    """The default: fit's program comes from jaxmlp's store of programs, so the second process neither
    compiles nor asks jax's cache for it (which would need tracing and lowering first)."""
    cache = tmp_path / "cache"
    first = json.loads(python(FIT, str(cache), "store").splitlines()[-1])
    assert first["store"] == {"hits": 0, "misses": 1, "writes": 1, "skipped": 0}
    assert len(os.listdir(cache / "programs")) == 1
    second = json.loads(python(FIT, str(cache), "store").splitlines()[-1])
    assert second["store"] == {"hits": 1, "misses": 0, "writes": 0, "skipped": 0}
    fit_programs = first["programs"] - second["programs"]  # the processes differ only in how fit gets its program
    assert fit_programs >= 1 and second["hits"] == second["programs"]  # what did compile is init_mlp's, from jax's cache
    assert second["loss"] == first["loss"]


def test_default_path_follows_xdg_cache_home(tmp_path):
    code = "import jaxmlp; print(jaxmlp.enable_compilation_cache())"
    assert python(code, env={"XDG_CACHE_HOME": str(tmp_path)}).strip() == str(tmp_path / "jaxmlp")
    assert python(code, env={"XDG_CACHE_HOME": "", "HOME": str(tmp_path)}).strip() == str(tmp_path / ".cache" / "jaxmlp")


CLI = ["-m", "jaxmlp.cli", "train", "--dataset", "xor", "--sizes", "2,4,1", "--epochs", "2", "--no-progress"]


@pytest.mark.parametrize("flag", ["--no-cache", None], ids=["no-cache", "default"])
def test_cli_cache_on_by_default_and_no_cache_writes_nothing(flag, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(home)}
    result = subprocess.run([sys.executable, *CLI, *([flag] if flag else [])], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    if flag == "--no-cache":
        assert written == []
    else:
        assert written and all(p.startswith(os.path.join("xdg", "jaxmlp", "")) for p in written)
        # In jaxmlp's store: the set-up, the optimizer's init, the epochs (2 calls of 1 epoch, one program)
        # and the final metrics; under `python -m` too (the CLI's own functions are named from jaxmlp.cli).
        stored = [p for p in written if p.startswith(os.path.join("xdg", "jaxmlp", "programs", ""))]
        assert len(stored) == 4, stored


def test_import_changes_no_jax_setting_and_imports_no_optional_dependency():
    code = textwrap.dedent("""
        import sys, jax
        names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                 "jax_persistent_cache_min_entry_size_bytes", "jax_enable_x64", "jax_numpy_rank_promotion")
        before = {n: getattr(jax.config, n) for n in names}
        import jaxmlp, jaxmlp.cli
        assert {n: getattr(jax.config, n) for n in names} == before
        print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "matplotlib", "tqdm"})))
    """)
    assert python(code).strip() == ""
