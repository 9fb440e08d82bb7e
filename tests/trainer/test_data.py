"""Datasets: fixed, disjoint, stratified splits; formats; normalisation with train statistics."""

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from kubenas_trainer.config import ConfigError
from kubenas_trainer.data import load_dataset

pytestmark = pytest.mark.trainer


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def _unique_npz(path: Path, count: int = 300, classes: int = 3) -> Path:
    """Samples whose values encode their index, so splits can be checked for overlap."""
    x = np.arange(count * 4, dtype=np.float32).reshape(count, 1, 2, 2)
    np.savez(path, x=x, y=np.arange(count) % classes)
    return path


def test_splits_are_deterministic_disjoint_and_cover_the_data(tmp_path: Path) -> None:
    _unique_npz(tmp_path / "unique.npz")
    first = load_dataset("npz:unique.npz", tmp_path)
    second = load_dataset("npz:unique.npz", tmp_path)
    for a, b in zip(
        (first.train, first.val, first.test), (second.train, second.val, second.test), strict=True
    ):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    parts = [_rows(split[0]) for split in (first.train, first.val, first.test)]
    assert sum(len(part) for part in parts) == len(set().union(*parts)) == 300
    assert (len(first.train[1]), len(first.val[1]), len(first.test[1])) == (216, 24, 60)


def test_splits_are_stratified_and_normalised_with_train_statistics() -> None:
    splits = load_dataset("digits", Path("."))
    assert splits.sample_shape == (1, 8, 8) and splits.num_classes == 10
    for _, labels in (splits.train, splits.val, splits.test):
        counts = np.bincount(labels, minlength=10)
        assert counts.max() - counts.min() <= max(3, 0.1 * counts.mean())
    assert abs(float(splits.train[0].mean())) < 1e-4
    assert abs(float(splits.train[0].std()) - 1) < 1e-3
    assert splits.train[0].dtype == np.float32 and splits.train[1].dtype == np.int64


def test_npz_with_its_own_validation_and_test_sets_is_used_as_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays: dict[str, np.ndarray] = {
        f"{kind}_{split}": (
            rng.standard_normal((size, 30)) if kind == "x" else rng.integers(0, 4, size)
        )
        for split, size in (("train", 50), ("val", 20), ("test", 10))
        for kind in "xy"
    }
    save_named: Callable[..., None] = np.savez  # numpy's stubs mistype **arrays as flags
    save_named(tmp_path / "seq.npz", **arrays)
    splits = load_dataset(f"npz:{tmp_path / 'seq.npz'}", Path("/nonexistent"))
    assert splits.sample_shape == (1, 30)
    assert [len(s[1]) for s in (splits.train, splits.val, splits.test)] == [50, 20, 10]
    np.testing.assert_array_equal(splits.test[1], arrays["y_test"])


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_idx_directory_reads_plain_and_gzipped_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images, labels = rng.integers(0, 256, (40, 6, 6)), rng.integers(0, 10, 40)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:30], compress=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:30], compress=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[30:], compress=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[30:], compress=False)
    splits = load_dataset("idx:.", tmp_path)
    assert splits.sample_shape == (1, 6, 6)
    assert (len(splits.train[1]), len(splits.val[1]), len(splits.test[1])) == (27, 3, 10)
    np.testing.assert_array_equal(splits.test[1], labels[30:])


@pytest.mark.parametrize(
    "spec,shape,classes",
    [
        ("synthetic:3x16x16:10:500", (3, 16, 16), 10),
        ("synthetic:2x50:4", (2, 50), 4),
    ],
)
def test_synthetic_data_has_the_requested_shape(
    spec: str, shape: tuple[int, ...], classes: int
) -> None:
    splits = load_dataset(spec, Path("."))
    assert splits.sample_shape == shape and splits.num_classes <= classes
    assert len(splits.train[1]) + len(splits.val[1]) + len(splits.test[1]) in (500, 1000)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("cifar10", "dataset must be digits"),
        ("synthetic:3x32:ten", "synthetic:CxHxW"),
        ("npz:missing.npz", "cannot read npz"),
        ("idx:missing", "cannot read IDX"),
    ],
)
def test_bad_dataset_specs_say_what_is_wrong(spec: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset(spec, tmp_path)


@pytest.mark.slow
def test_mnist1d_is_generated_offline_and_cached(tmp_path: Path) -> None:
    pytest.importorskip("mnist1d")
    splits = load_dataset("mnist1d", tmp_path)
    assert splits.sample_shape == (1, 40) and splits.num_classes == 10
    assert (len(splits.train[1]), len(splits.val[1]), len(splits.test[1])) == (3600, 400, 1000)
    assert (tmp_path / "mnist1d" / "mnist1d-default.npz").is_file()
    cached = load_dataset("mnist1d", tmp_path)
    np.testing.assert_array_equal(cached.test[0], splits.test[0])


def test_a_dataset_is_prepared_once_and_mapped_after(tmp_path: Path) -> None:
    source = _unique_npz(tmp_path / "unique.npz")
    first = load_dataset("npz:unique.npz", tmp_path)
    (entry,) = (tmp_path / "prepared").iterdir()
    assert (entry / "complete").is_file()
    again = load_dataset("npz:unique.npz", tmp_path)
    assert isinstance(again.train[0], np.memmap)
    np.testing.assert_array_equal(first.train[0], again.train[0])
    np.testing.assert_array_equal(first.test[1], again.test[1])
    again.train[0][0] = 0.0  # copy-on-write: a trial may scale its data in place
    np.testing.assert_array_equal(load_dataset("npz:unique.npz", tmp_path).train[0], first.train[0])
    # A changed source is prepared again, under a new entry.
    x = np.ones((300, 1, 2, 2), dtype=np.float32) * np.arange(300)[:, None, None, None]
    np.savez(source, x=-x, y=np.arange(300) % 3)
    changed = load_dataset("npz:unique.npz", tmp_path)
    assert len(list((tmp_path / "prepared").iterdir())) == 2
    assert not np.array_equal(changed.train[0], first.train[0])
