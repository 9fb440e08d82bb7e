"""Reader for the IDX files MNIST ships in (LeCun et al.), plain or gzipped."""

import gzip
from pathlib import Path

import numpy as np

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file: a 4-byte magic (0, 0, dtype, rank), big-endian dims, then data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file")
    rank = raw[3]
    shape = tuple(int(size) for size in np.frombuffer(raw, ">i4", count=rank, offset=4))
    data = np.frombuffer(raw, _DTYPES[raw[2]], offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {data.size} values")
    return data.reshape(shape)


def find_idx(directory: Path, stem: str) -> Path:
    """``stem`` in ``directory``, gzipped or not (MNIST is distributed both ways)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory} has neither {stem} nor {stem}.gz")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Encode unsigned bytes as IDX (gzipped when the name ends in .gz), MNIST's own layout."""
    data = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, data.ndim]) + np.asarray(data.shape, ">i4").tobytes()
    raw = header + data.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
