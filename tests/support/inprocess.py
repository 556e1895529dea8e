"""The API in-process (WSGI, no socket) with the fake runner and the fake executor: the harness of the
unit tests of the routes and of the infrastructure part."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from paas.api.routes import Application, create_app
from paas.core.config import Settings
from support.fakes import FakeExecutor, FakeRunner, Reply, call_wsgi


def never_run_terraform(directory: Path) -> Path:
    """An executable to name as Terraform: the FakeExecutor plays it, nothing ever runs it."""
    path = directory / "bin" / "terraform"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'the fake executor plays terraform' >&2\nexit 99\n")
    path.chmod(0o755)
    return path


class InProcessApi:
    """A started control plane on fakes, called like a client: ``api("GET", "/apps")``."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        token: str,
        data_dir: Path | None = None,
        runner: FakeRunner | None = None,
        executor: FakeExecutor | None = None,
        **settings: Any,
    ) -> None:
        self.tmp_path = tmp_path
        self.data_dir = data_dir or tmp_path
        self.token = token
        self.runner = runner or FakeRunner()
        self.executor = executor or FakeExecutor()
        settings.setdefault("terraform", str(never_run_terraform(tmp_path)))
        self.settings = Settings(
            data_dir=self.data_dir,
            api_token=token,
            monitor_interval=0,
            workers=2,
            shutdown_grace=1,
            **settings,
        )
        self.app: Application = create_app(self.settings, runner=self.runner, executor=self.executor)

    def __call__(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        kwargs.setdefault("token", self.token)
        return call_wsgi(self.app, method, path, body=body, **kwargs)

    def restart(self) -> None:
        self.app.close()
        self.app = create_app(self.settings, runner=self.runner, executor=self.executor)

    def wait_job(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self("GET", f"/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
