"""Run times as a person reads them, one wording for ``kubenas get`` and ``kubenas run``."""


def spoken_duration(seconds: float) -> str:
    """ "40 s" under two minutes, "2.5 min" from there."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
