"""Write a bundled dataset as MNIST-style IDX files, to try ``idx:DIR`` experiments without
downloading anything: ``python -m kubenas_trainer.export_idx digits data/idx``."""

import argparse
from pathlib import Path

import numpy as np

from kubenas_trainer.idx import write_idx

TEST_FRACTION = 0.2


def export_digits(directory: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(len(images) * (1 - TEST_FRACTION))
    train, test = order[:cut], order[cut:]
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, rows in (("train", train), ("t10k", test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images[rows])
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", digits.target[rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=["digits"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    export_digits(args.directory)
    print(f"wrote {args.dataset} as IDX files in {args.directory}")


if __name__ == "__main__":
    main()
