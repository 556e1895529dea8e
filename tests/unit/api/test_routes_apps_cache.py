"""GET /apps keeps its serialized answer until the store changes; gzip when the client accepts it."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path
from typing import Any

from support.fakes import FakeRunner, call_wsgi

from paas.api.routes import create_app
from paas.core.config import Settings

TOKEN = "unit-test-token-0123456789"
BODY: dict[str, Any] = {
    "name": "web",
    "repo": "https://git.example.com/org/web.git",
    "port": 18080,
    "container_port": 5000,
}


def _wait(app: Any, job_id: str) -> None:
    deadline = time.monotonic() + 5
    while call_wsgi(app, "GET", f"/jobs/{job_id}", token=TOKEN).json()["status"] not in (
        "succeeded",
        "failed",
        "canceled",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_apps_answer_follows_every_change_and_gzip_matches(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_token=TOKEN, monitor_interval=0, workers=2, shutdown_grace=1)
    # Deploys wait at the gate until the test has seen the app pending.
    runner = FakeRunner(gate=threading.Event())
    app = create_app(settings, runner=runner)
    try:
        assert call_wsgi(app, "GET", "/apps", token=TOKEN).json() == {"apps": []}

        reply = call_wsgi(app, "POST", "/apps/deploy", body=BODY, token=TOKEN)
        assert reply.status == 202
        listed = call_wsgi(app, "GET", "/apps", token=TOKEN).json()["apps"]
        assert [a["name"] for a in listed] == ["web"]  # the new app shows at once
        assert listed[0]["state"] == "pending"
        assert runner.gate is not None
        runner.gate.set()
        _wait(app, reply.json()["job"]["id"])

        plain = call_wsgi(app, "GET", "/apps", token=TOKEN)
        assert [(a["name"], a["state"]) for a in plain.json()["apps"]] == [("web", "running")]
        assert plain.headers.get("Content-Encoding") is None
        assert plain.headers["Vary"] == "Accept-Encoding"

        zipped = call_wsgi(app, "GET", "/apps", token=TOKEN, headers={"Accept-Encoding": "gzip, deflate"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(zipped.body)) == plain.json()

        reply = call_wsgi(app, "DELETE", "/apps/web", token=TOKEN)
        _wait(app, reply.json()["job"]["id"])
        assert call_wsgi(app, "GET", "/apps", token=TOKEN).json() == {"apps": []}
        zipped = call_wsgi(app, "GET", "/apps", token=TOKEN, headers={"Accept-Encoding": "gzip"})
        assert json.loads(gzip.decompress(zipped.body)) == {"apps": []}
    finally:
        app.close()


def test_apps_answer_still_needs_the_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_token=TOKEN, monitor_interval=0, workers=1, shutdown_grace=1)
    # Deploys wait at the gate until the test has seen the app pending.
    runner = FakeRunner(gate=threading.Event())
    app = create_app(settings, runner=runner)
    try:
        assert call_wsgi(app, "GET", "/apps", token=TOKEN).status == 200
        assert call_wsgi(app, "GET", "/apps", token="wrong-token-0123456789").status == 401
        assert call_wsgi(app, "GET", "/apps").status == 401
    finally:
        app.close()
