"""Datasets as fixed train/validation/test splits of NumPy arrays; nothing is downloaded.

Splits come from a fixed seed, independent of the trial seed, so every trial of an experiment is
scored on the same validation set, and the test set is never seen during the search.
Inputs are normalised per channel with training-set statistics.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from kubenas.api.builtin_trainer import Dataset, parse_dataset
from kubenas_trainer import prepared
from kubenas_trainer.config import ConfigError
from kubenas_trainer.idx import find_idx, read_idx

SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Splits:
    """Normalised float32 inputs shaped ``(N, C, L)`` or ``(N, C, H, W)`` and int64 labels."""

    train: Arrays
    val: Arrays
    test: Arrays
    num_classes: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


# Datasets a warm worker keeps for the trials after the first (kubenas_trainer.worker); a
# fresh trial process keeps nothing.
_kept: dict[tuple[str, Path], Splits] | None = None


def keep_loaded_datasets() -> None:
    global _kept
    _kept = {}


def load_dataset(spec: str, data_dir: Path) -> Splits:
    """Load the dataset named by ``spec`` (see docs/trainer-contract.md) and split it."""
    if _kept is not None:
        key = (spec, data_dir.resolve())
        if key not in _kept:
            _kept[key] = _load(spec, data_dir)
        return _kept[key]
    return _load(spec, data_dir)


def _load(spec: str, data_dir: Path) -> Splits:
    try:
        dataset = parse_dataset(spec)
    except ValueError as error:
        raise ConfigError(f"dataset {error}") from error
    loaders: dict[str, Callable[[Dataset, Path], dict[str, np.ndarray]]] = {
        "digits": _digits,
        "mnist1d": _mnist1d,
        "npz": _npz,
        "idx": _idx,
        "synthetic": _synthetic,
    }

    def load() -> Splits:
        return split_and_normalise(loaders[dataset.kind](dataset, data_dir))

    constants = {"split_seed": SPLIT_SEED, "test": TEST_FRACTION, "val": VAL_FRACTION}
    try:
        sources = prepared.source_files(dataset.kind, dataset.path, data_dir)
        key = prepared.entry_key(spec, sources, constants) if sources else None
    except OSError:  # a source that is not there: its loader says so, naming it
        key = None
    if key is None:
        return load()
    arrays = prepared.cached_arrays(data_dir / "prepared", key, lambda: _as_arrays(load()))
    ys = (arrays["y_train"], arrays["y_val"], arrays["y_test"])
    return Splits(
        (arrays["x_train"], arrays["y_train"]),
        (arrays["x_val"], arrays["y_val"]),
        (arrays["x_test"], arrays["y_test"]),
        int(max(y.max(initial=0) for y in ys)) + 1,
    )


def _as_arrays(splits: Splits) -> dict[str, np.ndarray]:
    pairs = (("train", splits.train), ("val", splits.val), ("test", splits.test))
    return {
        f"{a}_{split}": array for split, pair in pairs for a, array in zip("xy", pair, strict=True)
    }


def split_and_normalise(arrays: dict[str, np.ndarray]) -> Splits:
    """Carve the splits a source lacks (test, then validation) and normalise every split."""
    if "x_test" in arrays:
        train, test = (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    else:
        train, test = _carve((arrays["x_train"], arrays["y_train"]), TEST_FRACTION)
    if "x_val" in arrays:
        val = (arrays["x_val"], arrays["y_val"])
    else:
        train, val = _carve(train, VAL_FRACTION)
    splits = [_as_samples(x, y) for x, y in (train, val, test)]
    axes = (0, *range(2, splits[0][0].ndim))
    mean = splits[0][0].mean(axis=axes, keepdims=True)
    std = np.maximum(splits[0][0].std(axis=axes, keepdims=True), 1e-8)
    for x, _ in splits:
        x -= mean
        x /= std
    num_classes = int(max(y.max(initial=0) for _, y in splits)) + 1
    return Splits(splits[0], splits[1], splits[2], num_classes)


def _carve(arrays: Arrays, fraction: float) -> tuple[Arrays, Arrays]:
    """Split off ``fraction`` of the samples, stratified by label when every class allows it."""
    x, y = arrays
    indices = np.arange(len(y))
    try:
        kept, carved = train_test_split(
            indices, test_size=fraction, random_state=SPLIT_SEED, stratify=y
        )
    except ValueError:  # a class with a single sample, or fewer carved samples than classes
        kept, carved = train_test_split(indices, test_size=fraction, random_state=SPLIT_SEED)
    return (x[kept], y[kept]), (x[carved], y[carved])


def _as_samples(x: np.ndarray, y: np.ndarray) -> Arrays:
    """Give inputs a channel axis ((N, L) becomes (N, 1, L)) and check the labels."""
    samples = np.ascontiguousarray(x, dtype=np.float32)  # loaders hand over fresh arrays
    if samples.ndim == 2:
        samples = samples[:, None, :]
    if samples.ndim not in (3, 4):
        raise ConfigError(f"inputs must be (N, L), (N, C, L) or (N, C, H, W), got {x.shape}")
    labels = np.asarray(y).reshape(-1)
    if len(labels) != len(samples) or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError("labels must be one integer per sample")
    if labels.min(initial=0) < 0:
        raise ConfigError("labels must be >= 0")
    return samples, labels.astype(np.int64)


def _digits(dataset: Dataset, data_dir: Path) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"x_train": digits.images[:, None] / 16.0, "y_train": digits.target}


def _mnist1d(dataset: Dataset, data_dir: Path) -> dict[str, np.ndarray]:
    """MNIST-1D with the package's default arguments (4000 train, 1000 test, length 40), generated
    offline by its own ``make_dataset`` and cached because generation takes seconds."""
    cache = data_dir / "mnist1d" / "mnist1d-default.npz"
    if cache.is_file():
        with np.load(cache) as stored:
            return dict(stored)
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        message = "dataset mnist1d needs the mnist1d package: pip install mnist1d"
        raise ConfigError(message) from error
    made = make_dataset(get_dataset_args())
    arrays = {
        "x_train": made["x"],
        "y_train": made["y"],
        "x_test": made["x_test"],
        "y_test": made["y_test"],
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        partial.replace(cache)
    except OSError:
        pass  # a read-only data dir only costs regenerating next time
    return arrays


def _npz(dataset: Dataset, data_dir: Path) -> dict[str, np.ndarray]:
    path = data_dir / dataset.path
    try:
        with np.load(path) as stored:
            arrays = dict(stored)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read npz dataset {path}: {error}") from error
    if "x" in arrays and "x_train" not in arrays:
        arrays["x_train"], arrays["y_train"] = arrays.pop("x"), arrays.pop("y")
    for pair in ("train", "val", "test"):
        if (f"x_{pair}" in arrays) != (f"y_{pair}" in arrays) or (
            pair == "train" and "x_train" not in arrays
        ):
            raise ConfigError(
                f"npz dataset {path} needs x_train/y_train (or x/y) and matching "
                "x_val/y_val, x_test/y_test pairs"
            )
    return arrays


def _idx(dataset: Dataset, data_dir: Path) -> dict[str, np.ndarray]:
    directory = data_dir / dataset.path
    try:
        files = {
            "x_train": "train-images-idx3-ubyte",
            "y_train": "train-labels-idx1-ubyte",
            "x_test": "t10k-images-idx3-ubyte",
            "y_test": "t10k-labels-idx1-ubyte",
        }
        arrays = {key: read_idx(find_idx(directory, stem)) for key, stem in files.items()}
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read IDX dataset in {directory}: {error}") from error
    for key in ("x_train", "x_test"):
        arrays[key] = arrays[key][:, None] / 255.0  # (N, H, W) grey images get one channel
    return arrays


def _synthetic(dataset: Dataset, data_dir: Path) -> dict[str, np.ndarray]:
    """Random inputs and labels of a given shape, for measuring speed: generated directly as
    splits, since carving copies of a large random array would dominate start-up time."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = round(dataset.samples * TEST_FRACTION)
    val = round((dataset.samples - test) * VAL_FRACTION)
    arrays: dict[str, np.ndarray] = {}
    for split, size in (("train", dataset.samples - test - val), ("val", val), ("test", test)):
        arrays[f"x_{split}"] = rng.standard_normal((size, *dataset.shape), dtype=np.float32)
        arrays[f"y_{split}"] = rng.integers(0, dataset.classes, size)
    return arrays
