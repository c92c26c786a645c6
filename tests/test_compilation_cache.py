"""jax's persistent compilation cache (:mod:`jaxmlp.compilation_cache`): in fresh processes, a second process
compiles nothing for a ``fit`` that the first compiled, ``--no-cache`` writes nothing, importing jaxmlp
changes no jax setting; and a cache directory that another user could write to is refused.

Compilations are counted with jax's own monitoring events (a cache miss, a cache hit), never with a clock.
"""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from jaxmlp import compilation_cache

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
    path = jaxmlp.enable_compilation_cache(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (rng.normal(size=(64, 1)) > 0).astype(np.float32)
    params = jaxmlp.init_mlp(jax.random.key(0), [5, 8, 1])
    params, history = jaxmlp.fit(params, x, y, optimizer=optim.adam(1e-2), loss="bce", epochs=3, batch_size=16)
    print(json.dumps({"path": path, "loss": history["loss"].tolist(),
                      "programs": events.get("/jax/core/compile/backend_compile_duration", 0),
                      "written": events.get("/jax/compilation_cache/cache_misses", 0),  # jax's name
                      "hits": events.get("/jax/compilation_cache/cache_hits", 0)}))
""")


def python(code, *args, env=None):
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_second_process_compiles_nothing_the_first_compiled(tmp_path):
    """Every program of a fit is written to jax's cache, then loaded by the next process, none compiled."""
    cache = tmp_path / "cache"
    first = json.loads(python(FIT, str(cache)).splitlines()[-1])
    entries = sorted(os.listdir(cache))
    assert first["path"] == str(cache) and first["programs"] >= 1 and first["hits"] == 0
    assert first["written"] == first["programs"] == len(entries)  # every program, the small ones included
    second = json.loads(python(FIT, str(cache)).splitlines()[-1])
    assert second["programs"] == second["hits"] == first["programs"]  # every program loaded, none compiled
    assert second["written"] == 0
    assert second["loss"] == first["loss"]  # the loaded programs compute what the compiled ones did
    assert sorted(os.listdir(cache)) == entries
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


@pytest.mark.slow
def test_default_path_follows_xdg_cache_home(tmp_path):
    code = "import jaxmlp; print(jaxmlp.enable_compilation_cache())"
    assert python(code, env={"XDG_CACHE_HOME": str(tmp_path)}).strip() == str(tmp_path / "jaxmlp")
    assert python(code, env={"XDG_CACHE_HOME": "", "HOME": str(tmp_path)}).strip() == str(tmp_path / ".cache" / "jaxmlp")


CLI = ["-m", "jaxmlp.cli", "train", "--dataset", "xor", "--sizes", "2,4,1", "--epochs", "2", "--no-progress"]


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---- a directory only its owner can write ----------------------------------------------------------------

def test_the_directory_is_created_owner_only(tmp_path, jax_cache_settings):
    path = compilation_cache.enable_compilation_cache(tmp_path / "new" / "cache")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


@pytest.mark.parametrize("mode, who", [(0o770, "its group"), (0o707, "others"), (0o1777, "its group and others")],
                         ids=["group-writable", "world-writable", "world-writable-sticky"])
def test_a_cache_directory_others_can_write_is_refused(mode, who, tmp_path, jax_cache_settings):
    """The cache directory itself: no group or world write, sticky or not (others could add entries)."""
    import jax

    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, mode)
    with pytest.raises(PermissionError, match=rf"the cache directory is not private, it is writable by {who}.*"
                                              rf"Fix: chmod go-w '{cache}'"):
        compilation_cache.enable_compilation_cache(cache)
    assert jax.config.jax_compilation_cache_dir != str(cache)


def test_a_parent_others_can_write_is_refused_unless_sticky(tmp_path, jax_cache_settings):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could rename shared/cache and plant another
    with pytest.raises(PermissionError, match=rf"'{shared}' \(a parent of the cache directory\) is not private"):
        compilation_cache.enable_compilation_cache(shared / "cache")
    os.chmod(shared, 0o1777)  # sticky, as /tmp: nobody can rename what another user owns
    assert compilation_cache.enable_compilation_cache(shared / "cache") == str(shared / "cache")


def test_symlinks_are_resolved_before_the_check(tmp_path, jax_cache_settings):
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    (unsafe / "cache").mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(unsafe / "cache")
    with pytest.raises(PermissionError, match=rf"'{unsafe}' \(a parent of the cache directory\) is not private"):
        compilation_cache.enable_compilation_cache(link)


def test_missing_parents_are_created_owner_only_under_a_group_writable_umask(tmp_path, jax_cache_settings):
    """os.makedirs would give the parents it creates 0775 under umask 002, and the check would refuse them."""
    old = os.umask(0o002)
    try:
        path = compilation_cache.enable_compilation_cache(tmp_path / "a" / "b" / "cache")
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "cache"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    assert path == str(tmp_path / "a" / "b" / "cache")


def test_jax_gets_the_checked_directory_not_a_symlink_that_could_be_repointed(tmp_path, jax_cache_settings):
    """A symlink in a directory others can write (shared/link -> a private cache): jax is given the private
    directory itself, so re-pointing the link later cannot move the cache."""
    import jax

    private = tmp_path / "private" / "cache"
    private.mkdir(parents=True, mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "link").symlink_to(private)
    assert compilation_cache.enable_compilation_cache(shared / "link") == str(private)
    assert jax.config.jax_compilation_cache_dir == str(private)


def test_a_path_that_is_a_file_is_refused(tmp_path, jax_cache_settings):
    (tmp_path / "cache").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        compilation_cache.enable_compilation_cache(tmp_path / "cache")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root")
def test_a_directory_owned_by_another_user_is_refused(tmp_path, jax_cache_settings):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 12345, -1)
    with pytest.raises(PermissionError, match=r"owned by uid 12345, not by you \(uid 0\) or root"):
        compilation_cache.check_private(str(cache))


def test_the_cli_refuses_an_unsafe_cache_and_trains_without_it(tmp_path, jax_cache_settings, capsys):
    import jax

    from jaxmlp import cli

    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    argv = ["train", "--dataset", "xor", "--sizes", "2,4,1", "--epochs", "1", "--no-progress"]
    assert cli.main(argv + ["--cache-dir", str(unsafe)]) == 0
    out, err = capsys.readouterr()
    assert "test_accuracy" in out
    assert err.startswith("jaxmlp: no compilation cache (refusing the compilation cache at") and "chmod go-w" in err
    assert jax.config.jax_compilation_cache_dir != str(unsafe)
