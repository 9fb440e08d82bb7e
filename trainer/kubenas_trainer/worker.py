"""``python -m kubenas_trainer.worker``: a warm worker that runs trial after trial in one process.

A fresh trial process pays for importing torch, loading the dataset and (on a GPU) creating the
CUDA context before its first step. A worker pays once: it imports the trainer, loads
``--dataset`` and then reads jobs, one JSON line each on stdin::

    {"env": {"KUBENAS_TRIAL": ..., ...}, "stdout": "PATH", "stderr": "PATH", "cwd": "DIR"}

It runs each exactly as ``python -m kubenas_trainer`` would with that environment (the trainer
seeds everything from it, so a trial's results do not depend on what ran before), with its
output going to the two files, and answers ``{"exit": CODE}`` on its own stdout. A trial that
hangs or times out is ended by killing the worker; the runner then starts a new one.

With ``--serve URL`` it is a Kubernetes worker pod instead: after the same warm-up it asks the
operator at URL for trials over HTTP (kubenas_trainer.lease_client) and runs up to
``--max-trials`` of them, their output going to the pod's own log.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from kubenas_trainer import __main__ as trainer_main
from kubenas_trainer import data
from kubenas_trainer.config import default_data_dir
from kubenas_trainer.lease_client import TOKEN_VARIABLE, LeaseClient, ServeError, serve_leases


@contextmanager
def _redirected(stdout: str, stderr: str) -> Iterator[None]:
    """File descriptors 1 and 2 point at the trial's files while it runs (so do C extensions'
    and subprocesses' writes), then back at the worker's own."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    targets = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) for p in (stdout, stderr)]
    try:
        os.dup2(targets[0], 1)
        os.dup2(targets[1], 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, *targets):
            os.close(fd)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """The worker's environment plus the trial's, for the trial only."""
    base = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(base)


def _run_trainer() -> int:
    """``python -m kubenas_trainer`` in this process, with the environment as it is now."""
    try:
        return trainer_main.main([])
    except BaseException as error:  # main() handles errors; this is for what escapes it
        if isinstance(error, SystemExit) and error.code == trainer_main.SIGTERM_EXIT:
            raise  # the worker is being stopped (preempted): no result for this trial
        traceback.print_exc()
        return 1


def run_job(job: dict[str, Any]) -> int:
    """One trial, as ``python -m kubenas_trainer`` with the job's environment; its exit code."""
    previous = os.getcwd()
    with _environment(job["env"]), _redirected(job["stdout"], job["stderr"]):
        os.chdir(job.get("cwd") or previous)
        try:
            return _run_trainer()
        finally:
            os.chdir(previous)


def run_builtin(env: dict[str, str]) -> int:
    """A leased built-in trial (``--serve``): in this process, its output the pod's own."""
    with _environment(env):
        return _run_trainer()


def serve(commands: TextIO, answers: TextIO) -> None:
    """Run each job as it comes: say when it starts (the trial's clock starts there, not while
    the worker was still starting up), then its exit code."""
    for line in commands:
        if line.strip():
            job = json.loads(line)
            answers.write(json.dumps({"started": time.time()}) + "\n")
            answers.flush()
            code = run_job(job)
            answers.write(json.dumps({"exit": code}) + "\n")
            answers.flush()


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _warm_up(dataset: str | None) -> None:
    """Pay now what every trial would pay first: the imports, the device and the dataset."""
    data.keep_loaded_datasets()
    import torch

    import kubenas_trainer.screen_trial
    import kubenas_trainer.trial  # noqa: F401  the models and the training loop, loaded now
    from kubenas_trainer.device import plan_device

    # The slot's device, made ready now: on a GPU this creates the CUDA context, seconds that
    # would otherwise be the first trial's. A GPU that is not there is each trial's to report.
    with contextlib.suppress(RuntimeError):
        plan = plan_device(os.environ.get("KUBENAS_DEVICE", "auto"))
        if plan.device.type == "cuda":
            torch.zeros(1, device=plan.device)
    if dataset:
        data_dir = os.environ.get("KUBENAS_DATA_DIR")
        # A dataset that cannot load is each trial's to report, as a fresh process would.
        with contextlib.suppress(Exception):
            data.load_dataset(dataset, Path(data_dir) if data_dir else default_data_dir())


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m kubenas_trainer.worker", description=__doc__)
    parser.add_argument("--dataset", help="load this dataset now and keep it for every trial")
    parser.add_argument(
        "--serve", metavar="URL", help="ask the operator at URL for trials instead of stdin"
    )
    parser.add_argument(
        "--max-trials",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="with --serve: leave after this many trials (default 1)",
    )
    parser.add_argument(
        "--patience",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with --serve: how long to retry an operator that fails before leaving (default 600)",
    )
    args = parser.parse_args()
    # As its pod's PID 1 it would ignore SIGTERM (a suspended, preempted Job): stop at once,
    # delivering no result for a trial under way, whose lease the operator then gives again.
    signal.signal(signal.SIGTERM, trainer_main.stop_at_once)
    if args.serve is None:
        # Answers go to a copy of the original stdout; fd 1 itself is lent to each trial.
        answers = os.fdopen(os.dup(1), "w", buffering=1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        _warm_up(args.dataset)
        serve(sys.stdin, answers)
        return 0
    try:
        client = LeaseClient.from_env(args.serve, os.environ, patience=args.patience)
        # The client holds the token now; a trial run in this process must not find it either.
        del os.environ[TOKEN_VARIABLE]
        _warm_up(args.dataset)
        serve_leases(client, args.max_trials, run_builtin)
    except ServeError as error:
        print(f"kubenas worker: {error}", file=sys.stderr, flush=True)
        return error.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
