"""Helpers for the deploy engine's integration tests: real ansible-playbook, real dockerd, real nginx."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.api_fixtures import docker, git

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)

# Fast failure for tests that expect an unhealthy release.
FAST_HEALTH = {"app_health_retries": 4, "app_health_delay": 0.5, "app_health_timeout": 2}


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def changed(self) -> int:
        match = RECAP.search(self.stdout)
        assert match, f"no PLAY RECAP in output:\n{self.stdout[-3000:]}"
        return int(match.group("changed"))

    @property
    def failure_messages(self) -> list[str]:
        """The msg of every failed task (from the default callback's `fatal: ... => {json}` lines)."""
        messages = []
        for line in self.stdout.splitlines():
            if line.startswith("fatal:") and "=> {" in line:
                payload = json.loads(line.split("=> ", 1)[1])
                messages.append(str(payload.get("msg", "")))
        return messages

    @property
    def status_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


def run_playbook(playbook: str, extra_vars: dict[str, Any], tmp_path: Path) -> PlaybookResult:
    """Run playbooks/<playbook> against this machine with the vars in a JSON file (-e @file)."""
    vars_file = tmp_path / f"vars-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps(extra_vars))
    start = time.monotonic()
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, f"playbooks/{playbook}", "-e", f"@{vars_file}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
        check=False,
    )
    return PlaybookResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def start_playbook(
    playbook: str, extra_vars: dict[str, Any], tmp_path: Path
) -> tuple[subprocess.Popen[str], Path]:
    """:func:`run_playbook` in the background: the process, and the file its output goes to."""
    stamp = time.monotonic_ns()
    vars_file = tmp_path / f"vars-{stamp}.json"
    vars_file.write_text(json.dumps(extra_vars))
    output = tmp_path / f"{playbook}-{stamp}.log"
    with output.open("w") as log:
        proc = subprocess.Popen(
            [ANSIBLE_PLAYBOOK, f"playbooks/{playbook}", "-e", f"@{vars_file}"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
    return proc, output


def deploy_vars(name: str, repo: Path, port: int, **extra: Any) -> dict[str, Any]:
    """The inputs of playbooks/deploy.yml for a busybox app of ``repo`` (see :func:`write_app`)."""
    return {
        "app_name": name,
        "app_repo": f"file://{repo}",
        "app_port": port,
        "app_container_port": 5000,
        **extra,
    }


def remove(name: str, tmp_path: Path) -> None:
    """playbooks/remove.yml for ``name``; it must succeed."""
    result = run_playbook("remove.yml", {"app_name": name}, tmp_path)
    assert result.rc == 0, result.stdout[-3000:]


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def write_app(repo: Path, body: str, cmd: str | None = None, extra: str = "") -> str:
    """Write a busybox httpd app serving `body` at / and commit it; returns the commit SHA."""
    (repo / "www").mkdir(parents=True, exist_ok=True)
    (repo / "www" / "index.html").write_text(body)
    command = cmd or '["busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]'
    (repo / "Dockerfile").write_text(f"FROM paas-local/busybox:1\nCOPY www /www\n{extra}CMD {command}\n")
    if not (repo / ".git").exists():
        git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", f"app: {body.strip()[:40]}")
    return git(repo, "rev-parse", "HEAD")


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET a URL: (status, body); status 0 when no HTTP answer came."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, urllib.error.URLError):
        return 0, ""


def wait_for_body(url: str, expected: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(url) == (200, expected):
            return True
        time.sleep(0.25)
    return False


@dataclass
class Prober:
    """Hits a URL at a steady rate in a thread, recording every answer."""

    url: str
    rate: float = 25.0
    results: list[tuple[int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = 0.0
    stopped: float = 0.0

    def __enter__(self) -> Prober:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.stopped = time.monotonic()

    def _run(self) -> None:
        interval = 1.0 / self.rate
        while not self._stop.is_set():
            start = time.monotonic()
            self.results.append(get(self.url, timeout=5))
            self._stop.wait(max(0.0, interval - (time.monotonic() - start)))

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [r for r in self.results if r[0] != 200]


def host_snapshot(root: Path = Path("/var/lib/paas")) -> dict[str, Any]:
    """What a deploy could change on this host: containers, images, app dirs, nginx configs."""
    apps = root / "apps"
    conf = Path("/etc/nginx/conf.d")
    return {
        "containers": sorted(
            docker("ps", "--all", "--format", "{{.Names}} {{.Image}} {{.State}}").splitlines()
        ),
        "images": sorted(docker("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines()),
        "apps": sorted(p.name for p in apps.iterdir()) if apps.exists() else [],
        "records": {p.name: (p / "app.json").read_text() for p in apps.iterdir() if (p / "app.json").exists()}
        if apps.exists()
        else {},
        "nginx": sorted(p.name for p in conf.glob("paas-*.conf")),
    }
