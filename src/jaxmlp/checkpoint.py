"""Atomic checkpoints of a pytree of training state, in NumPy's ``.npz`` format.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then renamed over
its final name (``os.replace`` is atomic on POSIX), so a crash mid-write leaves either the previous
checkpoint or the new one, never a torn file. Loading needs a template pytree with the same structure
(the caller's params and optimizer state): the file stores leaves, not Python classes, so nothing is
unpickled.
"""

from __future__ import annotations

import os
import re
import tempfile

import jax
import numpy as np

_NAME = "ckpt_{:08d}.npz"
_PATTERN = re.compile(r"ckpt_(\d{8})\.npz$")


def save(directory, step: int, state, *, keep: int = 2) -> str:
    """Write ``state`` (a pytree of arrays) as checkpoint ``step`` in ``directory``; keep the newest ``keep``."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the checkpoint just written is kept), got keep={keep}")
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{i:05d}": np.asarray(jax.device_get(leaf)) for i, leaf in enumerate(leaves)}
    final = os.path.join(directory, _NAME.format(step))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_ckpt_", suffix=".npz")
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
    for old in steps(directory)[:-keep]:
        os.remove(os.path.join(directory, _NAME.format(old)))
    return final


def steps(directory) -> list[int]:
    """The steps of the complete checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(m.group(1)) for name in os.listdir(directory) if (m := _PATTERN.match(name)))


def load(directory, step: int, like):
    """Read checkpoint ``step`` into the structure of ``like``, checking every leaf's shape and dtype."""
    path = os.path.join(directory, _NAME.format(step))
    template, treedef = jax.tree.flatten(like)
    with np.load(path) as data:
        leaves = [data[f"leaf_{i:05d}"] for i in range(len(data.files))]
    if len(leaves) != len(template):
        raise ValueError(f"checkpoint {path} holds {len(leaves)} arrays but the training state has {len(template)}")
    for i, (saved, want) in enumerate(zip(leaves, template)):
        dtype = want.dtype if hasattr(want, "dtype") else np.asarray(want).dtype  # no device-to-host copy
        if saved.shape != np.shape(want) or saved.dtype != dtype:
            raise ValueError(f"checkpoint {path}: array {i} has shape {saved.shape} and dtype {saved.dtype}, "
                             f"but the training state expects {np.shape(want)} and {dtype}")
    return jax.tree.unflatten(treedef, leaves)
