"""Datasets read from files, decoded, split and normalised once per machine: the splits are kept
as ``.npy`` files under ``<data dir>/prepared/`` and later trials map them into memory instead of
preparing them again (60,000 MNIST images are decoded and normalised once, not once per trial).

An entry is keyed by the dataset name, what the source files are (path, size, modification
time) and the splitting constants, so a changed file or a changed split makes a new entry. It is
written to a temporary folder and renamed into place, so a reader never sees half of one.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Bump when the preparation itself changes (splitting, normalisation, dtypes).
FORMAT = 1
_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def source_files(kind: str, path: str, data_dir: Path) -> list[Path]:
    """The files a dataset is read from. Only these are prepared ahead: ``digits`` takes a tenth
    of a second to prepare, and a large ``synthetic`` set would only be copied to disk."""
    if kind == "npz":
        return [data_dir / path]
    if kind == "idx":
        directory = data_dir / path
        return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
    if kind == "mnist1d":
        return [data_dir / "mnist1d" / "mnist1d-default.npz"]
    return []


def entry_key(spec: str, sources: list[Path], constants: dict[str, float]) -> str:
    described = [spec, FORMAT, constants]
    for source in sources:
        stat = source.stat()
        described.append([str(source.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def cached_arrays(
    root: Path, key: str, prepare: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The prepared arrays of ``key``, memory-mapped copy-on-write (a trial may write to its
    copy; the file stays as it is); when no entry exists, prepared now, stored for the trials
    after, and returned as they are. A data dir that cannot be written to only costs preparing
    them each time."""
    entry = root / key
    if (entry / "complete").is_file():
        return {name: np.load(entry / f"{name}.npy", mmap_mode="c") for name in _ARRAYS}
    arrays = prepare()
    with contextlib.suppress(OSError):
        _store(root, entry, arrays)
    return arrays


def _store(root: Path, entry: Path, arrays: dict[str, np.ndarray]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=root))
    for name in _ARRAYS:
        np.save(partial / f"{name}.npy", arrays[name])
    (partial / "complete").write_text("")
    try:
        os.rename(partial, entry)
    except OSError:  # another process stored it first: theirs is the same
        for child in partial.iterdir():
            child.unlink()
        partial.rmdir()
