"""Atomic checkpoints of a pytree of training state, in NumPy's ``.npz`` format.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then renamed over
its final name (``os.replace`` is atomic on POSIX), so a crash mid-write leaves either the previous
checkpoint or the new one, never a torn file. The temporary's name carries the host and the process id
of its writer (``.tmp_ckpt_<host>_<pid>_*.npz``): a process killed mid-write leaves it behind, and the
next :func:`save` or :func:`steps` in that directory, on that host, removes the temporaries of processes
that no longer exist. Loading needs a template pytree with the same structure
(the caller's params and optimizer state): the file stores leaves, not Python classes, so nothing is
unpickled.

Beside the leaves (``leaf_00000``, ...), a checkpoint holds:

- ``meta``: a JSON string describing the state it was written from (per part of a tuple state: the
  part's type name and each leaf's path, shape and dtype), so that a template that does not match is
  refused with what differs (another kind of optimizer state, another architecture, another dtype);
- ``history_<name>``: optional arrays, the metrics of the run up to this step (:func:`load_history`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile

import jax
import numpy as np

_NAME = "ckpt_{:08d}.npz"
_PATTERN = re.compile(r"ckpt_(\d{8})\.npz$")
_HISTORY = "history_"
_TMP_PREFIX = ".tmp_ckpt_"
_SHOWN = 4  # leaves listed per differing part of a mismatch


def _dtype(leaf):
    return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype  # no device-to-host copy


def describe(state) -> list[dict]:
    """The parts of ``state`` (the elements of a tuple state, else the state itself), each as
    ``{"type": name, "leaves": [[path, shape, dtype], ...]}``: what :func:`load` compares."""
    parts = state if type(state) is tuple else (state,)
    return [{"type": type(part).__name__,
             "leaves": [[jax.tree_util.keystr(path), list(np.shape(leaf)), str(_dtype(leaf))]
                        for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]]}
            for part in parts]


def save(directory, step: int, state, *, keep: int = 2, history=None) -> str:
    """Write ``state`` (a pytree of arrays) as checkpoint ``step`` in ``directory``; keep the newest ``keep``.

    ``history``: an optional dict of arrays (a run's metrics so far), read back by :func:`load_history`.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the checkpoint just written is kept), got keep={keep}")
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(jax.device_get(leaf)) for i, leaf in enumerate(leaves)}
    arrays["meta"] = np.asarray(json.dumps({"parts": describe(state)}))
    arrays.update({_HISTORY + k: np.asarray(v) for k, v in (history or {}).items()})
    final = os.path.join(directory, _NAME.format(step))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{_TMP_PREFIX}{_host()}_{os.getpid()}_", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for old in steps(directory)[:-keep]:  # steps() also removes dead writers' temporaries
        try:
            os.remove(os.path.join(directory, _NAME.format(old)))
        except FileNotFoundError:  # another writer of this directory removed it first
            pass
    return final


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or no pid of ours: keep it
        return True
    return True


def _remove_orphans(directory) -> None:
    """Remove the temporaries left in ``directory`` by processes of this host that no longer exist."""
    pattern = re.compile(re.escape(_TMP_PREFIX + _host()) + r"_(\d+)_.*\.npz$")
    for name in os.listdir(directory):
        m = pattern.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:  # another process removed it first
                pass


def steps(directory) -> list[int]:
    """The steps of the complete checkpoints in ``directory``, oldest first (and the orphaned temporaries of
    dead writers removed, see the module docstring)."""
    if not os.path.isdir(directory):
        return []
    _remove_orphans(directory)
    return sorted(int(m.group(1)) for name in os.listdir(directory) if (m := _PATTERN.match(name)))


def _leaf_list(leaves) -> str:
    shown = ", ".join(f"{path or '<leaf>'} {tuple(shape)} {dtype}" for path, shape, dtype in leaves[:_SHOWN])
    return shown + (f", ... ({len(leaves) - _SHOWN} more)" if len(leaves) > _SHOWN else "")


def _differences(saved: list[dict], wanted: list[dict], names) -> list[str]:
    """What differs between the parts a checkpoint was written from and the template's, part by part."""
    out = []
    for i in range(max(len(saved), len(wanted))):
        name = names[i] if names is not None and i < len(names) else f"part {i}"
        s = saved[i] if i < len(saved) else None
        w = wanted[i] if i < len(wanted) else None
        if s == w:
            continue
        if s is None or w is None:
            out.append(f"{name}: only {'this run' if s is None else 'the checkpoint'} has it")
        elif s["type"] != w["type"] or [p for p, _, _ in s["leaves"]] != [p for p, _, _ in w["leaves"]]:
            out.append(f"{name}: the checkpoint holds a {s['type']} of {len(s['leaves'])} arrays "
                       f"[{_leaf_list(s['leaves'])}], this run a {w['type']} of {len(w['leaves'])} arrays "
                       f"[{_leaf_list(w['leaves'])}]")
        else:
            changed = [(a, b) for a, b in zip(s["leaves"], w["leaves"]) if a != b]
            shown = [f"{a[0] or '<leaf>'} is {tuple(a[1])} {a[2]} in the checkpoint but {tuple(b[1])} {b[2]} "
                     f"in this run" for a, b in changed[:_SHOWN]]
            more = [f"... ({len(changed) - _SHOWN} more)"] if len(changed) > _SHOWN else []
            out.append(f"{name}: " + "; ".join(shown + more))
    return out


def load(directory, step: int, like, *, names=None):
    """Read checkpoint ``step`` into the structure of ``like``, checking every leaf's shape and dtype.

    Raises:
      ValueError: when the checkpoint does not match ``like``, saying what differs, part by part of a
        tuple state (named by ``names``, e.g. ``("params", "optimizer state")``), for checkpoints
        written with their description (``meta``).
    """
    path = os.path.join(directory, _NAME.format(step))
    template, treedef = jax.tree.flatten(like)
    with np.load(path) as data:
        n = sum(1 for k in data.files if k.startswith("leaf_"))
        leaves = [data[f"leaf_{i:05d}"] for i in range(n)]
        meta = json.loads(str(data["meta"])) if "meta" in data.files else None
    problem = None
    if len(leaves) != len(template):
        problem = f"checkpoint {path} holds {len(leaves)} arrays but the training state has {len(template)}"
    for i, (saved, want) in enumerate(zip(leaves, template)):
        if problem is None and (saved.shape != np.shape(want) or saved.dtype != _dtype(want)):
            problem = (f"checkpoint {path}: array {i} has shape {saved.shape} and dtype {saved.dtype}, "
                       f"but the training state expects {np.shape(want)} and {_dtype(want)}")
    if problem is not None:
        if meta is not None:
            problem += " (" + "; ".join(_differences(meta["parts"], describe(like), names)) + ")"
        raise ValueError(problem)
    return jax.tree.unflatten(treedef, leaves)


def load_history(directory, step: int) -> dict:
    """The history saved with checkpoint ``step`` (``{}`` when none was)."""
    with np.load(os.path.join(directory, _NAME.format(step))) as data:
        return {k[len(_HISTORY):]: data[k] for k in data.files if k.startswith(_HISTORY)}
