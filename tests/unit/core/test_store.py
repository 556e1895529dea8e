"""paas.core.store: atomic, durable writes; one lock; no lost update; pruning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from paas.core import store as store_module
from paas.core.store import AtomicJSONStorage, Store, StoreError


def job(i: int, status: str = "succeeded") -> dict[str, Any]:
    return {
        "id": f"{i:032x}",
        "kind": "deploy",
        "app": "a",
        "status": status,
        "created_at": f"2026-01-01T00:00:{i:02d}",
    }


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    s = Store(path)
    s.put_app({"name": "web", "state": "pending", "nested": {"x": [1, 2]}})
    s.put_job(job(1))
    s.close()
    again = Store(path)
    assert again.get_app("web") == {"name": "web", "state": "pending", "nested": {"x": [1, 2]}}
    assert again.get_job(job(1)["id"])["status"] == "succeeded"
    assert json.loads(path.read_text())["apps"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_returned_documents_are_copies(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.json")
    s.put_app({"name": "web", "health": {"attempts": []}})
    doc = s.get_app("web")
    assert doc is not None
    doc["health"]["attempts"].append(1)
    assert s.get_app("web") == {"name": "web", "health": {"attempts": []}}


def test_transaction_writes_once_and_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path / "db.json")
    writes: list[str] = []
    real = store_module.write_atomically
    monkeypatch.setattr(
        store_module, "write_atomically", lambda p, t, **k: (writes.append(t), real(p, t, **k))
    )
    with s.transaction():
        s.put_app({"name": "a"})
        s.put_app({"name": "b"})
        s.put_job(job(1))
    assert len(writes) == 1
    with pytest.raises(RuntimeError), s.transaction():
        s.put_app({"name": "c"})
        raise RuntimeError("boom")
    assert s.get_app("c") is None
    assert len(writes) == 1
    assert [a["name"] for a in Store(tmp_path / "db.json").list_apps()] == ["a", "b"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "db.json"
    s = Store(path)
    s.put_app({"name": "a"})
    before = path.read_bytes()

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(store_module.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        s.put_app({"name": "b"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".db.json.*"))
    assert [a["name"] for a in Store(path).list_apps()] == ["a"]


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".db.json.abc.tmp").write_text("{half")
    Store(tmp_path / "db.json")
    assert not list(tmp_path.glob(".db.json.*"))


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text('{"apps": {"1": ')
    with pytest.raises(StoreError):
        Store(tmp_path / "db.json")


WRITER = """
import sys
from pathlib import Path
from paas.core.store import Store
s = Store(Path(sys.argv[1]))
i = int(sys.argv[2])
print("ready", flush=True)
while True:
    i += 1
    with s.transaction():
        s.put_app({"name": "counter", "value": i, "pad": "x" * 20000})
        s.put_job({"id": "%032x" % i, "status": "succeeded", "created_at": str(i)})
    print(i, flush=True)
"""


def test_kill_9_mid_write_leaves_a_readable_database(tmp_path: Path) -> None:
    """SIGKILL a writer at random moments: the file always loads, with every acknowledged write."""
    path = tmp_path / "db.json"
    last_acked = 0
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(last_acked)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.03 * round_)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acked = [int(line) for line in out.split() if line.isdigit()]
        reopened = Store(path)
        app = reopened.get_app("counter")
        if acked:
            assert app is not None
            # Everything printed (acknowledged) is on disk; at most the one in flight got further.
            assert app["value"] >= acked[-1]
            assert reopened.get_job(f"{acked[-1]:032x}") is not None
        if app is not None:
            last_acked = app["value"]
    assert last_acked > 0


def test_no_lost_update_under_threads(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.json")
    s.put_app({"name": "c", "value": 0})
    threads = [
        threading.Thread(
            target=lambda: [s.update_app("c", lambda d: d.update(value=d["value"] + 1)) for _ in range(25)]
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.get_app("c") == {"name": "c", "value": 200}
    assert Store(tmp_path / "db.json").get_app("c") == {"name": "c", "value": 200}


def test_prune_keeps_the_newest_finished_jobs_and_every_active_one(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.json", keep_jobs=3)
    for i in range(1, 8):
        s.put_job(job(i))
    s.put_job(job(0, status="running"))
    removed = s.prune_jobs()
    assert removed == [job(i)["id"] for i in range(1, 5)]
    assert [j["id"] for j in s.list_jobs()] == [job(i)["id"] for i in (0, 5, 6, 7)]
    assert [j["id"] for j in s.list_jobs(statuses={"running"})] == [job(0)["id"]]


def test_releases_are_bounded_and_deleted_with_the_app(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.json")
    s.put_app({"name": "a"})
    for i in range(25):
        s.add_release({"app": "a", "job_id": str(i), "deployed_at": f"2026-01-01T00:00:{i:02d}"})
    s.add_release({"app": "b", "job_id": "x", "deployed_at": "2026"})
    assert [r["job_id"] for r in s.releases_of("a")] == [str(i) for i in range(5, 25)]
    s.delete_app("a")
    assert s.get_app("a") is None and s.releases_of("a") == [] and len(s.releases_of("b")) == 1


def test_infra_record(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.json")
    assert s.get_infra() is None
    s.put_infra({"state": "provisioning"})
    s.put_infra({"state": "ready"})
    assert s.get_infra() == {"state": "ready"}


def test_storage_reads_from_memory_after_the_first_load(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    storage = AtomicJSONStorage(str(path))
    assert storage.read() is None
    storage.write({"t": {"1": {"a": 1}}})
    path.write_text("garbage")  # not re-read: the storage is the only writer
    assert storage.read() == {"t": {"1": {"a": 1}}}
