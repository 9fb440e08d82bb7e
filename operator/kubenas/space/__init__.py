"""Search spaces: parameters, conditions, model families, canonical encodings and hashes."""

from kubenas.space.families import (
    build_space,
    nb201_cell_string,
    parse_nb201_cell_string,
)
from kubenas.space.params import Categorical, Condition, Float, Integer, Param, Value
from kubenas.space.screening import screening_candidates
from kubenas.space.space import Architecture, Assignment, SearchSpace

__all__ = [
    "Architecture",
    "Assignment",
    "Categorical",
    "Condition",
    "Float",
    "Integer",
    "Param",
    "SearchSpace",
    "Value",
    "build_space",
    "nb201_cell_string",
    "parse_nb201_cell_string",
    "screening_candidates",
]
