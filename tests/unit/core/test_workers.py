"""paas.core.jobs: per-app order, parallel apps, exclusive infra jobs, cancel, timeouts, terminal states."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paas.core.errors import ConflictError, NotFoundError, TooManyRequestsError, UnavailableError
from paas.core.jobs import (
    INTERRUPTED_MESSAGE,
    QUEUE_FULL_RETRY_AFTER,
    JobContext,
    JobOutcome,
    JobSpec,
    JobStatus,
)
from paas.core.runs import TaskEvent
from paas.core.store import Store
from paas.core.workers import JobManager


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.json", keep_jobs=1000)


@pytest.fixture
def manager(store: Store) -> Iterator[JobManager]:
    m = JobManager(store, workers=4, job_timeout=30, max_events=5)
    m.start()
    yield m
    m.shutdown(grace=5)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Recorder:
    """Work functions that log their start and end and wait for a release."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.running = 0
        self.max_running = 0

    def work(self, label: str, hold: bool = True) -> Callable[[JobContext], JobOutcome]:
        def run(ctx: JobContext) -> JobOutcome:
            with self.lock:
                self.log.append(f"start {label}")
                self.running += 1
                self.max_running = max(self.max_running, self.running)
            while hold and not self.release.wait(0.01):
                if ctx.should_stop():
                    break
            time.sleep(0.01)
            with self.lock:
                self.running -= 1
                self.log.append(f"end {label}")
            return JobOutcome(JobStatus.CANCELED if ctx.should_stop() else JobStatus.SUCCEEDED)

        return run


def status(store: Store, job_id: str) -> str:
    doc = store.get_job(job_id)
    assert doc is not None
    return str(doc["status"])


