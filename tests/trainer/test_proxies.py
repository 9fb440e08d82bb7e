"""Zero-cost proxies and the screen command: deterministic, finite, data-free where promised."""

import json
import math
from pathlib import Path

import pytest

from kubenas.api.vocabulary import DATA_FREE_PROXIES
from kubenas.api.vocabulary import PROXIES as API_PROXIES

torch = pytest.importorskip("torch")

from kubenas_trainer import screen  # noqa: E402
from kubenas_trainer.models import build_model  # noqa: E402
from kubenas_trainer.proxies import PROXIES, Probe, score_architecture, synflow  # noqa: E402
from kubenas_trainer.proxy_check import naslib_edge_order, spearman  # noqa: E402

pytestmark = pytest.mark.trainer

SHAPE = (3, 8, 8)
CLASSES = 4
CONV_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)
MIXED_CELL = (
    "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
)
NONE_CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _architecture(cell: str) -> dict[str, object]:
    return {"cell": cell, "stem_channels": 4, "cells_per_stage": 1}


def _probe(seed: int = 0) -> Probe:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((16, *SHAPE), generator=generator)
    return Probe(SHAPE, inputs, torch.randint(0, CLASSES, (16,), generator=generator))


def _scores(cell: str, seed: int, probe: Probe) -> dict[str, float]:
    return score_architecture(
        "nb201-cell", _architecture(cell), list(PROXIES), probe, CLASSES, seed, torch.device("cpu")
    )


def test_every_proxy_is_finite_and_deterministic_for_a_seed() -> None:
    first = _scores(MIXED_CELL, 3, _probe())
    assert set(first) == set(PROXIES)
    assert all(math.isfinite(value) for value in first.values()), first
    assert _scores(MIXED_CELL, 3, _probe()) == first
    other_seed = _scores(MIXED_CELL, 4, _probe())
    assert other_seed["synflow"] != first["synflow"]  # the seed sets the initialisation
    assert other_seed["params"] == first["params"]


def test_data_free_proxies_need_no_batch_and_data_proxies_refuse_without_one() -> None:
    no_data = Probe(SHAPE)
    free = [name for name, proxy in PROXIES.items() if not proxy.needs_data]
    assert free == ["synflow", "params", "flops"]
    scores = score_architecture(
        "nb201-cell", _architecture(CONV_CELL), free, no_data, CLASSES, 0, torch.device("cpu")
    )
    assert all(math.isfinite(value) and value > 0 for value in scores.values())
    with pytest.raises(ValueError, match="mini-batch"):
        score_architecture(
            "nb201-cell",
            _architecture(CONV_CELL),
            ["naswot"],
            no_data,
            CLASSES,
            0,
            torch.device("cpu"),
        )


def test_none_only_cell_scores_lower_synflow_than_a_conv_heavy_cell() -> None:
    none_scores = _scores(NONE_CELL, 0, _probe())
    conv_scores = _scores(CONV_CELL, 0, _probe())
    assert none_scores["synflow"] < conv_scores["synflow"]
    assert none_scores["synflow"] == -math.inf  # no signal reaches the output


def test_a_proxy_leaves_the_model_it_scores_unchanged() -> None:
    torch.manual_seed(0)
    model = build_model("nb201-cell", _architecture(CONV_CELL), SHAPE, CLASSES)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    synflow(model, Probe(SHAPE))
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_screen_writes_one_row_per_architecture(tmp_path: Path) -> None:
    architectures = tmp_path / "cells.txt"
    architectures.write_text(
        f"# two cell strings and one architecture JSON\n{CONV_CELL}\n\n{NONE_CELL}\n"
        + json.dumps({"cell": MIXED_CELL, "stem_channels": 8, "cells_per_stage": 1})
        + "\n"
    )
    out = tmp_path / "scores.jsonl"
    status = screen.main([
        "--family", "nb201-cell", "--architectures", str(architectures),
        "--proxies", "synflow,naswot,jacob_cov,snip,grad_norm,params,flops",
        "--dataset", "synthetic:3x8x8:4:200", "--stem", "4", "--cells-per-stage", "1",
        "--device", "cpu", "--batch-size", "16", "--out", str(out),
    ])  # fmt: skip
    assert status == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["architecture"]["cell"] for row in rows] == [CONV_CELL, NONE_CELL, MIXED_CELL]
    assert rows[0]["architecture"]["stem_channels"] == 4
    assert rows[2]["architecture"]["stem_channels"] == 8
    assert all(set(row) == {"architecture", *PROXIES, "seconds"} for row in rows)
    assert rows[1]["synflow"] is None  # undefined for a network that ignores its input
    assert rows[0]["synflow"] > 0 and rows[0]["params"] > rows[1]["params"]


