"""``python -m kubenas_trainer``: run one trial as the kubenas trainer contract describes.

Exit status 0 on success, 2 for a setting that can never work (bad architecture, unknown dataset),
143 when stopped by SIGTERM, 1 for any other failure; the error goes to stderr and into the
termination message.
"""

import os
import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType

from kubenas_trainer.config import ConfigError, TrialConfig
from kubenas_trainer.report import Reporter
from kubenas_trainer.settings import resolve_settings

SIGTERM_EXIT = 128 + signal.SIGTERM


def stop_at_once(signum: int, frame: FrameType | None) -> None:
    """SIGTERM's handler: end the process now (a worker pod's too), with status 143."""
    raise SystemExit(SIGTERM_EXIT)


def main(argv: Sequence[str] | None = None) -> int:
    # A trainer is its container's PID 1, which ignores a SIGTERM it has no handler for: a
    # suspended (preempted) or deleted Job's pod would hold its GPU for the whole grace period.
    # Epoch checkpoints are written by rename, so stopping between any two lines loses at most
    # the epoch under way.
    signal.signal(signal.SIGTERM, stop_at_once)
    values = resolve_settings(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        reporter = Reporter.from_settings(values)
    except ConfigError as error:
        print(f"kubenas_trainer: error: {error}", file=sys.stderr)
        return 2
    try:
        config = TrialConfig.from_settings(values)
        if values["screening"]:
            from kubenas_trainer.screen_trial import parse_screening, run_screen_trial

            run_screen_trial(config, parse_screening(values["screening"]), reporter)
        elif values["supernet"]:
            from kubenas_trainer.supernet_trial import parse_supernet, run_supernet_trial

            run_supernet_trial(config, parse_supernet(values["supernet"], config.family), reporter)
        else:
            from kubenas_trainer.trial import run_trial  # torch loads only for a valid config

            run_trial(config, reporter)
    except ConfigError as error:
        print(f"kubenas_trainer: error: {error}", file=sys.stderr)
        reporter.error(f"invalid configuration: {error}")
        return 2
    except Exception as error:
        traceback.print_exc()
        print(f"kubenas_trainer: error: {type(error).__name__}: {error}", file=sys.stderr)
        reporter.error(f"{type(error).__name__}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
