"""The server's hold on its data dir, and the processes a previous server left behind.

One server uses a data dir at a time: :class:`DataDirLock` holds an exclusive ``flock`` on
``<data>/server.lock`` for the server's life (the kernel drops it when the process dies, even by
``kill -9``). Holding it, the server may safely treat every process still working for that data dir
as an orphan of a previous server killed mid-job: an ``ansible-playbook`` whose command line names a
job's artifact dir, or a ``terraform`` whose ``TF_DATA_DIR`` lies in the data dir. Those are killed at
start-up (:func:`reap_orphans`), before the interrupted jobs are marked failed and their apps checked
live, so nothing keeps changing a host behind the state the server reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path

from paas.core.config import SettingsError

log = logging.getLogger(__name__)

LOCK_FILE = "server.lock"
PROC = Path("/proc")


class DataDirInUseError(SettingsError):
    """Another server holds the data dir."""


class DataDirLock:
    """An exclusive, non-blocking lock on ``<data_dir>/server.lock``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUseError(
                f"another paas server is using the data dir {self.path.parent} (PAAS_DATA_DIR): "
                "stop it first, or give this one another data dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read(path: Path) -> list[str]:
    try:
        return [part for part in path.read_bytes().decode("utf-8", "replace").split("\0") if part]
    except OSError:
        return []


def works_for(pid: int, data_dir: Path, ident: str | None = None) -> bool:
    """Whether process ``pid`` runs a job of the server of ``data_dir`` (playbook or Terraform).

    With ``ident``, only a playbook process of that run (its command line names its artifact dir).
    """
    artifacts = f"{data_dir / 'artifacts'}{os.sep}" + (f"{ident}{os.sep}" if ident else "")
    for arg in _read(PROC / str(pid) / "cmdline"):
        if arg.lstrip("@").startswith(artifacts):
            return True
    if ident:
        return False
    terraform_dir = f"TF_DATA_DIR={data_dir / 'terraform'}{os.sep}"
    return any(var.startswith(terraform_dir) for var in _read(PROC / str(pid) / "environ"))


def reap_orphans(data_dir: Path) -> list[int]:
    """Kill (with their process groups) the processes still working for ``data_dir``. Hold the lock."""
    return _kill_matching(data_dir, None)


def kill_run_processes(data_dir: Path, ident: str) -> list[int]:
    """Kill what is left of the playbook run ``ident`` once ansible-runner returned.

    ansible-runner stops a canceled or timed-out run by killing the process group of
    ``ansible-playbook``, but Ansible starts each task's worker in a session of its own: a worker in
    the middle of a long task (an image build) would outlive the run, and finish changing the host.
    """
    return _kill_matching(data_dir, ident)


def _kill_matching(data_dir: Path, ident: str | None) -> list[int]:
    if not PROC.is_dir():
        return []
    data_dir = data_dir.resolve()
    own = {os.getpid(), os.getppid()}
    killed: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in own or not works_for(pid, data_dir, ident):
            continue
        try:
            group = os.getpgid(pid)
            if group == pid:  # a job's process is its group's leader (own session): take the group
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning("cannot kill process %d left by a previous server (not ours to kill)", pid)
            continue
        log.warning(
            "killed process %d, left running by %s", pid, f"run {ident}" if ident else "a previous server"
        )
        killed.append(pid)
    return killed