def test_screen_without_a_dataset_scores_the_data_free_proxies(tmp_path: Path) -> None:
    architectures = tmp_path / "cells.txt"
    architectures.write_text(f"{CONV_CELL}\n")
    out = tmp_path / "scores.jsonl"
    status = screen.main([
        "--family", "nb201-cell", "--architectures", str(architectures),
        "--proxies", "synflow,params,flops", "--input-shape", "1x12", "--classes", "3",
        "--stem", "4", "--cells-per-stage", "1", "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    assert status == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["params"] > 0 and row["flops"] > 0 and row["synflow"] > 0


def test_shards_of_a_screen_together_score_every_architecture_once(tmp_path: Path) -> None:
    architectures = tmp_path / "cells.txt"
    architectures.write_text(f"{CONV_CELL}\n{NONE_CELL}\n{MIXED_CELL}\n")
    shards = []
    for shard in ("0/2", "1/2"):
        out = tmp_path / f"shard-{shard[0]}.jsonl"
        status = screen.main([
            "--family", "nb201-cell", "--architectures", str(architectures), "--shard", shard,
            "--proxies", "params", "--stem", "4", "--cells-per-stage", "1", "--device", "cpu",
            "--out", str(out),
        ])  # fmt: skip
        assert status == 0
        shards.append([json.loads(line)["architecture"]["cell"] for line in out.open()])
    assert shards == [[CONV_CELL, MIXED_CELL], [NONE_CELL]]


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--proxies", "synflow", "--shard", "2/2"], "--shard: want K/N with 0 <= K < N"),
        (["--proxies", "synflow,magic"], "--proxies: unknown proxy magic"),
        (["--proxies", "synflow,naswot,snip"], "--proxies naswot, snip need training data"),
        (["--proxies", "synflow", "--input-shape", "3by32"], "--input-shape"),
    ],
)
def test_screen_refuses_bad_input_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    architectures = tmp_path / "cells.txt"
    architectures.write_text(f"{CONV_CELL}\n")
    base = ["--family", "nb201-cell", "--architectures", str(architectures)]
    with pytest.raises(SystemExit) as exit_info:
        screen.main([*base, *arguments, "--out", str(tmp_path / "out.jsonl")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_screen_refuses_a_bad_cell_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    architectures = tmp_path / "cells.txt"
    architectures.write_text(f"{CONV_CELL}\n|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    status = screen.main([
        "--family", "nb201-cell", "--architectures", str(architectures),
        "--proxies", "params", "--out", str(tmp_path / "out.jsonl"),
    ])  # fmt: skip
    assert status == 2
    assert f"{architectures}:2: bad cell edge" in capsys.readouterr().err


def test_all_enumerates_every_cell_of_the_nb201_space() -> None:
    candidates = screen.all_nb201_architectures(16, 5)
    assert len({candidate.architecture["cell"] for candidate in candidates}) == 5**6


def test_spearman_uses_average_ranks_and_ranks_undefined_scores_last() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([-math.inf, math.nan, 5, 7], [0, 0, 1, 2]) == pytest.approx(1.0)


def test_naslib_edge_order_swaps_the_two_middle_edges() -> None:
    ops = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert naslib_edge_order(ops) == (
        "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|"
    )
    assert naslib_edge_order(naslib_edge_order(ops)) == ops


def test_the_trainer_implements_exactly_the_proxies_the_api_accepts() -> None:
    assert set(PROXIES) == set(API_PROXIES)
    assert {name for name, proxy in PROXIES.items() if not proxy.needs_data} == DATA_FREE_PROXIES
