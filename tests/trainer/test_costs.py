"""Hardware costs: counts agree with models.cost, timings rank networks, the model is untouched."""

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

import torch
from torch import nn

from kubenas.api.vocabulary import COST_METRICS
from kubenas_trainer import costs
from kubenas_trainer.costs import TIMED_METRICS, Costs, measure_costs
from kubenas_trainer.models import build_model
from kubenas_trainer.models.cost import count_forward_flops, count_parameters

pytestmark = pytest.mark.trainer

CPU = torch.device("cpu")
SHAPE = (3, 16, 16)
CLASSES = 4
CONV_CELL = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
SKIP_CELL = (
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|"
    "+|skip_connect~0|skip_connect~1|skip_connect~2|"
)
MIXED_CELL = (
    "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
)


def _architecture(cell: str, stem: int = 4) -> dict[str, Any]:
    return {"cell": cell, "stem_channels": stem, "cells_per_stage": 1}


def _model(cell: str, stem: int = 4, shape: tuple[int, ...] = SHAPE) -> nn.Module:
    torch.manual_seed(0)
    return build_model("nb201-cell", _architecture(cell, stem), shape, CLASSES)


def _sample(shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))


def _quick(
    model: nn.Module, sample: torch.Tensor, wanted: list[str], channels_last: bool = False
) -> Costs:
    """Few, small timed passes: these tests check what is measured, not how precisely."""
    return measure_costs(
        model,
        sample,
        CPU,
        wanted,
        warmup=1,
        repeats=3,
        latency_seconds=0,
        throughput_batch=2,
        channels_last=channels_last,
    )


def test_params_and_flops_are_models_cost_counts_and_cost_no_timing() -> None:
    model, sample = _model(MIXED_CELL), _sample()
    measured = measure_costs(model, sample, CPU, ["params", "flops"])
    assert measured.values == {
        "params": count_parameters(model),
        "flops": count_forward_flops(model, sample),
    }
    assert measured.device_name.startswith("cpu: ")
    assert measured.seconds >= 0


def test_only_the_requested_timed_metrics_are_measured() -> None:
    model, sample = _model(MIXED_CELL), _sample()
    for wanted in (["latency_ms"], ["throughput"], ["peak_memory_mb", "flops"]):
        measured = _quick(model, sample, wanted)
        assert set(measured.values) <= {"params", "flops", *wanted}
        assert {"params", "flops", *wanted} - set(measured.values) <= {"peak_memory_mb"}
    every = _quick(model, sample, list(COST_METRICS))
    assert list(every.values) == [
        name for name in COST_METRICS if name in every.values
    ]  # in COST_METRICS order
    assert TIMED_METRICS - {"peak_memory_mb"} <= set(every.values)
    assert all(value > 0 for name, value in every.values.items() if name != "peak_memory_mb")


def test_unknown_metric_is_refused_by_name_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"energy_j.*known: params, flops, latency_ms"):
        measure_costs(_model(MIXED_CELL), _sample(), CPU, ["latency_ms", "energy_j"])


def test_conv_heavy_network_is_slower_than_an_all_skip_one() -> None:
    shape = (3, 32, 32)
    conv = measure_costs(
        _model(CONV_CELL, 16, shape),
        _sample(shape),
        CPU,
        COST_METRICS,
        warmup=2,
        repeats=9,
        throughput_batch=4,
    )
    skip = measure_costs(
        _model(SKIP_CELL, 16, shape),
        _sample(shape),
        CPU,
        COST_METRICS,
        warmup=2,
        repeats=9,
        throughput_batch=4,
    )
    assert conv.values["flops"] > 4 * skip.values["flops"]
    assert conv.values["latency_ms"] > skip.values["latency_ms"]
    assert conv.values["throughput"] < skip.values["throughput"]


def test_measuring_leaves_weights_buffers_mode_layout_and_threads_alone() -> None:
    model = _model(MIXED_CELL)
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    threads = torch.get_num_threads()
    _quick(model, _sample(), list(COST_METRICS), channels_last=True)
    after = model.state_dict()
    assert before.keys() == after.keys()
    # Batch-norm running statistics and batch counters are buffers: unchanged too.
    assert any("running_mean" in name for name in before)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(module.training for module in model.modules())
    assert all(parameter.is_contiguous() for parameter in model.parameters())
    assert torch.get_num_threads() == threads

    model.eval()
    _quick(model, _sample(), ["latency_ms"])
    assert not any(module.training for module in model.modules())


