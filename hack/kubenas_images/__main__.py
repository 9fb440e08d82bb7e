"""``python -m kubenas_images [TARGET ...]``: build the images (default: operator and trainer)."""

from __future__ import annotations

import sys
import time

from kubenas_images import TARGETS, build_all


def main(argv: list[str]) -> int:
    targets = tuple(argv) or TARGETS
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        print(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    names = build_all(targets)
    print(f"images ready in {time.monotonic() - started:.1f} s: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
