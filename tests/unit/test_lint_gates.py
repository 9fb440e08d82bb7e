"""The lint gates CI runs before the tests: `make lint` checks lint, formatting and strict
typing over every Python folder, and each check fails on a finding."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LINTED = "operator trainer hack tests"


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_make_lint_runs_each_gate_over_the_four_folders() -> None:
    dry_run = _run("make", "--dry-run", "--no-print-directory", "lint", "PYTHON=python3")
    assert dry_run.returncode == 0, dry_run.stderr
    gates = [line for line in dry_run.stdout.splitlines() if " pip install " not in line]
    assert gates == [
        f"python3 -m ruff check {LINTED}",
        f"python3 -m ruff format --check {LINTED}",
        f"python3 -m mypy {LINTED}",
    ]


def test_ci_runs_the_lint_gates_before_the_tests() -> None:
    steps = (REPO / ".ci" / "run").read_text().splitlines()
    assert "set -euo pipefail" in steps
    assert steps.index("make lint") < steps.index("make test")


def test_format_check_fails_on_a_misformatted_file(tmp_path: Path) -> None:
    sample = tmp_path / "gpus.py"
    shutil.copy(REPO / "hack" / "kubenas_devcluster" / "gpus.py", sample)
    check = ("-m", "ruff", "format", "--check", "--config", str(PYPROJECT), str(sample))
    assert _run(sys.executable, *check).returncode == 0
    source = sample.read_text()
    sample.write_text(source.replace(" = ", "="))
    assert sample.read_text() != source
    assert _run(sys.executable, *check).returncode == 1


def test_mypy_rejects_an_unannotated_test(tmp_path: Path) -> None:
    untyped = tmp_path / "test_untyped.py"
    untyped.write_text("def test_path(tmp_path):\n    assert tmp_path.exists()\n")
    cache = str(tmp_path / "mypy-cache")
    mypy = ("-m", "mypy", "--config-file", str(PYPROJECT), "--cache-dir", cache)
    checked = _run(sys.executable, *mypy, str(untyped), cwd=tmp_path)
    assert checked.returncode == 1
    assert "[no-untyped-def]" in checked.stdout
