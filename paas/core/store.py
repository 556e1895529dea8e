"""The server's state: apps, jobs, releases and the infra record, in one TinyDB JSON file.

The only module that imports TinyDB. Every access holds one lock; every write reaches the disk
before the call returns, atomically (temp file in the same directory, fsync, ``os.replace``, fsync
of the directory), so a ``kill -9`` at any moment leaves either the old or the new file, never a torn
one, and nothing acknowledged is lost. :meth:`Store.transaction` groups several changes into one write.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

log = logging.getLogger(__name__)

Doc = dict[str, Any]
TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "canceled"})
ACTIVE_JOB_STATUSES = frozenset({"queued", "running"})
RELEASES_KEPT_PER_APP = 20


class StoreError(Exception):
    """The database file cannot be read (it is not JSON, or not what this server wrote)."""


def write_atomically(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``: readers and crashes see the old file or the new one, whole."""
    directory = path.parent
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AtomicJSONStorage(Storage):
    """A TinyDB storage that writes the whole file atomically and durably.

    TinyDB's own JSONStorage truncates and rewrites the file in place, which a crash mid-write turns
    into a corrupt database. This one keeps the last written text in memory (reads never hit the disk
    after the first) and supports batching: between :meth:`begin` and :meth:`commit` writes stay in
    memory and :meth:`commit` writes once.
    """

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in self._path.parent.glob(f".{self._path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        self._text: str | None = None
        self._pending: str | None = None
        self._depth = 0
        # Bumped whenever a write reaches the disk: readers cache what they derive from the data.
        self.version = 0
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        if text.strip():
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise StoreError(f"{self._path} is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise StoreError(f"{self._path} does not hold a JSON object")
            self._text = text

    def read(self) -> dict[str, dict[str, Any]] | None:
        text = self._pending if self._pending is not None else self._text
        if text is None:
            return None
        data: dict[str, dict[str, Any]] = json.loads(text)
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        if self._depth:
            self._pending = text
            return
        write_atomically(self._path, text)
        self._text = text
        self.version += 1

    def begin(self) -> None:
        self._depth += 1

    def commit(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._pending is not None:
            text, self._pending = self._pending, None
            write_atomically(self._path, text)
            self._text = text
            self.version += 1

    def rollback(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._pending = None

    def close(self) -> None:
        """Nothing to flush: every committed write is already on disk."""


class Store:
    """Typed access to the tables. Documents go in and come out as plain dicts (copies)."""

    def __init__(self, path: Path, *, keep_jobs: int = 200) -> None:
        self._lock = threading.RLock()
        self._db = TinyDB(str(path), storage=AtomicJSONStorage)
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)
        self._storage = storage
        self._keep_jobs = keep_jobs
        # No query cache: the storage is the single source of truth (and rollback must not leave
        # cached results behind).
        self._apps = self._db.table("apps", cache_size=0)
        self._jobs = self._db.table("jobs", cache_size=0)
        self._releases = self._db.table("releases", cache_size=0)
        self._infra = self._db.table("infra", cache_size=0)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """Hold the lock and write every change made inside once, at the end (or none, on error)."""
        with self._lock:
            self._storage.begin()
            try:
                yield self
            except BaseException:
                self._storage.rollback()
                raise
            self._storage.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def version(self) -> int:
        """Changes whenever a write is committed: a cache key for anything derived from the data."""
        with self._lock:
            return self._storage.version

    # ---- apps ----
    def get_app(self, name: str) -> Doc | None:
        with self._lock:
            doc = self._apps.get(Query().name == name)
            return _plain(doc)

    def list_apps(self) -> list[Doc]:
        with self._lock:
            return sorted((_plain_doc(d) for d in self._apps.all()), key=lambda d: str(d["name"]))

    def put_app(self, doc: Doc) -> None:
        with self._lock:
            self._apps.upsert(copy.deepcopy(doc), Query().name == doc["name"])

    def update_app(self, name: str, change: Callable[[Doc], None]) -> Doc | None:
        """Read-modify-write of one app under the lock; None when the app does not exist."""
        with self.transaction():
            doc = self.get_app(name)
            if doc is None:
                return None
            change(doc)
            self.put_app(doc)
            return doc

    def delete_app(self, name: str) -> None:
        with self.transaction():
            self._apps.remove(Query().name == name)
            self._releases.remove(Query().app == name)

    # ---- jobs ----
    def get_job(self, job_id: str) -> Doc | None:
        with self._lock:
            return _plain(self._jobs.get(Query().id == job_id))

    def put_job(self, doc: Doc) -> None:
        with self._lock:
            self._jobs.upsert(copy.deepcopy(doc), Query().id == doc["id"])

    def update_job(self, job_id: str, change: Callable[[Doc], None]) -> Doc | None:
        with self.transaction():
            doc = self.get_job(job_id)
            if doc is None:
                return None
            change(doc)
            self.put_job(doc)
            return doc

    def list_jobs(self, *, statuses: Iterable[str] | None = None, app: str | None = None) -> list[Doc]:
        """Jobs in creation order, optionally only those of some statuses or of one app."""
        wanted = None if statuses is None else frozenset(statuses)
        with self._lock:
            docs = [
                _plain_doc(d)
                for d in self._jobs.all()
                if (wanted is None or d.get("status") in wanted) and (app is None or d.get("app") == app)
            ]
        return sorted(docs, key=lambda d: (str(d.get("created_at", "")), int(d.get("seq", 0))))

    def prune_jobs(self) -> list[str]:
        """Forget the oldest finished jobs beyond ``keep_jobs``; returns their ids."""
        with self.transaction():
            finished = self.list_jobs(statuses=TERMINAL_JOB_STATUSES)
            excess = finished[: max(0, len(finished) - self._keep_jobs)]
            ids = [str(d["id"]) for d in excess]
            if ids:
                wanted = frozenset(ids)
                self._jobs.remove(Query().id.test(lambda v: v in wanted))
            return ids

    # ---- releases ----
    def add_release(self, doc: Doc) -> None:
        with self.transaction():
            self._releases.insert(copy.deepcopy(doc))
            mine = sorted(
                self._releases.search(Query().app == doc["app"]), key=lambda d: str(d.get("deployed_at", ""))
            )
            old = [d.doc_id for d in mine[: max(0, len(mine) - RELEASES_KEPT_PER_APP)]]
            if old:
                self._releases.remove(doc_ids=old)

    def releases_of(self, app: str) -> list[Doc]:
        with self._lock:
            docs = [_plain_doc(d) for d in self._releases.search(Query().app == app)]
        return sorted(docs, key=lambda d: str(d.get("deployed_at", "")))

    # ---- infra ----
    def get_infra(self) -> Doc | None:
        with self._lock:
            docs = self._infra.all()
            return _plain_doc(docs[0]) if docs else None

    def put_infra(self, doc: Doc) -> None:
        with self.transaction():
            self._infra.truncate()
            self._infra.insert(copy.deepcopy(doc))


def _plain_doc(doc: Any) -> Doc:
    return copy.deepcopy(dict(doc))


def _plain(doc: Any) -> Doc | None:
    return None if doc is None else _plain_doc(doc)
