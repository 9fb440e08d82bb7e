"""Wire models of ``spec.searchSpace``: a model family's settings, or custom parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kubenas.api._base import WireModel, field_error
from kubenas.api.vocabulary import (
    CHAIN_OPERATION_PATTERN,
    CHAIN_OPERATIONS_DEFAULT,
    NB201_OPERATIONS,
    ChainFamilyName,
    CustomFamilyName,
    Nb201FamilyName,
    Nb201Operation,
)


class Condition(WireModel):
    """A parameter is active only when ``parameter`` takes one of ``values``."""

    parameter: str = Field(min_length=1)
    values: list[str | int | float | bool] = Field(min_length=1)


class CategoricalParameter(WireModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    type: Literal["categorical"]
    choices: list[str | int | float | bool] = Field(min_length=1)
    condition: Condition | None = None

    @model_validator(mode="after")
    def _distinct_choices(self) -> CategoricalParameter:
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise field_error("choices", "must not repeat a value")
        return self


class IntParameter(WireModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False
    condition: Condition | None = None

    @model_validator(mode="after")
    def _ordered(self) -> IntParameter:
        if self.high < self.low:
            raise field_error("high", f"must be >= low ({self.low})")
        if self.log and self.low < 1:
            raise field_error("low", "must be >= 1 when log is true")
        return self


class FloatParameter(WireModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    condition: Condition | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FloatParameter:
        if self.high <= self.low:
            raise field_error("high", f"must be > low ({self.low})")
        if self.log and self.low <= 0:
            raise field_error("low", "must be > 0 when log is true")
        return self


Parameter = Annotated[
    CategoricalParameter | IntParameter | FloatParameter, Field(discriminator="type")
]


class Nb201CellSpace(WireModel):
    """NAS-Bench-201's cell: 6 edges, each one operation, inside a fixed macro skeleton.

    ``stemChannels`` and ``cellsPerStage`` may list several values, which are then searched too.
    """

    family: Nb201FamilyName
    operations: list[Nb201Operation] = Field(
        default_factory=lambda: list(NB201_OPERATIONS), min_length=1
    )
    stem_channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [16], min_length=1
    )
    cells_per_stage: list[Annotated[int, Field(ge=1, le=32)]] = Field(
        default_factory=lambda: [5], min_length=1
    )

    @model_validator(mode="after")
    def _distinct(self) -> Nb201CellSpace:
        for field, values in (
            ("operations", self.operations),
            ("stemChannels", self.stem_channels),
            ("cellsPerStage", self.cells_per_stage),
        ):
            if len(set(values)) != len(values):
                raise field_error(field, "must not repeat a value")
        return self


ChainOperation = Annotated[str, Field(pattern=CHAIN_OPERATION_PATTERN)]


class DepthRange(WireModel):
    min: int = Field(default=1, ge=0, le=16)
    max: int = Field(default=3, ge=1, le=16)

    @model_validator(mode="after")
    def _ordered(self) -> DepthRange:
        if self.max < self.min:
            raise field_error("max", f"must be >= min ({self.min})")
        return self


class ChainSpace(WireModel):
    """A layer-wise space: stages of blocks; each block's operation, each stage's depth, width."""

    family: ChainFamilyName
    stem_channels: int = Field(default=16, ge=1, le=1024)
    stages: int = Field(default=3, ge=1, le=6)
    depth: DepthRange = Field(default_factory=DepthRange)
    widths: list[list[Annotated[int, Field(ge=1, le=4096)]]] = Field(
        default_factory=lambda: [[16, 24, 32], [32, 48, 64], [64, 96, 128]], min_length=1
    )
    operations: list[ChainOperation] = Field(
        default_factory=lambda: list(CHAIN_OPERATIONS_DEFAULT), min_length=1
    )

    @model_validator(mode="after")
    def _consistent(self) -> ChainSpace:
        if len(self.widths) != self.stages:
            raise field_error("widths", f"must list one set of widths per stage ({self.stages})")
        for i, choices in enumerate(self.widths):
            if not choices:
                raise field_error(f"widths[{i}]", "must not be empty")
        if len(set(self.operations)) != len(self.operations):
            raise field_error("operations", "must not repeat a value")
        return self


class CustomSpace(WireModel):
    """User-declared parameters, handed unchanged to the user's own trainer."""

    family: CustomFamilyName
    parameters: list[Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_and_conditions(self) -> CustomSpace:
        seen: dict[str, Parameter] = {}
        for i, p in enumerate(self.parameters):
            if p.name in seen:
                raise field_error(f"parameters[{i}].name", f"duplicate parameter {p.name!r}")
            if p.condition is not None:
                parent = seen.get(p.condition.parameter)
                if parent is None:
                    raise field_error(
                        f"parameters[{i}].condition.parameter",
                        f"must name a parameter declared before {p.name!r}",
                    )
                if isinstance(parent, CategoricalParameter):
                    unknown = [v for v in p.condition.values if v not in parent.choices]
                    if unknown:
                        raise field_error(
                            f"parameters[{i}].condition.values",
                            f"{unknown} are not choices of {parent.name!r}",
                        )
            seen[p.name] = p
        return self


SearchSpaceSpec = Annotated[
    Nb201CellSpace | ChainSpace | CustomSpace, Field(discriminator="family")
]
