"""The benchmark commands print figures a person can read and a script can parse."""

from __future__ import annotations

import csv
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenas.api.vocabulary import NB201_EDGES, format_nb201_cell
from kubenas.cli import main

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _cells() -> Iterator[tuple[str, int]]:
    """Every NAS-Bench-201 cell string, with how many convolutions it has."""
    for ops in itertools.product(OPS, repeat=len(NB201_EDGES)):
        cell = format_nb201_cell(dict(zip(NB201_EDGES, ops, strict=True)))
        yield cell, sum(op.startswith("nor_conv") for op in ops)


def _write_table(path: Path) -> None:
    """A made-up table in NAS-Bench-201's format: more convolutions, higher accuracy."""
    rng = random.Random(0)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "arch", "val_acc_12ep", "test_acc_12ep", "test_acc_200ep"])
        for i, (arch, convs) in enumerate(_cells()):
            score = convs * 5.0 + rng.uniform(0, 3)
            writer.writerow(
                [i, arch, f"{50 + score:.3f}", f"{50 + score:.3f}", f"{60 + score:.3f}"]
            )


def test_bench_nb201_prints_a_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.csv"
    _write_table(table)
    code = main(
        [
            "bench",
            "nb201",
            "--dataset-file",
            str(table),
            "--queries",
            "40",
            "--seeds",
            "3",
            "--strategies",
            "random,local-search",
            "--workers",
            "1",
            "--json",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("random") for line in out)
    results = {r["strategy"]: r for r in json.loads(out[-1])["results"]}
    assert set(results) == {"random", "local-search"}
    assert results["random"]["seeds"] == 3 and results["random"]["queries"] == 40
    # searching beats sampling on a table whose signal is this clear
    assert results["local-search"]["mean"] > results["random"]["mean"]


def test_bench_nb201_scores_several_budgets_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.csv"
    _write_table(table)
    args = ["bench", "nb201", "--dataset-file", str(table), "--seeds", "3", "--workers", "1"]
    code = main([*args, "--queries", "40,10", "--strategies", "evolution", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [r["queries"] for r in rows] == [10, 40]
    # the validation and test columns agree in this table, so more queries never score less
    assert rows[1]["mean"] >= rows[0]["mean"]
    # a budget read off a longer search equals a search of that budget alone
    assert main([*args, "--queries", "10", "--strategies", "evolution", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert alone[0]["mean"] == rows[0]["mean"]


def test_bench_rejects_bad_query_budgets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "nb201", "--queries", "50,many"])
    assert "--queries" in capsys.readouterr().err


def test_bench_rejects_unknown_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "nb201", "--strategies", "simulated-annealing"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_bench_suggest_reports_each_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["bench", "suggest", "--records", "200", "--strategies", "random,evolution", "--json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [r["strategy"] for r in rows] == ["random", "evolution"]
    assert all(r["records"] == 200 and r["median_ms"] > 0 for r in rows)


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path]:
    """The made-up accuracy table, and made-up zero-cost scores of every cell: synflow follows
    the convolutions, as the accuracies do, blurred by noise; params is pure noise."""
    table, proxies = tmp_path / "table.csv", tmp_path / "proxies.jsonl"
    _write_table(table)
    rng = random.Random(1)
    with proxies.open("w") as f:
        for cell, convs in _cells():
            row = {
                "architecture": {"cell": cell, "stem_channels": 16, "cells_per_stage": 5},
                "synflow": convs + rng.uniform(0, 2.0),
                "params": rng.uniform(0, 1),
            }
            f.write(json.dumps(row) + "\n")
    return table, proxies


def test_bench_nb201_with_a_proxy_table_screens_for_free_and_finds_more(
    tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    table, proxies = tables
    args = ["bench", "nb201", "--dataset-file", str(table), "--seeds", "4", "--workers", "1"]
    args += ["--queries", "10", "--strategies", "random", "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    assert main([*args, "--proxy-table", str(proxies), "--proxies", "synflow"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "whole space screened by synflow (free)" in out[0]
    screened = json.loads(out[-1])["results"][0]
    assert screened["queries"] == 10, "the screen costs no query"
    assert screened["mean"] > plain["mean"] + 5
    # Without --proxies, every proxy the table holds.
    assert main([*args, "--proxy-table", str(proxies)]) == 0
    assert "screened by synflow+params" in capsys.readouterr().out


def test_bench_nb201_refuses_a_proxy_the_table_lacks(
    tables: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    table, proxies = tables
    args = ["bench", "nb201", "--dataset-file", str(table), "--proxy-table", str(proxies)]
    assert main([*args, "--proxies", "naswot"]) == 2
    assert "the table has no scores of naswot; it has synflow, params" in capsys.readouterr().err


def _write_costs(path: Path) -> None:
    """Made-up FLOPs per cell, in the JSON lines python -m kubenas_trainer.screen writes:
    each convolution costs, so accuracy and cost pull against each other."""
    with path.open("w") as f:
        for cell, convs in _cells():
            row = {"architecture": {"cell": cell}, "flops": 1e6 * (1 + convs), "params": 1.0}
            f.write(json.dumps(row) + "\n")


def test_bench_nb201_mo_reports_hypervolume_and_the_constrained_task_against_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, costs = tmp_path / "table.csv", tmp_path / "costs.jsonl"
    _write_table(table)
    _write_costs(costs)
    code = main(
        [
            "bench",
            "nb201-mo",
            "--dataset-file",
            str(table),
            "--costs",
            str(costs),
            "--strategies",
            "local-search",
            "--queries",
            "10,20",
            "--seeds",
            "2",
            "--workers",
            "1",
            "--json",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "hypervolume of the queried cells" in out and "random-then-filter" in out
    rows = json.loads(out.strip().splitlines()[-1])["results"]
    got = {(r["task"], r["strategy"], r["queries"]) for r in rows}
    assert got == {
        (task, strategy, q)
        for task, strategies in (
            ("multi-objective", ("random", "local-search")),
            ("constrained", ("random-then-filter", "local-search")),
        )
        for strategy in strategies
        for q in (10, 20)
    }
    for r in rows:
        if r["task"] == "multi-objective":
            assert 0 < r["mean"] < 1  # a fraction of the unit box above the reference point
        else:
            assert 60 < r["mean"] < 100 and r["missing"] == 0  # a feasible test accuracy
    # More queries never lose what fewer found: each budget is a prefix of the same search.
    by = {(r["task"], r["strategy"], r["queries"]): r["mean"] for r in rows}
    assert all(by[t, s, 20] >= by[t, s, 10] for t, s, _ in got)
