"""jax's persistent compilation cache, turned on for jaxmlp's programs in one call.

A research script that is rerun all day pays, in each fresh process, for compiling the same programs
again: on a 2-core CPU the first :func:`jaxmlp.fit` of the digits MLP spends most of its seconds in XLA,
and the same call, once compiled, takes tens of milliseconds. jax can keep compiled programs on disk
and reload them in the next process; :func:`enable_compilation_cache` turns that on::

    import jaxmlp
    jaxmlp.enable_compilation_cache()          # $XDG_CACHE_HOME/jaxmlp, or ~/.cache/jaxmlp
    params, history = jaxmlp.fit(...)          # a second run of the script reloads, does not compile

It also turns on jaxmlp's own store of compiled programs (:mod:`jaxmlp.programs`, in ``<path>/programs``),
which finds :func:`jaxmlp.fit`'s program and ``jaxmlp gradcheck``'s without tracing them first: jax's
cache can only look a program up once it is traced and lowered, which for the digits ``fit`` took
longer than the training run. ``store_programs=False`` leaves the store off.

It is opt-in: importing jaxmlp changes no global jax setting. The call changes three, for the whole
process (every jit of the process is cached, not only jaxmlp's):

- ``jax_compilation_cache_dir``: the directory;
- ``jax_persistent_cache_min_compile_time_secs = 0``: jax's default of 1 s skips every program that
  compiles faster, which is all of jaxmlp's small ones (the lesson's fit compiles in 0.1-1 s);
- ``jax_persistent_cache_min_entry_size_bytes = -1``: no minimum size, and no filesystem override of it.

What to know before enabling it:

- An entry is keyed on the program (its HLO, which jax's version shapes), jaxlib's version, the
  backend's version, ``XLA_FLAGS``, the compile options and the devices: after an upgrade or with other
  flags the lookup misses and compiles anew; it never loads a stale program. Entries are not removed; delete the directory to reclaim the space.
- **The cache is trusted code.** Loading an entry runs the machine code in it: whoever can write to the
  directory can run code in your process. Never point it at a directory others can write to.
"""

from __future__ import annotations

import os

from jaxmlp import programs

ENV_HOME = "XDG_CACHE_HOME"


def default_path() -> str:
    """``$XDG_CACHE_HOME/jaxmlp`` when ``XDG_CACHE_HOME`` is set (and not empty), else ``~/.cache/jaxmlp``."""
    base = os.environ.get(ENV_HOME) or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmlp")


def enable_compilation_cache(path=None, *, store_programs: bool = True) -> str:
    """Turn on jax's persistent compilation cache in ``path`` for every program of this process.

    Args:
      path: the cache directory (a ``str`` or ``os.PathLike``; ``~`` is expanded); ``None`` for
        :func:`default_path`, ``$XDG_CACHE_HOME/jaxmlp`` or ``~/.cache/jaxmlp``. It is created if missing.
      store_programs: also keep jaxmlp's own programs in ``<path>/programs`` (:mod:`jaxmlp.programs`),
        found without tracing; False turns that store off (for code that patches jaxmlp at run time).

    Returns:
      The absolute path of the cache directory.

    Small programs are cached too (minimum compile time 0 s, no minimum entry size). Calling it again
    with another path switches the process to that directory. See the module docstring for what the
    cache is keyed on, and why it must be a directory only you can write to.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    path = default_path() if path is None else os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"path must be None or a non-empty path, got {path!r}")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    if jax.config.jax_compilation_cache_dir not in (None, path):
        compilation_cache.reset_cache()  # jax opens its cache once per process; let it reopen at `path`
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if store_programs:
        programs.enable(os.path.join(path, "programs"))
    else:
        programs.disable()
    return path