def test_one_dimensional_chain_network_is_measured(small_architectures: Any) -> None:
    shape = (1, 40)
    torch.manual_seed(0)
    model = build_model("chain", small_architectures["chain"], shape, CLASSES)
    measured = _quick(model, _sample(shape), list(COST_METRICS), channels_last=True)
    assert {"params", "flops", "latency_ms", "throughput"} <= set(measured.values)


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="cannot reset the peak RSS here"
)
def test_cpu_peak_memory_is_a_non_negative_rss_growth() -> None:
    measured = _quick(_model(MIXED_CELL), _sample(), ["peak_memory_mb"])
    assert measured.values["peak_memory_mb"] >= 0


def test_peak_memory_is_left_out_rather_than_guessed_when_the_peak_cannot_be_reset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(costs, "CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    measured = _quick(_model(MIXED_CELL), _sample(), list(COST_METRICS))
    assert "peak_memory_mb" not in measured.values
    assert "latency_ms" in measured.values


def test_device_name_names_the_cpu_and_the_threads_the_timings_used() -> None:
    name = costs.device_name(CPU)
    assert name.startswith("cpu: ")
    assert name.endswith(f" ({torch.get_num_threads()} threads)")
    measured = measure_costs(_model(MIXED_CELL), _sample(), CPU, [])
    assert measured.device_name.endswith(f" ({costs.CPU_TIMING_THREADS} threads)")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timings_use_bf16_and_channels_last_and_leave_the_model_on_cpu() -> None:
    model = _model(CONV_CELL, 16, (3, 32, 32))
    measured = measure_costs(
        model,
        _sample((3, 32, 32)),
        torch.device("cuda"),
        COST_METRICS,
        channels_last=True,
        autocast_dtype=torch.bfloat16,
        warmup=1,
        repeats=3,
        throughput_batch=2,
    )
    assert set(measured.values) == set(COST_METRICS)
    assert measured.values["peak_memory_mb"] > 0
    assert measured.device_name.startswith("cuda: ")
    assert all(parameter.device == CPU for parameter in model.parameters())


def _cli(tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    out = tmp_path / "costs.jsonl"
    base = ["--family", "nb201-cell", "--device", "cpu", "--input-shape", "3x16x16"]
    fast = ["--warmup", "1", "--repeats", "3", "--latency-seconds", "0"]
    fast += ["--throughput-batch", "2", "--classes", "4"]
    assert costs.main([*base, *fast, "--stem", "4", "--out", str(out), *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_cli_writes_one_line_per_architecture_with_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "cells.txt"
    listing.write_text(f"# two cells\n{CONV_CELL}\n{SKIP_CELL}\n")
    rows = _cli(tmp_path, "--architectures", str(listing), "--cells-per-stage", "1")
    assert [row["architecture"] for row in rows] == [
        _architecture(CONV_CELL),
        _architecture(SKIP_CELL),
    ]
    expected_device = measure_costs(_model(SKIP_CELL), _sample(), CPU, []).device_name
    for row in rows:
        assert row["device"] == expected_device
        assert set(COST_METRICS) - {"peak_memory_mb"} <= set(row)
        assert row["seconds"] > 0
    assert rows[0]["flops"] > rows[1]["flops"]
    summaries = [line for line in capsys.readouterr().err.splitlines() if "latency" in line]
    assert len(summaries) == 2
    assert summaries[0].startswith(f"costs: {listing}:2: params ")


def test_cli_measures_one_architecture_n_times_and_only_the_metrics_asked(
    tmp_path: Path,
) -> None:
    architecture = json.dumps(_architecture(MIXED_CELL))
    rows = _cli(tmp_path, "--architecture", architecture, "--times", "3", "--metrics", "latency_ms")
    assert len(rows) == 3
    assert all(
        set(row) == {"architecture", "device", "params", "flops", "latency_ms", "seconds"}
        for row in rows
    )
    assert len({(row["params"], row["flops"]) for row in rows}) == 1


def test_cli_refuses_an_unknown_metric_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli(tmp_path, "--all", "--metrics", "params,joules")
    assert exited.value.code == 2
    assert "joules" in capsys.readouterr().err


def test_a_spell_of_slow_passes_does_not_move_the_latency_figure() -> None:
    """Other work on the machine only ever adds time: half the passes slowed five-fold would
    have moved a median to 3.0; the fastest tenth stays at the network's own 1.0."""
    assert costs.fastest_share_mean([1.0, 1.1] * 10 + [5.0] * 20) == pytest.approx(1.0)
