r"""jaxmlp's own store of compiled programs: found on disk *before* anything is traced.

jax's persistent compilation cache (:mod:`jaxmlp.cache`) is keyed by the lowered program, so a warm
process still pays for tracing and lowering before it can look anything up: for the digits
:func:`jaxmlp.fit` that is 0.11 s of the 0.2 s first call, more than the whole training run. This store
keys a program by *what determines it* instead, so a hit skips tracing, lowering and compiling::

    key = SHA-256( environment, function, static arguments, argument structure and types )          (P1)

- **environment**: jaxmlp's source code (every ``.py`` file of the package, hashed), the versions of
  Python, NumPy, jax and jaxlib, jax's configuration as its own ``jit`` cache sees it
  (``trace_context``: x64, matmul precision, ...), the backend (platform, its version, device kinds and
  count), ``XLA_FLAGS`` and, on Linux, the CPU's feature flags;
- **function**: a module-level function of jaxmlp, by name (its code is in the source hash);
- **static arguments**: only values with a stable description: ``None``, bools, ints, floats, strings,
  dtypes, tuples/lists/dicts of them, jaxmlp's named activations, ``functools.partial`` of jaxmlp
  functions, jaxmlp's frozen configuration dataclasses, and jaxmlp's optimizers built from such values
  (the constructor and its arguments). Anything else (a user's function or activation, an optax
  optimizer, a schedule, an array hyperparameter) has no description: that call is not stored, and
  goes through ``jax.jit`` (and jax's own cache) as before;
- **arguments**: the pytree structure, and each leaf's shape, dtype and weak type; a leaf placed on
  anything but the default device is not stored either.

A miss traces, lowers and compiles as ``jax.jit`` would, then writes the executable
(``jax.experimental.serialize_executable``, zlib-compressed) atomically (a temporary file, then ``os.replace``). A hit
reads and loads it; in-process, loaded programs are kept in memory. An entry that cannot be read or
loaded is compiled afresh and rewritten.

**What it trusts.** Loading an entry runs its machine code (and unpickles its argument structures):
as for jax's cache, the directory must be writable by you only; one that others can write to, or that
another user owns, is refused. A key covers jaxmlp's code as it was on disk at import; nothing is
stored or loaded

- once a source file has changed on disk since (the code in memory is then neither version);
- while any attribute of a jaxmlp module is rebound (:func:`patched`: a ``monkeypatch.setattr`` of a
  function, a partial, a jit or a constant);
- for traced arguments (a call inside an outer ``jit``), and under jax's ``debug_nans``,
  ``debug_infs`` or ``disable_jit``;

those calls go through the caller's ``jax.jit``, as does any call whose key cannot be computed. A
container changed in place (a registry dict) is not detected: turn the store off for that
(``enable_compilation_cache(..., store_programs=False)`` or :func:`disable`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import pickle
import re
import sys
import tempfile
import threading
import types
import zlib

FORMAT = 1  # bump when what an entry holds changes

_state = {"dir": None}  # the store's directory; None: off
_thread = threading.local()  # loaded_by_jax: set when jax's persistent cache served this thread's compile
_loaded: dict = {}  # key -> the loaded (or compiled) program, this process
_recipes: dict = {}  # id(optimizer) -> (optimizer, description): jaxmlp.optim records how it built each
_MAX_RECIPES = 4096
_stats = {"hits": 0, "misses": 0, "writes": 0, "skipped": 0}


class Undescribable(TypeError):
    """A static argument without a stable description: its call is not stored."""


def directory():
    """The store's directory, or None when it is off."""
    return _state["dir"]


