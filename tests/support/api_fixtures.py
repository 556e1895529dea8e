"""Fixtures and helpers of the control plane's integration tests: a real server process (waitress,
ansible-runner, dockerd, nginx) driven over HTTP.

Import the fixtures into a test module with ``from api_fixtures import *`` (pytest puts this directory
on sys.path). Public ports of test apps are taken from 18000-18999.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from support.components import ENGINE

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
TERMINAL = ("succeeded", "failed", "canceled")
# Deploy fast in tests: few health attempts, short delays.
FAST_VARS = {"app_health_retries": 5, "app_health_delay": 0.5, "app_health_timeout": 2, "app_start_grace": 1}
LAUNCHER = (
    "import sys\n"
    "from paas.core.logs import configure\n"
    "from paas.server import serve\n"
    "configure('INFO')\n"
    "serve('127.0.0.1', int(sys.argv[1]))\n"
)

__all__ = [
    "REPO",
    "Client",
    "Server",
    "base_image",
    "docker",
    "free_port",
    "git",
    "make_repo",
    "remove_app",
    "wait_until",
]


def free_port(low: int = 18000, high: int = 18999) -> int:
    """A port of ``low``-``high`` nothing listens on (random start: parallel runs rarely collide)."""
    span = high - low + 1
    start = uuid.uuid4().int % span
    for offset in range(span):
        port = low + (start + offset) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104 - probing
            except OSError:
                continue
        if not _port_in_records(port):
            return port
    raise RuntimeError("no free port in 18000-18999")


def _port_in_records(port: int) -> bool:
    apps = Path("/var/lib/paas/apps")
    if not apps.is_dir():
        return False
    for record in apps.glob("*/app.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if port in (data.get("port"), (data.get("active") or {}).get("port")):
            return True
    return False


def wait_until(
    check: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)
    return out.stdout.strip()


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def make_repo(
    path: Path,
    body: str = "hello\n",
    *,
    dockerfile_extra: str = "",
    cmd: str = '["busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]',
) -> str:
    """Write (or update) a busybox httpd app in ``path`` and commit it; returns the commit.

    It serves ``body`` at ``/`` and ``ok`` at ``/health.html``.
    """
    (path / "www").mkdir(parents=True, exist_ok=True)
    (path / "www" / "index.html").write_text(body)
    (path / "www" / "health.html").write_text("ok\n")
    (path / "Dockerfile").write_text(
        f"FROM paas-local/busybox:1\nCOPY www /www\n{dockerfile_extra}CMD {cmd}\n"
    )
    if not (path / ".git").exists():
        git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "--allow-empty", "-m", f"app {time.time_ns()}")
    return git(path, "rev-parse", "HEAD")


def remove_app(name: str) -> None:
    """Remove an app from the host with playbooks/remove.yml (clean-up, whatever the server did)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    subprocess.run(
        [ANSIBLE_PLAYBOOK, "playbooks/remove.yml", "-e", json.dumps({"app_name": name})],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
        timeout=300,
    )


@pytest.fixture(scope="session")
def base_image() -> str:
    """``paas-local/busybox:1``, built once."""
    for component in ENGINE:
        component.require()
    subprocess.run(["bash", str(REPO / "examples/busybox-base/build.sh")], check=True, capture_output=True)
    return "paas-local/busybox:1"


@dataclass
class Client:
    """The API over HTTP, with the token."""

    base_url: str
    token: str
    responses: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is None:
            token = self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = requests.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)
        self.responses.append(response.text)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_job(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        job: dict[str, Any] = wait_until(
            lambda: (j := self.job(job_id))["status"] in TERMINAL and j,
            timeout,
            interval=0.5,
            what=f"job {job_id}",
        )
        return job

    def status(self, name: str) -> dict[str, Any]:
        response = self.get(f"/apps/{name}/status")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
        status: dict[str, Any] = wait_until(
            lambda: (s := self.status(name))["state"] == state and s,
            timeout,
            interval=0.5,
            what=f"app {name} to be {state}",
        )
        return status

    def deploy(self, body: dict[str, Any], timeout: float = 240) -> tuple[dict[str, Any], dict[str, Any]]:
        """POST /apps/deploy; returns (the 202 body, the finished job)."""
        response = self.post("/apps/deploy", body)
        assert response.status_code == 202, response.text
        accepted: dict[str, Any] = response.json()
        return accepted, self.wait_job(accepted["job"]["id"], timeout)


class Server:
    """A ``paas`` server process on 127.0.0.1 with its own data dir.

    With ``set_token=False`` the server runs without ``PAAS_API_TOKEN``: it generates its token into
    the data dir, and :attr:`token` is read from there once the server answers.
    """

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, set_token: bool = True) -> None:
        self.data_dir = data_dir
        self.set_token = set_token
        self.token = "it-" + uuid.uuid4().hex if set_token else ""
        self.port = 0
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> Client:
        return Client(f"http://127.0.0.1:{self.port}", self.token)

    def start(self) -> Server:
        self.port = self.port or _free_local_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAAS_")}
        env.update(
            PAAS_DATA_DIR=str(self.data_dir),
            PAAS_MONITOR_INTERVAL="0",
            PAAS_EXTRA_VARS=json.dumps(FAST_VARS),
            PAAS_SHUTDOWN_GRACE="60",
            # Test apps are cloned from repositories the tests make under the temp dir.
            PAAS_ALLOW_FILE_REPOS="1",
            PAAS_FILE_REPO_ROOTS=tempfile.gettempdir(),
            PYTHONPATH=str(REPO),
        )
        if self.set_token:
            env["PAAS_API_TOKEN"] = self.token
        env.update(self.extra_env)
        # The launcher runs without the venv on PATH: the server must find ansible-playbook itself.
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-c", LAUNCHER, str(self.port)], cwd=REPO, env=env, stdout=log, stderr=log
            )
        wait_until(self._healthy, 30, interval=0.2, what="the server to answer /healthz")
        if not self.set_token:
            self.token = (self.data_dir / "api-token").read_text().strip()
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def app_names() -> Iterator[list[str]]:
    """Names of the apps a test deploys: removed from the host afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        remove_app(name)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


__all__ += ["FAST_VARS", "app_names", "unique_name"]
