"""Start, wait for and stop the cluster's processes, each one recorded by PID.

Every daemon gets its own process group and a log file in the state folder, and its PID is
written next to it, so ``down`` (a different Python process than ``up``) can stop exactly what
``up`` started and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

# Our own children, kept so they are reaped (no zombies, no "still running" warnings).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    name: str, argv: Sequence[str], state_dir: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, log to ``<name>.log``, record ``<name>.pid``."""
    log_dir, pid_dir = state_dir / "logs", state_dir / "pids"
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    (pid_dir / f"{name}.pid").write_text(f"{process.pid}\n")
    _CHILDREN[process.pid] = process
    return process


def wait_until_ready(
    name: str,
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Poll ``url`` until it answers 200; fail early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before it was ready")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2, context=tls) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready at {url} after {timeout:.0f} s")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_group(pid: int, grace: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid) and not _group_alive(pid):
                return
            time.sleep(0.1)


def stop_recorded(state_dir: Path, names: Sequence[str], grace: float = 10.0) -> None:
    """Stop the daemons recorded in ``state_dir/pids`` in the order given, then forget them."""
    for name in names:
        pid_file = state_dir / "pids" / f"{name}.pid"
        if not pid_file.exists():
            continue
        with contextlib.suppress(ValueError):
            stop_group(int(pid_file.read_text().strip()), grace)
        pid_file.unlink()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_pgid_of(int(entry)) == pgid for entry in os.listdir("/proc") if entry.isdigit())


def _pgid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[2]) if fields[0] != "Z" else None


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child, so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
