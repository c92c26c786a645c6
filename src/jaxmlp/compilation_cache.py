"""jax's persistent compilation cache, turned on in one call, in a directory only you can write to.

A research script that is rerun all day pays, in each fresh process, for compiling the same programs
again; jax can keep compiled programs on disk and load them in the next process::

    import jaxmlp
    jaxmlp.enable_compilation_cache()          # $XDG_CACHE_HOME/jaxmlp, or ~/.cache/jaxmlp
    params, history = jaxmlp.fit(...)          # a second run of the script loads, does not compile

It is opt-in: importing jaxmlp changes no jax setting. The call changes three, for the whole process:
``jax_compilation_cache_dir``; ``jax_persistent_cache_min_compile_time_secs = 0`` (jax's default of 1 s
skips every program that compiles faster, which is all of jaxmlp's small ones); and
``jax_persistent_cache_min_entry_size_bytes = -1`` (no minimum size). jax keys each entry on the
program's HLO as traced in this process, jaxlib's and the backend's versions, the compile options,
``XLA_FLAGS`` and the devices, so an edited function or another flag compiles anew.

**The cache is trusted code**: loading an entry runs the machine code in it, so whoever can write to
the directory, or rename one of its parents, can run code in your process. The directory is created
0700, and a directory that someone else could write to is refused (:func:`check_private`).
"""

from __future__ import annotations

import os
import stat

ENV_HOME = "XDG_CACHE_HOME"


def default_path() -> str:
    """``$XDG_CACHE_HOME/jaxmlp`` when ``XDG_CACHE_HOME`` is set (and not empty), else ``~/.cache/jaxmlp``."""
    base = os.environ.get(ENV_HOME) or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxmlp")


def check_private(path: str) -> None:
    """Refuse ``path`` unless only you (and root) can change what it holds.

    With symlinks resolved first, ``path`` and every parent must be owned by you or by root, and must not
    be writable by the group or by others, except that a parent may be when it has the sticky bit (as
    the system's temporary directory has: there nobody can rename or remove what another user owns).
    ``path`` itself is never allowed group or world write, sticky or not: others could add entries.

    Raises:
      PermissionError: naming the directory at fault, what is wrong with it, and the fix.
    """
    me = os.getuid() if hasattr(os, "getuid") else None
    if me is None:  # no POSIX ownership to check (Windows)
        return
    real = os.path.realpath(path)
    current = real
    while True:
        st = os.stat(current)
        owner_ok = st.st_uid in (me, 0)
        shared_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky = st.st_mode & stat.S_ISVTX and current != real
        if not owner_ok or (shared_write and not sticky):
            writers = " and ".join(w for w, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH))
                                   if st.st_mode & bit)
            why = (f"it is owned by uid {st.st_uid}, not by you (uid {me}) or root" if not owner_ok else
                   f"it is writable by {writers} (mode {stat.filemode(st.st_mode)})")
            where = "the cache directory" if current == real else f"{current!r} (a parent of the cache directory)"
            fix = (f"chmod go-w {current!r}" if owner_ok else "choose a directory under your home")
            raise PermissionError(
                f"refusing the compilation cache at {real!r}: {where} is not private, {why}. Loading a cache entry "
                f"runs its code, so anyone who can write there could run code as you. Fix: {fix}, or pass "
                f"another path (enable_compilation_cache(path) / --cache-dir DIR)")
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _make_private_dirs(path: str) -> None:
    """``os.makedirs(path)`` with every directory it creates mode 0700 (``makedirs`` gives the parents it
    creates the umask's mode, 0775 under umask 002, which :func:`check_private` would then refuse)."""
    missing, ancestor = [], path
    while not os.path.lexists(ancestor):
        missing.append(ancestor)
        ancestor = os.path.dirname(ancestor)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # made meanwhile by another process; check_private judges it
            pass
    if not os.path.isdir(path):
        raise NotADirectoryError(f"the compilation cache path {path!r} exists and is not a directory")


def enable_compilation_cache(path=None) -> str:
    """Turn on jax's persistent compilation cache in ``path`` for every program of this process.

    Args:
      path: the cache directory (a ``str`` or ``os.PathLike``; ``~`` is expanded); ``None`` for
        :func:`default_path`. It, and every missing parent, is created mode 0700.

    Returns:
      The absolute path of the cache directory, symlinks resolved: the directory that was checked is the
      one jax uses, whatever a symlink on the way is later pointed at.

    Raises:
      PermissionError: the directory, or a parent, could be written by someone else (:func:`check_private`).
      OSError: the directory cannot be created.

    Calling it again with another path switches the process to that directory.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    path = default_path() if path is None else os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"path must be None or a non-empty path, got {path!r}")
    path = os.path.abspath(os.path.expanduser(path))
    _make_private_dirs(path)
    check_private(path)
    path = os.path.realpath(path)
    if jax.config.jax_compilation_cache_dir not in (None, path):
        compilation_cache.reset_cache()  # jax opens its cache once per process; let it reopen at `path`
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path
