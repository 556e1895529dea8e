"""The data dir lock and the killing of processes left working for a data dir (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paas.core.processes import DataDirInUseError, DataDirLock, kill_run_processes, reap_orphans, works_for

SLEEPER = "import time; time.sleep(60)"


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if _alive(proc):
            proc.kill()
        proc.wait()


def _spawn(procs: list[subprocess.Popen[bytes]], *args: str, env: dict[str, str] | None = None) -> int:
    # Like a job's process: a session of its own, the job's paths on its command line or environment.
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, *args], start_new_session=True, env=env)
    procs.append(proc)
    return proc.pid


def _wait_dead(proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _alive(proc):
            return True
        time.sleep(0.02)
    return False


def test_one_server_per_data_dir(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirInUseError, match="another paas server is using the data dir"):
        DataDirLock(tmp_path).acquire()
    DataDirLock(tmp_path / "other").acquire()  # another data dir is free
    first.release()
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()


def test_reap_orphans_kills_only_this_data_dirs_jobs(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    data, other = tmp_path / "data", tmp_path / "other"
    playbook = _spawn(spawned, "-e", f"@{data / 'artifacts' / ('a' * 32) / 'vars.yml'}")
    terraform = _spawn(
        spawned, env={**os.environ, "TF_DATA_DIR": str(data / "terraform" / "aws" / ".terraform")}
    )
    foreign = _spawn(spawned, "-e", f"@{other / 'artifacts' / ('b' * 32) / 'vars.yml'}")
    unrelated = _spawn(spawned)
    assert works_for(playbook, data) and works_for(terraform, data)
    assert not works_for(foreign, data) and not works_for(unrelated, data)

    killed = reap_orphans(data)

    assert sorted(killed) == sorted([playbook, terraform])
    by_pid = {p.pid: p for p in spawned}
    assert _wait_dead(by_pid[playbook]) and _wait_dead(by_pid[terraform])
    assert _alive(by_pid[foreign]) and _alive(by_pid[unrelated])


def test_kill_run_processes_takes_one_run(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    run, other_run = "c" * 32, "d" * 32
    worker = _spawn(spawned, "-e", f"@{tmp_path / 'artifacts' / run / 'vars.yml'}")
    sibling = _spawn(spawned, "-e", f"@{tmp_path / 'artifacts' / other_run / 'vars.yml'}")
    assert kill_run_processes(tmp_path, run) == [worker]
    by_pid = {p.pid: p for p in spawned}
    assert _wait_dead(by_pid[worker])
    assert _alive(by_pid[sibling])
