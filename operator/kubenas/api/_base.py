"""Shared pydantic base: camelCase on the wire, unknown fields refused, immutable values."""

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError


class WireModel(BaseModel):
    """A spec object as it appears in YAML: camelCase keys, extra keys are an error."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as a user would write it (camelCase, defaults included, None left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def field_error(field: str, message: str) -> PydanticCustomError:
    """An error raised by a cross-field check that still names the offending field.

    The loader appends ``field`` to the model's path, so the user reads
    ``spec.budget.parallelTrials: must be <= maxTrials (4)`` rather than a bare model path.
    """
    return PydanticCustomError("kubenas_field", "{message}", {"field": field, "message": message})


def field_errors(model: str, problems: list[tuple[str, str]]) -> ValidationError:
    """Several :func:`field_error` problems of one cross-field check, all reported at once."""
    return ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(type=field_error(field, message), loc=(), input=None)
            for field, message in problems
        ],
    )
