"""The IDX writer round-trips through the reader, so `idx:DIR` examples run without downloads."""

from pathlib import Path

import numpy as np
import pytest

from kubenas_trainer.export_idx import export_digits
from kubenas_trainer.idx import find_idx, read_idx, write_idx


def test_write_then_read_is_identity(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("plain-idx3-ubyte", "zipped-idx3-ubyte.gz"):
        write_idx(tmp_path / name, array)
        assert np.array_equal(read_idx(tmp_path / name), array)


@pytest.mark.trainer
def test_exported_digits_load_as_an_idx_dataset(tmp_path: Path) -> None:
    from kubenas_trainer.data import load_dataset

    export_digits(tmp_path / "idx")
    images = read_idx(find_idx(tmp_path / "idx", "train-images-idx3-ubyte"))
    assert images.shape[1:] == (8, 8) and images.max() == 255
    splits = load_dataset(f"idx:{tmp_path / 'idx'}", tmp_path)
    assert splits.sample_shape == (1, 8, 8)
