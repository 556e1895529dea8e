"""Run a program for the service (Terraform, the inventory script): the executor beside the playbook runner.

A :class:`CommandRequest` is an argument vector (never a shell string), the whole environment of the
process, a working directory, a timeout and a umask (0077: what the program writes, such as
Terraform's state and plans, is readable by the server's user only). Each line the program prints on
stdout goes to a callback as it comes (the service turns some of them into job events), or, for
``terraform output -json``, stdout is collected and handed back. stderr is kept (its last lines) for
the error message. A failed command is a result, not an exception.

On cancel or timeout the program's process group gets SIGTERM (Terraform then stops gracefully and
writes its state), and SIGKILL if it is still there ``kill_grace`` seconds later.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from paas.core.runs import CancelCheck, RunStatus

log = logging.getLogger(__name__)

# Bounds: what a command may hand back or leave in memory.
CAPTURE_MAX_BYTES = 8 * 1024 * 1024
STDERR_TAIL_LINES = 200
LINE_MAX_CHARS = 4000
POLL_SECONDS = 0.2

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class CommandRequest:
    """One program run. ``env`` is the process's whole environment (it may hold credentials: never
    logged)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    timeout: float | None = None
    # Collect stdout and return it (instead of handing each line to ``on_line``).
    capture: bool = False
    # The program's umask: by default what it creates (Terraform's state, plans) is the owner's only.
    umask: int = 0o077


@dataclass
class CommandResult:
    status: RunStatus
    rc: int | None = None
    # The whole stdout when the request captured it (at most CAPTURE_MAX_BYTES).
    stdout: str = ""
    # The last STDERR_TAIL_LINES lines of stderr.
    stderr: str = ""
    # Why the program could not run at all.
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED


class CommandExecutor(Protocol):
    """What the service needs to run a program (the real executor, or a fake in tests)."""

    def run(self, request: CommandRequest, *, on_line: LineSink, should_cancel: CancelCheck) -> CommandResult:
        """Run ``request`` to its end, handing stdout lines to ``on_line``; stop when ``should_cancel()``."""
        ...


class SubprocessExecutor:
    """Runs programs with :mod:`subprocess`, each in its own process group."""

    def __init__(self, *, kill_grace: float = 30.0) -> None:
        self._kill_grace = kill_grace

    def run(self, request: CommandRequest, *, on_line: LineSink, should_cancel: CancelCheck) -> CommandResult:
        program = request.argv[0] if request.argv else "?"
        try:
            process = subprocess.Popen(
                list(request.argv),
                env=dict(request.env),
                cwd=request.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                umask=request.umask,
            )
        except OSError as exc:
            return CommandResult(RunStatus.FAILED, message=f"cannot run {program}: {exc.strerror or exc}")
        assert process.stdout is not None and process.stderr is not None
        captured = bytearray()
        stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

        def read_stdout(stream: IO[bytes]) -> None:
            for raw in stream:
                if request.capture:
                    if len(captured) + len(raw) <= CAPTURE_MAX_BYTES:
                        captured.extend(raw)
                    continue
                line = raw.decode("utf-8", "replace").rstrip()[:LINE_MAX_CHARS]
                try:
                    on_line(line)
                except Exception:  # a line we cannot handle must not stop the command
                    log.exception("could not handle a line of %s", program)

        def read_stderr(stream: IO[bytes]) -> None:
            for raw in stream:
                stderr_tail.append(raw.decode("utf-8", "replace").rstrip()[:LINE_MAX_CHARS])

        readers = [
            threading.Thread(target=read_stdout, args=(process.stdout,), daemon=True),
            threading.Thread(target=read_stderr, args=(process.stderr,), daemon=True),
        ]
        for reader in readers:
            reader.start()
        deadline = None if request.timeout is None else time.monotonic() + request.timeout
        status: RunStatus | None = None
        while True:
            try:
                process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if should_cancel():
                status = RunStatus.CANCELED
            elif deadline is not None and time.monotonic() > deadline:
                status = RunStatus.TIMEOUT
            if status is not None:
                log.info("stopping %s (pid %s): %s", program, process.pid, status.value)
                self._stop(process)
                break
        for reader in readers:
            reader.join(timeout=10)
        for stream in (process.stdout, process.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        rc = process.returncode
        if status is None:
            status = RunStatus.SUCCEEDED if rc == 0 else RunStatus.FAILED
        return CommandResult(
            status,
            rc=rc,
            stdout=captured.decode("utf-8", "replace"),
            stderr="\n".join(stderr_tail),
        )

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period (and to any straggler of the
        group once the program itself ended)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self._kill_grace)
        except subprocess.TimeoutExpired:
            log.warning("pid %s ignored SIGTERM: killing its process group", process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
