"""Search spaces: sizes, conditions, canonical encodings and hashes."""

from __future__ import annotations

import random

from kubenas.api.experiment import ExperimentSpec
from kubenas.space import build_space, nb201_cell_string, parse_nb201_cell_string

from .conftest import make_spec

NB201_EXAMPLE = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


def _space(spec: ExperimentSpec):  # type: ignore[no-untyped-def]
    return build_space(spec.search_space)


def test_nb201_space_matches_the_benchmark() -> None:
    space = _space(make_spec())
    assert space.size() == 5**6
    params = parse_nb201_cell_string(NB201_EXAMPLE)
    assert nb201_cell_string(params) == NB201_EXAMPLE
    arch = space.to_architecture(space.complete(params, None))
    assert arch == {"cell": NB201_EXAMPLE, "stem_channels": 16, "cells_per_stage": 5}


def test_nb201_macro_choices_are_searched() -> None:
    space = _space(make_spec(space={"stemChannels": [8, 16], "cellsPerStage": [1, 2, 3]}))
    assert space.size() == 5**6 * 6


def test_chain_depth_conditions_block_parameters() -> None:
    spec = make_spec(
        family="chain",
        space={
            "stages": 2,
            "depth": {"min": 1, "max": 2},
            "widths": [[16], [32, 64]],
            "operations": ["conv3x3", "identity"],
        },
    )
    space = _space(spec)
    # per stage: depth 1 -> 2 ops, depth 2 -> 4 ops: 6; widths 1 and 2
    assert space.size() == (6 * 1) * (6 * 2)
    params = space.sample(random.Random(3))
    arch = space.to_architecture(space.active(params))
    for s, stage in enumerate(arch["stages"]):
        assert len(stage["blocks"]) == params[f"stage{s}_depth"]
        assert f"stage{s}_block1_op" in params or params[f"stage{s}_depth"] == 1
    assert len(list(space.grid(2))) == space.size()


def test_inactive_parameters_do_not_change_the_key() -> None:
    spec = make_spec(
        family="chain", space={"stages": 1, "depth": {"min": 1, "max": 2}, "widths": [[16]]}
    )
    space = _space(spec)
    a = {
        "stage0_depth": 1,
        "stage0_width": 16,
        "stage0_block0_op": "conv3x3",
        "stage0_block1_op": "identity",
    }
    b = {**a, "stage0_block1_op": "conv5x5"}
    assert space.key(a) == space.key(b)
    assert space.key(a) != space.key({**a, "stage0_depth": 2})


def test_hash_is_stable_across_processes_and_versions() -> None:
    space = _space(make_spec())
    params = space.complete(parse_nb201_cell_string(NB201_EXAMPLE), None)
    # the encoding is sorted compact JSON of the architecture, hashed with SHA-256
    assert space.key(params) == (
        '{"cell":"' + NB201_EXAMPLE + '","cells_per_stage":5,"stem_channels":16}'
    )
    assert space.arch_hash(params) == "54726eaa1f9e"


def test_custom_space_with_log_float_and_condition() -> None:
    spec = make_spec(
        family="custom",
        space={
            "parameters": [
                {"name": "optimizer", "type": "categorical", "choices": ["sgd", "adam"]},
                {
                    "name": "momentum",
                    "type": "float",
                    "low": 0.5,
                    "high": 0.99,
                    "condition": {"parameter": "optimizer", "values": ["sgd"]},
                },
                {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            ]
        },
    )
    space = _space(spec)
    assert space.size() is None
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(200)]
    assert all(("momentum" in s) == (s["optimizer"] == "sgd") for s in samples)
    small = [s["lr"] for s in samples if s["lr"] < 1e-3]
    assert 40 < len(small) < 110, "log scale: about a third of draws below 1e-3"
    assert space.to_architecture(samples[0]) == samples[0]
    assert space.validate({"optimizer": "adam", "lr": 5.0}) == ["lr: 5.0 is outside the space"]


def test_choice_indices_round_trip_every_architecture_of_a_conditional_space() -> None:
    spec = make_spec(
        family="chain",
        space={
            "stages": 2,
            "depth": {"min": 1, "max": 2},
            "widths": [[16], [32, 64]],
            "operations": ["conv3x3", "identity"],
        },
    )
    space = _space(spec)
    for assignment in space.grid(2):
        choices = space.to_choices(assignment)
        assert space.from_choices(choices) == space.active(assignment)
    try:
        space.from_choices([9])
    except ValueError as error:
        assert "stage0_depth" in str(error)
    else:
        raise AssertionError("an index outside the space was accepted")