def enable(path) -> None:
    """Keep programs in ``path`` (created if missing, mode 0700). A directory that another user owns, or that
    others may write to, is refused with a warning: loading an entry runs it."""
    path = os.fspath(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
        import warnings

        warnings.warn(f"jaxmlp's program store stays off: {path} is writable by others or owned by another "
                      f"user (mode {st.st_mode & 0o777:o}), and loading a program runs its code", stacklevel=3)
        _state["dir"] = None
        return
    _state["dir"] = path


def disable() -> None:
    """Stop using the store (programs already loaded in this process stay usable)."""
    _state["dir"] = None


def stats() -> dict:
    """Counts since the process started: ``hits`` (loaded from disk), ``misses`` (compiled and written),
    ``writes`` and ``skipped`` (calls with an undescribable argument, run through ``jax.jit``)."""
    return dict(_stats)


def record(optimizer, description: str):
    """Note how a jaxmlp optimizer was built (called by :mod:`jaxmlp.optim`'s constructors)."""
    if len(_recipes) >= _MAX_RECIPES:  # the oldest is forgotten: its calls are no longer stored, nothing worse
        _recipes.pop(next(iter(_recipes)))
    _recipes[id(optimizer)] = (optimizer, description)  # the entry holds the object: its id is not reused
    return optimizer


# ---------------------------------------------------------------- (P1): descriptions


def describe(obj) -> str:
    """A stable text for a static argument, the same in every process; :class:`Undescribable` if none."""
    import numpy as np

    if obj is None or isinstance(obj, (bool, int, str)):
        return f"{type(obj).__name__}:{obj!r}"
    if isinstance(obj, float):  # np.float64 too, under its own name: it is not weakly typed in jax
        return f"{type(obj).__name__}:{obj.hex()}"
    if isinstance(obj, (tuple, list)) and not hasattr(obj, "_fields"):
        return f"{type(obj).__name__}({','.join(describe(o) for o in obj)})"
    if isinstance(obj, dict):
        return "dict{" + ",".join(f"{describe(k)}:{describe(v)}" for k, v in sorted(obj.items(), key=repr)) + "}"
    if isinstance(obj, functools.partial):
        return (f"partial({describe(obj.func)};{describe(tuple(obj.args))};"
                f"{describe(dict(obj.keywords))})")
    if type(obj).__name__ == "PyTreeDef":
        return f"treedef:{_treedef_text(obj)}"
    recipe = _recipes.get(id(obj))
    if recipe is not None and recipe[0] is obj:
        return f"optimizer:{recipe[1]}"
    module = getattr(obj, "__module__", None) or ""
    if not (module == "jaxmlp" or module.startswith("jaxmlp.")):
        if isinstance(obj, (np.dtype, type)):  # dtypes and scalar types: jnp.float32, np.dtype("bfloat16"), ...
            try:  # (not any object with a .dtype: an array is not described by its dtype)
                dtype = np.dtype(obj)
            except TypeError:
                dtype = None
            if dtype is not None and dtype.kind != "O":  # any other class is "object" to NumPy: no description
                return f"dtype:{dtype.name}"
        raise Undescribable(f"{type(obj).__name__} {obj!r:.80}")
    if callable(obj) and getattr(sys.modules.get(module), getattr(obj, "__qualname__", ""), None) is obj:
        return f"fn:{module}.{obj.__qualname__}"  # a module-level jaxmlp function: its code is hashed
    if type(obj).__name__ == "Activation":
        from jaxmlp import activations

        if obj.name in activations.NAMES and activations.get(obj.name) is obj:
            return f"activation:{obj.name}"
        raise Undescribable(f"a user's Activation {obj.name!r}")
    if dataclasses.is_dataclass(obj) and type(obj).__dataclass_params__.frozen:
        fields = ",".join(f"{f.name}={describe(getattr(obj, f.name))}" for f in dataclasses.fields(obj))
        return f"{module}.{type(obj).__qualname__}({fields})"
    raise Undescribable(f"{type(obj).__name__} {obj!r:.80}")


def _treedef_text(treedef) -> str:
    """A structure's text and the hash of its pickle, which names the node classes by module (the text
    names them by class name only); Undescribable when it does not pickle (a node class defined in a
    function, say)."""
    try:
        return f"{treedef}:{hashlib.sha256(pickle.dumps(treedef)).hexdigest()}"
    except Exception as e:
        raise Undescribable(f"a pytree structure that does not pickle ({type(e).__name__})") from None


def _source_files():
    """``(directory, sorted names of jaxmlp's .py files, their (mtime, size))``; OSError when unreadable."""
    root = os.path.dirname(os.path.abspath(__file__))
    names = tuple(sorted(n for n in os.listdir(root) if n.endswith(".py")))
    return root, names, tuple((os.stat(os.path.join(root, n)).st_mtime_ns, os.path.getsize(os.path.join(root, n)))
                              for n in names)


def _snapshot_source():
    """jaxmlp's source as it is when jaxmlp is imported: the files' stats and the SHA-256 of their text;
    None when they cannot be read (a zip import, an install without .py files)."""
    try:
        root, names, stats = _source_files()
        if "programs.py" not in names:
            return None
        digest = hashlib.sha256()
        for name in names:
            digest.update(name.encode())
            with open(os.path.join(root, name), "rb") as f:
                digest.update(f.read())
    except OSError:
        return None
    return names, stats, digest.hexdigest()


_SOURCE = _snapshot_source()  # taken at import, with the code that this process runs


def _source_hash() -> str:
    """The SHA-256 of jaxmlp's source taken at import; Undescribable when it could not be read, or when a
    file has changed on disk since (the code in memory is then neither the old files nor the new)."""
    if _SOURCE is None:
        raise Undescribable("jaxmlp's source files cannot be read (a zip import?)")
    try:
        _, names, stats = _source_files()
    except OSError:
        raise Undescribable("jaxmlp's source files cannot be read") from None
    if (names, stats) != _SOURCE[:2]:
        raise Undescribable("jaxmlp's source changed on disk since it was imported")
    return _SOURCE[2]


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _process_environment() -> str:
    """What (P1)'s environment holds that cannot change while the process runs."""
    import platform

    import jax
    import jaxlib
    import numpy as np

    devices = jax.devices()
    return repr((FORMAT, sys.version, np.__version__, jax.__version__, jaxlib.__version__,
                 devices[0].client.platform_version, devices[0].platform,
                 tuple(d.device_kind for d in devices), jax.process_count(), os.environ.get("XLA_FLAGS", ""),
                 platform.machine(), _cpu_flags()))


def _trace_context() -> str:
    """jax's configuration as its ``jit`` cache sees it (thread-local settings included), object addresses
    taken out."""
    from jax._src import config

    return re.sub(r" at 0x[0-9a-f]+", "", repr(config.trace_context()))


def _argument_key(args) -> str:
    """The pytree structure of ``args`` and each leaf's shape, dtype and weak type; Undescribable for a
    leaf on another device than the default one, or sharded."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(args)
    default = jax.devices()[0]
    parts = []
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            raise Undescribable("a traced argument (a call inside an outer jit, vmap or grad)")
        if isinstance(leaf, jax.Array):
            if leaf.sharding.device_set != {default}:
                raise Undescribable(f"an argument placed on {leaf.sharding}")
            parts.append((leaf.shape, str(leaf.dtype), bool(getattr(leaf, "weak_type", False))))
        elif isinstance(leaf, np.ndarray | np.generic):
            parts.append((leaf.shape, str(leaf.dtype), False))
        elif isinstance(leaf, (bool, int, float)):
            parts.append(((), type(leaf).__name__, True))
        else:
            raise Undescribable(f"an argument of type {type(leaf).__name__}")
    return repr((_treedef_text(treedef), parts))


_LIBRARIES = frozenset({"jax", "jaxlib", "numpy", "optax", "chex", "ml_dtypes", "opt_einsum", "scipy"})


_seen: dict = {}  # module name -> {attribute: value} when the store first saw the module


def remember_modules() -> None:
    """Note every attribute of every loaded jaxmlp module not seen before (jaxmlp's ``__init__`` calls this
    once its modules are imported): :func:`patched` reports any that is later rebound."""
    for name, module in list(sys.modules.items()):
        if (name == "jaxmlp" or name.startswith("jaxmlp.")) and name not in _seen:
            _seen[name] = dict(vars(module))


def patched() -> str | None:
    """The first attribute of a loaded jaxmlp module that jaxmlp's source did not put there, or None.

    Two checks, since the source hash of (P1) sees neither, and no call is stored while one fails:

    - any attribute rebound since :func:`remember_modules` first saw its module (a function, a
      partial, a jit, a constant: ``monkeypatch.setattr(backprop, "_output_delta", ...)``);
    - for a module first seen after a patch, every function attribute must be a module-level function,
      under its own name, of jaxmlp, of a library jaxmlp uses or of Python's standard library
      (jaxmlp's source aliases none).

    A container changed in place is not detected: turn the store off to patch one.
    """
    remember_modules()
    for name, attributes in _seen.items():  # anything rebound: a function, a partial, a jit, a constant
        module = vars(sys.modules.get(name, types.ModuleType(name)))
        for attr, value in attributes.items():
            if module.get(attr, _seen) is not value:
                return f"{name}.{attr}"
    for name, module in list(sys.modules.items()):
        if name != "jaxmlp" and not name.startswith("jaxmlp."):
            continue
        for attr, value in list(vars(module).items()):
            if not isinstance(value, types.FunctionType):
                continue
            home = value.__module__ or ""
            root = home.split(".")[0]
            own = getattr(sys.modules.get(home), value.__qualname__, None) is value
            if not own or attr != value.__name__ or not (
                    root == "jaxmlp" or root in _LIBRARIES or root in sys.stdlib_module_names):
                return f"{name}.{attr}"
    return None


def key(fn, static: dict, args: tuple, compiler_options: dict | None) -> str:
    """(P1) for ``fn(*args, **static)`` compiled with ``compiler_options``; Undescribable while
    :func:`patched` finds an attribute that jaxmlp's source did not put there."""
    where = patched()
    if where is not None:
        raise Undescribable(f"{where} is not what jaxmlp's source put there (patched at run time)")
    text = repr((_source_hash(), _process_environment(), _trace_context(), describe(fn), describe(dict(static)),
                 describe(dict(compiler_options or {})), _argument_key(args)))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- the store


def _on_event(name, **_):
    if name == "/jax/compilation_cache/cache_hits":
        _thread.loaded_by_jax = True


def _compile_fresh(fn, static, args, compiler_options):
    """``(program, fresh)``: compiled under a name of its own (``stored_<fn>``), so that jax's persistent cache
    does not hand back the program an ordinary ``jit`` of ``fn`` compiled, and without writing a jax
    entry for it. ``fresh`` is False when jax's cache loaded it all the same (an entry that some other
    process wrote): an executable loaded by jax does not serialize whole (with jaxlib 0.10.2 its bytes
    lack the kernels, and running what they load fails with "Function ... not found"), so it is used,
    not written."""
    import jax
    from jax import monitoring

    if not _state.get("listening"):
        monitoring.register_event_listener(_on_event)
        _state["listening"] = True

    def stored(*a):
        return fn(*a, **static)

    stored.__name__ = stored.__qualname__ = f"stored_{fn.__name__}"
    _thread.loaded_by_jax = False
    with _jax_cache_writes_off():
        program = jax.jit(stored, compiler_options=compiler_options or None).lower(*args).compile()
    return program, not _thread.loaded_by_jax


def _jax_cache_writes_off():
    """A context (this thread only) in which jax's persistent cache writes nothing: the store keeps its own
    programs, and a jax entry of one would hand back an executable the store cannot write (see above).
    A no-op where jax has no thread-local setting for it."""
    from jax._src import config

    setting = getattr(config, "persistent_cache_min_compile_time_secs", None)
    return setting(float("inf")) if callable(setting) else contextlib.nullcontext()


def _load(path):
    from jax.experimental import serialize_executable

    with open(path, "rb") as f:
        payload, in_tree, out_tree = pickle.loads(zlib.decompress(f.read()))
    return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)


def _write(path, compiled) -> None:
    from jax.experimental import serialize_executable

    data = zlib.compress(pickle.dumps(serialize_executable.serialize(compiled)), 1)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: a reader sees the whole entry or none
    except BaseException:
        os.unlink(tmp)
        raise


def call(fn, static: dict, *args, fallback, compiler_options: dict | None = None):
    """``fn(*args, **static)`` compiled (``jax.jit`` with ``compiler_options``), through the store when it is
    on and every static argument and argument has a description; otherwise ``fallback(*args)``, the
    caller's own ``jax.jit`` of the same function (kept by the caller, so that jax's in-process cache
    and the persistent cache serve it as before)."""
    store = _state["dir"]
    if store is None or _debugging():
        return fallback(*args)
    try:
        k = key(fn, static, args, compiler_options)
    except Exception:  # Undescribable, or anything the key's reading of modules, files or arguments met
        _stats["skipped"] += 1
        return fallback(*args)
    program = _loaded.get(k)
    if program is None:  # two threads may both open a new key: the work is done twice, the result is the same
        program = _loaded[k] = _open(fn, static, args, compiler_options, os.path.join(store, k + ".xla"))
    return program(*args)


def _debugging() -> bool:
    """jax's ``debug_nans``, ``debug_infs`` or ``disable_jit`` is on: the caller's ``jax.jit`` honours them, a
    loaded executable would not."""
    from jax._src import config

    return any(getattr(config, name).value for name in ("debug_nans", "debug_infs", "disable_jit")
               if hasattr(config, name))


def _open(fn, static, args, compiler_options, path):
    """The program at ``path``, or compiled (and written there) when it is missing or unreadable."""
    if os.path.exists(path):
        try:
            program = _load(path)
            _stats["hits"] += 1
            return program
        except Exception:  # an entry of another jaxlib, or damaged: compile afresh, then replace it
            pass
    program, fresh = _compile_fresh(fn, static, args, compiler_options)
    _stats["misses"] += 1
    if fresh:
        try:
            _write(path, program)
            _stats["writes"] += 1
        except Exception:  # a full disk or an executable that cannot be serialized: it still runs
            pass
    return program
