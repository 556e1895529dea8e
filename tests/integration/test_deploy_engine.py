"""The deploy engine through plain ansible-playbook: real git, dockerd, nginx. No mocks.

Ports 8600-8699 are this module's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.api_fixtures import base_image, docker, wait_until
from support.engine import (
    FAST_HEALTH,
    REPO,
    Prober,
    deploy_vars,
    get,
    host_snapshot,
    remove,
    run_playbook,
    wait_for_body,
    write_app,
)

# The busybox base image of api_fixtures: built once, its components (dockerd, nginx, ...) required.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures(base_image.__name__)]

APPS_ROOT = Path("/var/lib/paas/apps")


def app_containers(name: str) -> list[str]:
    return docker("ps", "--all", "--filter", f"label=paas.app={name}", "--format", "{{.Names}}").split()


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """An app deployed at v1 on port 8601 for the module's tests (one deploy, not one per test), removed
    at the end. Tests find what it serves when they start: one of them redeploys it."""
    tmp_path = tmp_path_factory.mktemp("served")
    name, port = "engine-served", 8601
    repo = tmp_path / "repo"
    write_app(repo, "v1\n")
    result = run_playbook("deploy.yml", deploy_vars(name, repo, port), tmp_path)
    assert result.rc == 0, result.stdout[-4000:]
    yield name, repo, port
    remove(name, tmp_path)


def serving_body(port: int) -> str:
    """What the app on ``port`` serves at / now."""
    status, body = get(f"http://127.0.0.1:{port}/")
    assert status == 200, status
    return body


def test_deploy_answers_status_rerun_and_remove(tmp_path: Path) -> None:
    name, port = "engine-hello", 8602
    repo = tmp_path / "repo"
    commit = write_app(repo, "hello v1\n")
    env = {"GREETING": "hi"}
    try:
        first = run_playbook("deploy.yml", deploy_vars(name, repo, port, app_env=env), tmp_path)
        assert first.rc == 0, first.stdout[-4000:]
        assert get(f"http://127.0.0.1:{port}/") == (200, "hello v1\n")

        status = run_playbook("status.yml", {"app_name": name}, tmp_path)
        assert status.rc == 0, status.stdout[-3000:]
        [line] = status.status_lines
        assert line["name"] == name
        assert line["state"] == "running"
        assert line["commit"] == commit
        assert line["port"] == port
        assert line["health"]["attempts"][-1]["code"] == 200

        rerun = run_playbook("deploy.yml", deploy_vars(name, repo, port, app_env=env), tmp_path)
        assert rerun.rc == 0, rerun.stdout[-4000:]
        assert rerun.changed == 0, rerun.stdout[-6000:]
    finally:
        remove(name, tmp_path)

    assert app_containers(name) == []
    assert docker("images", "--quiet", f"paas/{name}") == ""
    assert not Path(f"/etc/nginx/conf.d/paas-app-{name}.conf").exists()
    assert not (APPS_ROOT / name).exists()
    assert get(f"http://127.0.0.1:{port}/")[0] == 0


def test_remove_unknown_app_succeeds(tmp_path: Path) -> None:
    before = host_snapshot()
    result = run_playbook("remove.yml", {"app_name": "engine-never-deployed"}, tmp_path)
    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0
    assert host_snapshot() == before


def test_redeploy_new_commit_has_zero_failed_requests(
    served_app: tuple[str, Path, int], tmp_path: Path
) -> None:
    name, repo, port = served_app
    old = serving_body(port)
    write_app(repo, "v2\n")
    with Prober(f"http://127.0.0.1:{port}/") as prober:
        wait_until(lambda: prober.results, 10, what="an answer before the deploy")
        before = len(prober.results)
        result = run_playbook("deploy.yml", deploy_vars(name, repo, port), tmp_path)
        during = len(prober.results) - before
        # The next-but-one answer is to a request begun after the deploy ended.
        after = len(prober.results) + 2
        wait_until(lambda: len(prober.results) >= after, 10, what="answers after the deploy")
    assert result.rc == 0, result.stdout[-4000:]
    # The rate is the machine's business (its load), not the product's: only that requests were made
    # while the deploy ran, else zero failures would prove nothing.
    assert during > 0, "the prober made no request during the deploy"
    assert prober.failures == []
    bodies = [body for _, body in prober.results]
    assert bodies[0] == old != "v2\n"
    assert bodies[-1] == "v2\n"
    assert set(bodies) == {old, "v2\n"}
    assert get(f"http://127.0.0.1:{port}/") == (200, "v2\n")
    assert len(app_containers(name)) == 1


BROKEN_RELEASES = {
    "build": {"extra": "RUN false\n"},
    "health": {"cmd": '["busybox", "httpd", "-f", "-p", "5999", "-h", "/www"]'},
    "start": {"cmd": '["sh", "-c", "echo starting up; echo cannot bind >&2; exit 3"]'},
}


@pytest.mark.parametrize("step", sorted(BROKEN_RELEASES))
def test_failed_redeploy_keeps_old_version_serving(
    step: str, served_app: tuple[str, Path, int], tmp_path: Path
) -> None:
    name, repo, port = served_app
    before = app_containers(name)
    serving = serving_body(port)
    write_app(repo, f"broken at {step}\n", **BROKEN_RELEASES[step])
    with Prober(f"http://127.0.0.1:{port}/") as prober:
        result = run_playbook("deploy.yml", deploy_vars(name, repo, port, **FAST_HEALTH), tmp_path)
        after = len(prober.results) + 2  # the next-but-one answer: to a request begun after the deploy
        wait_until(lambda: len(prober.results) >= after, 10, what="answers after the deploy")
    assert result.rc != 0
    message = result.failure_messages[-1]
    assert f"deploy of '{name}' failed at step '{step}'" in message, message
    if step in ("start", "health"):
        assert "--- last 50 lines of" in message
    if step == "start":
        assert "cannot bind" in message and "starting up" in message
    assert prober.results, "the prober made no request"
    assert prober.failures == []
    assert {body for _, body in prober.results} == {serving}
    assert get(f"http://127.0.0.1:{port}/") == (200, serving)
    assert app_containers(name) == before


def test_failed_first_deploy_leaves_nothing_running(tmp_path: Path) -> None:
    name, port = "engine-first-fail", 8603
    repo = tmp_path / "repo"
    write_app(repo, "never\n", cmd='["sh", "-c", "exit 1"]')
    try:
        result = run_playbook("deploy.yml", deploy_vars(name, repo, port, **FAST_HEALTH), tmp_path)
        assert result.rc != 0
        assert "failed at step 'start'" in result.failure_messages[-1]
        assert app_containers(name) == []
        assert not Path(f"/etc/nginx/conf.d/paas-app-{name}.conf").exists()
        assert get(f"http://127.0.0.1:{port}/")[0] == 0
        status = run_playbook("status.yml", {"app_name": name}, tmp_path)
        assert [line["state"] for line in status.status_lines] == ["failed"]
    finally:
        remove(name, tmp_path)


def test_killed_main_process_is_restarted(served_app: tuple[str, Path, int]) -> None:
    name, _, port = served_app
    serving = serving_body(port)
    [container] = app_containers(name)
    info = json.loads(docker("inspect", container))[0]
    os.kill(info["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        restarted = json.loads(docker("inspect", container))[0]
        if restarted["RestartCount"] > info["RestartCount"] and get(f"http://127.0.0.1:{port}/") == (
            200,
            serving,
        ):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the container was not restarted, or does not answer again")


def _dockerd_pid() -> int | None:
    out = subprocess.run(
        ["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False
    ).stdout.split()
    return int(out[0]) if out else None


def test_every_app_answers_after_docker_daemon_restart(
    served_app: tuple[str, Path, int], tmp_path: Path
) -> None:
    _, _, port = served_app
    serving = serving_body(port)
    other_repo = tmp_path / "other"
    write_app(other_repo, "other\n")
    other = run_playbook("deploy.yml", deploy_vars("engine-other", other_repo, 8604), tmp_path)
    try:
        assert other.rc == 0, other.stdout[-4000:]
        if Path("/run/systemd/system").exists():
            subprocess.run(["systemctl", "restart", "docker"], check=True)
        else:
            pid = _dockerd_pid()
            assert pid, "no dockerd runs"
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while _dockerd_pid() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert get(f"http://127.0.0.1:{port}/")[0] != 200, "the app answered with the daemon down"
            subprocess.run(["bash", str(REPO / ".ci/start-dockerd")], check=True, capture_output=True)
        assert wait_for_body(f"http://127.0.0.1:{port}/", serving, timeout=60)
        assert wait_for_body("http://127.0.0.1:8604/", "other\n", timeout=60)
    finally:
        remove("engine-other", tmp_path)


# ---- Validation: every bad input fails in the first seconds, names its variable, changes nothing ----

GOOD = {
    "app_name": "engine-bad",
    "app_repo": "file:///tmp/nowhere",
    "app_port": 8605,
    "app_container_port": 5000,
}
CONTAINER_PORT_MSG = "app_container_port must be an integer within 1-65535"
BAD_INPUTS: dict[str, tuple[dict[str, Any], str]] = {
    "name-uppercase": ({"app_name": "Hello"}, "app_name must match"),
    "name-traversal": ({"app_name": "../../etc"}, "app_name must match"),
    "name-too-long": ({"app_name": "a" * 32}, "app_name must match"),
    "port-low": ({"app_port": 80}, "app_port must be an integer within 1024-65535"),
    "port-high": ({"app_port": 70000}, "app_port must be an integer within 1024-65535"),
    "port-text": ({"app_port": "8080; rm -rf /"}, "app_port must be an integer"),
    "port-internal": ({"app_port": 61500}, "reserved for the platform's internal container ports"),
    "container-port-zero": (
        {"app_container_port": 0},
        CONTAINER_PORT_MSG,
    ),
    "container-port-high": (
        {"app_container_port": 65536},
        CONTAINER_PORT_MSG,
    ),
    "repo-ext": ({"app_repo": "ext::sh -c touch% /tmp/engine-pwned"}, "app_repo must be"),
    "repo-option": ({"app_repo": "--upload-pack=touch /tmp/engine-pwned"}, "app_repo must be"),
    "repo-space": ({"app_repo": "https://example.com/a b.git"}, "app_repo must be"),
    "repo-http": ({"app_repo": "http://example.com/app.git"}, "app_repo must be"),
    "repo-credentials": ({"app_repo": "https://user:secret@example.com/app.git"}, "app_repo must be"),
    "ref-option": ({"app_ref": "--upload-pack=touch"}, "app_ref may hold only"),
    "ref-shell": ({"app_ref": "main;touch /tmp/engine-pwned"}, "app_ref may hold only"),
    "ref-dotdot": ({"app_ref": "main/../x"}, "app_ref may hold only"),
    "env-key": ({"app_env": {"BAD-KEY": "x"}}, "app_env must map names"),
    "env-key-shell": ({"app_env": {"$(touch /tmp/engine-pwned)": "x"}}, "app_env must map names"),
    "env-not-dict": ({"app_env": ["A=1"]}, "app_env must map names"),
    "env-boolean": ({"app_env": {"DEBUG": True}}, "app_env must map names"),
    "health-path": ({"app_health_path": "healthz"}, "app_health_path must be"),
    "context-traversal": ({"app_context": "../.."}, "app_context must be"),
    "context-absolute": ({"app_context": "/etc"}, "app_context must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_fast_and_changes_nothing(case: str, tmp_path: Path) -> None:
    override, message = BAD_INPUTS[case]
    before = host_snapshot()
    result = run_playbook("deploy.yml", {**GOOD, **override}, tmp_path)
    assert result.rc != 0
    assert any(message in m for m in result.failure_messages), (
        result.failure_messages or result.stdout[-3000:]
    )
    assert result.seconds < 15, result.seconds
    assert host_snapshot() == before
    assert not Path("/tmp/engine-pwned").exists()


def test_port_of_another_app_is_refused(served_app: tuple[str, Path, int], tmp_path: Path) -> None:
    name, repo, port = served_app
    before = host_snapshot()
    result = run_playbook("deploy.yml", deploy_vars("engine-thief", repo, port), tmp_path)
    assert result.rc != 0
    assert any(f"app_port {port} is already used by app '{name}'" in m for m in result.failure_messages)
    assert host_snapshot() == before


def test_port_held_by_another_program_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "x\n")
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 8606))  # noqa: S104 - what a real squatter does
        listener.listen()
        before = host_snapshot()
        result = run_playbook("deploy.yml", deploy_vars("engine-squatter", repo, 8606), tmp_path)
    assert result.rc != 0
    assert any(
        "app_port 8606 is already in use on this host by another program" in m
        for m in result.failure_messages
    )
    assert host_snapshot() == before
