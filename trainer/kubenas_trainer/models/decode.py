"""Checks shared by the families when decoding an architecture JSON object."""

from typing import Any

from kubenas_trainer.config import ConfigError


def positive_int(arch: dict[str, Any], key: str) -> int:
    """``arch[key]`` as a positive integer, or a :class:`ConfigError` naming the key."""
    value = arch.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"architecture {key} must be a positive integer, got {value!r}")
    return value