def test_jobs_of_one_app_run_in_order(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    rec.release.set()
    ids = [manager.submit(JobSpec("deploy", "a", "a", rec.work(str(i)))) for i in range(5)]
    wait_for(lambda: all(status(store, j["id"]) == "succeeded" for j in ids))
    assert rec.log == [f"{w} {i}" for i in range(5) for w in ("start", "end")]
    assert rec.max_running == 1


def test_different_apps_run_in_parallel_up_to_the_pool_size(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    ids = [manager.submit(JobSpec("deploy", f"a{i}", f"a{i}", rec.work(str(i))))["id"] for i in range(6)]
    wait_for(lambda: rec.running == 4)
    # The two others are free of conflicts: only the pool (4 workers) holds them back.
    queued = [j for j in ids if status(store, j) == "queued"]
    assert len(queued) == 2 and all(manager.waiting_on(j) == [] for j in queued)
    rec.release.set()
    wait_for(lambda: all(status(store, j) == "succeeded" for j in ids))
    assert rec.max_running == 4


def test_exclusive_jobs_wait_for_earlier_jobs_and_block_later_ones(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    rec.release.set()
    first = manager.submit(JobSpec("deploy", "a", "a", rec.work("a1")))
    infra = manager.submit(JobSpec("provision", None, "infra", rec.work("infra"), exclusive=True))
    later = manager.submit(JobSpec("deploy", "b", "b", rec.work("b1")))
    wait_for(lambda: all(status(store, j["id"]) == "succeeded" for j in (first, infra, later)))
    assert rec.log == ["start a1", "end a1", "start infra", "end infra", "start b1", "end b1"]


def test_cancel_a_queued_job_ends_it_at_once(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    skipped: list[str] = []
    running = manager.submit(JobSpec("deploy", "a", "a", rec.work("1")))
    queued = manager.submit(
        JobSpec("deploy", "a", "a", rec.work("2"), on_skipped=lambda job: skipped.append(job["status"]))
    )
    wait_for(lambda: status(store, running["id"]) == "running")
    doc = manager.cancel(queued["id"])
    assert doc["status"] == "canceled" and doc["finished_at"] and skipped == ["canceled"]
    rec.release.set()
    wait_for(lambda: status(store, running["id"]) == "succeeded")
    assert "start 2" not in rec.log
    with pytest.raises(ConflictError):
        manager.cancel(queued["id"])
    with pytest.raises(NotFoundError):
        manager.cancel("0" * 32)


def test_cancel_a_running_job_signals_its_work(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    job = manager.submit(JobSpec("deploy", "a", "a", rec.work("1")))
    wait_for(lambda: status(store, job["id"]) == "running")
    assert manager.cancel(job["id"])["status"] == "running"
    wait_for(lambda: status(store, job["id"]) == "canceled")
    assert store.get_job(job["id"])["message"] == "canceled on request"  # type: ignore[index]


def test_a_job_past_its_timeout_is_stopped_and_failed(store: Store) -> None:
    manager = JobManager(store, workers=1, job_timeout=0.2)
    manager.start()
    rec = Recorder()
    job = manager.submit(JobSpec("deploy", "a", "a", rec.work("slow")))
    wait_for(lambda: status(store, job["id"]) == "failed")
    assert "timed out after 0.2 s" in store.get_job(job["id"])["message"]  # type: ignore[index]
    manager.shutdown(grace=1)


def test_work_that_raises_is_a_failed_job(manager: JobManager, store: Store) -> None:
    def boom(ctx: JobContext) -> JobOutcome:
        raise RuntimeError("secret detail")

    job = manager.submit(JobSpec("deploy", "a", "a", boom))
    wait_for(lambda: status(store, job["id"]) == "failed")
    assert store.get_job(job["id"])["message"] == "internal error (see the server log)"  # type: ignore[index]


def test_events_are_bounded_and_stored(manager: JobManager, store: Store) -> None:
    def chatty(ctx: JobContext) -> JobOutcome:
        for i in range(20):
            ctx.record(TaskEvent(at=str(i), task=f"task {i}", host="h", result="ok"))
        return JobOutcome(JobStatus.SUCCEEDED)

    job = manager.submit(JobSpec("deploy", "a", "a", chatty))
    wait_for(lambda: status(store, job["id"]) == "succeeded")
    events = store.get_job(job["id"])["events"]  # type: ignore[index]
    assert [e["task"] for e in events] == [f"task {i}" for i in range(15, 20)]


def test_commit_runs_with_the_terminal_write(manager: JobManager, store: Store) -> None:
    def work(ctx: JobContext) -> JobOutcome:
        return JobOutcome(
            JobStatus.FAILED,
            failed_step="build",
            message="no",
            commit=lambda job: store.put_app({"name": "a", "seen": job["status"]}),
        )

    job = manager.submit(JobSpec("deploy", "a", "a", work))
    wait_for(lambda: status(store, job["id"]) == "failed")
    assert store.get_app("a") == {"name": "a", "seen": "failed"}
    assert store.get_job(job["id"])["failed_step"] == "build"  # type: ignore[index]


def test_prepare_can_refuse_a_job(manager: JobManager, store: Store) -> None:
    def refuse(job: dict[str, object]) -> None:
        store.put_app({"name": "half-written"})
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        manager.submit(JobSpec("deploy", "a", "a", Recorder().work("x"), prepare=refuse))
    assert store.list_jobs() == [] and store.get_app("half-written") is None


def test_recover_fails_interrupted_jobs(store: Store) -> None:
    for i, st in enumerate(("queued", "running", "succeeded")):
        store.put_job({"id": f"{i:032x}", "kind": "deploy", "app": "a", "status": st, "created_at": str(i)})
    manager = JobManager(store)
    failed = manager.recover()
    assert [j["id"] for j in failed] == [f"{0:032x}", f"{1:032x}"]
    for i in (0, 1):
        doc = store.get_job(f"{i:032x}")
        assert doc is not None and doc["status"] == "failed" and doc["message"] == INTERRUPTED_MESSAGE
    assert status(store, f"{2:032x}") == "succeeded"


def test_shutdown_cancels_queued_jobs_and_then_running_ones(store: Store) -> None:
    manager = JobManager(store, workers=1)
    manager.start()
    rec = Recorder()
    running = manager.submit(JobSpec("deploy", "a", "a", rec.work("1")))
    queued = manager.submit(JobSpec("deploy", "b", "b", rec.work("2")))
    wait_for(lambda: status(store, running["id"]) == "running")
    manager.shutdown(grace=0.2)
    assert status(store, queued["id"]) == "canceled"
    assert status(store, running["id"]) == "canceled"
    with pytest.raises(UnavailableError):
        manager.submit(JobSpec("deploy", "a", "a", rec.work("3")))


# ---- bounded queue ----
def test_a_newer_job_replaces_the_queued_one_of_its_key(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    skipped: list[tuple[str, list[str]]] = []

    def on_skipped(job: dict[str, Any]) -> None:
        # The replaced job's hook runs after the new job is stored: it sees it queued.
        others = [j["id"] for j in store.list_jobs(statuses=("queued",)) if j["id"] != job["id"]]
        skipped.append((job["id"], others))

    def spec(label: str) -> JobSpec:
        return JobSpec("deploy", "a", "a", rec.work(label), replace_queued=True, on_skipped=on_skipped)

    running = manager.submit(spec("1"))
    wait_for(lambda: status(store, running["id"]) == "running")
    second = manager.submit(spec("2"))
    third = manager.submit(spec("3"))
    # Another kind of job of the same key is never replaced, nor replaces.
    other = manager.submit(JobSpec("delete", "a", "a", rec.work("d")))
    doc = store.get_job(second["id"])
    assert doc is not None and doc["status"] == "canceled"
    assert doc["message"] == f"superseded by {third['id']}" and doc["finished_at"]
    assert skipped == [(second["id"], [third["id"]])]
    assert status(store, running["id"]) == "running"  # a running job is never replaced
    rec.release.set()
    wait_for(lambda: all(status(store, j["id"]) == "succeeded" for j in (running, third, other)))
    assert rec.log == ["start 1", "end 1", "start 3", "end 3", "start d", "end d"]


def test_a_job_that_fails_to_prepare_replaces_nothing(manager: JobManager, store: Store) -> None:
    rec = Recorder()
    running = manager.submit(JobSpec("deploy", "a", "a", rec.work("1")))
    wait_for(lambda: status(store, running["id"]) == "running")
    queued = manager.submit(JobSpec("deploy", "a", "a", rec.work("2"), replace_queued=True))

    def refuse(job: dict[str, object]) -> None:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        manager.submit(JobSpec("deploy", "a", "a", rec.work("3"), prepare=refuse, replace_queued=True))
    assert status(store, queued["id"]) == "queued"
    rec.release.set()
    wait_for(lambda: status(store, queued["id"]) == "succeeded")


def test_the_queue_is_bounded(store: Store) -> None:
    manager = JobManager(store, workers=1, max_queued=2)
    manager.start()
    rec = Recorder()
    try:
        running = manager.submit(JobSpec("deploy", "a", "a", rec.work("1")))
        wait_for(lambda: status(store, running["id"]) == "running")
        manager.submit(JobSpec("deploy", "b", "b", rec.work("2"), replace_queued=True))
        manager.submit(JobSpec("deploy", "c", "c", rec.work("3")))
        with pytest.raises(TooManyRequestsError) as refused:
            manager.submit(JobSpec("deploy", "d", "d", rec.work("4")))
        assert refused.value.status == 429 and refused.value.code == "too_many_jobs"
        assert refused.value.retry_after == QUEUE_FULL_RETRY_AFTER
        assert len(store.list_jobs()) == 3  # the refused job was never stored
        # Replacing a queued job does not grow the queue: accepted at the limit.
        manager.submit(JobSpec("deploy", "b", "b", rec.work("2b"), replace_queued=True))
        rec.release.set()
        wait_for(lambda: manager.idle())
        manager.submit(JobSpec("deploy", "d", "d", rec.work("4")))
    finally:
        rec.release.set()
        manager.shutdown(grace=5)
