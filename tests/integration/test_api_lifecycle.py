"""The control plane over HTTP against the real deploy engine: deploy, redeploy, failures, delete,
concurrency, secrets. One server for the module."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import api_fixtures
from support.api_fixtures import Client, Server, docker, free_port, make_repo, unique_name

# Fixtures of api_fixtures used here.
app_names = api_fixtures.app_names
base_image = api_fixtures.base_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Server]:
    # The health role's defaults (30 attempts, 1 s apart, 5 s each), not the tight FAST_VARS: ten deploys
    # share the machine's cores in test_concurrent_deploys_over_five_apps, and a container slow to answer
    # there is the machine's load, not a failure of the product. No test here expects a failed probe. The
    # start grace stays: a crashing container is caught at step start at once, not after 30 probes.
    env = {"PAAS_WORKERS": "4", "PAAS_EXTRA_VARS": json.dumps({"app_start_grace": 1})}
    srv = Server(tmp_path_factory.mktemp("paas-lifecycle") / "data", env=env).start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


@pytest.fixture
def client(server: Server) -> Client:
    return server.client


def fetch(url: str) -> tuple[int, str]:
    try:
        response = requests.get(url, timeout=3)
    except requests.RequestException:
        return 0, ""
    return response.status_code, response.text


def test_lifecycle_deploy_redeploy_failed_redeploy_delete(
    client: Client, tmp_path: Path, app_names: list[str]
) -> None:
    name = unique_name("life")
    app_names.append(name)
    repo = tmp_path / "repo"
    first = make_repo(repo, "version one\n")
    port = free_port()
    body = {
        "name": name,
        "repo": f"file://{repo}",
        "port": port,
        "container_port": 5000,
        "health_path": "/health.html",
    }

    # New app: pending at once, then running.
    response = client.post("/apps/deploy", body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["app"]["state"] == "pending"
    assert response.headers["Location"] == f"/jobs/{accepted['job']['id']}"
    job = client.wait_job(accepted["job"]["id"])
    assert job["status"] == "succeeded", job
    assert job["events"] and {e["result"] for e in job["events"]} <= {"ok", "changed", "skipped", "failed"}
    status = client.status(name)
    assert status["state"] == "running"
    assert status["commit"] == first
    assert status["url"] == f"http://localhost:{port}/"
    assert (
        status["port"] == port
        and status["container_port"] == 5000
        and status["health_path"] == "/health.html"
    )
    assert status["last_deploy"]["status"] == "succeeded" and status["last_deploy"]["job_id"] == job["id"]
    assert status["health"]["attempts"] and status["health"]["attempts"][-1]["code"] == 200
    assert fetch(f"http://127.0.0.1:{port}/") == (200, "version one\n")
    assert name in [a["name"] for a in client.get("/apps").json()["apps"]]

    # Redeploy a new commit.
    second = make_repo(repo, "version two\n")
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job
    assert client.status(name)["commit"] == second
    assert fetch(f"http://127.0.0.1:{port}/") == (200, "version two\n")

    # A redeploy that fails to build: the old version keeps serving and the app stays running.
    make_repo(repo, "broken\n", dockerfile_extra="RUN exit 3\n")
    _, job = client.deploy(body)
    assert job["status"] == "failed" and job["failed_step"] == "build", job
    status = client.status(name)
    assert status["state"] == "running"
    assert status["commit"] == second
    assert status["last_deploy"]["status"] == "failed" and status["last_deploy"]["failed_step"] == "build"
    assert "failed at step 'build'" in status["last_deploy"]["message"]
    assert fetch(f"http://127.0.0.1:{port}/") == (200, "version two\n")

    # Delete: gone from the API and from the host.
    response = client.delete(f"/apps/{name}")
    assert response.status_code == 202
    assert client.wait_job(response.json()["job"]["id"])["status"] == "succeeded"
    assert client.get(f"/apps/{name}/status").status_code == 404
    assert name not in [a["name"] for a in client.get("/apps").json()["apps"]]
    assert docker("ps", "--all", "--quiet", "--filter", f"label=paas.app={name}") == ""
    assert not Path(f"/var/lib/paas/apps/{name}").exists()
    assert client.delete(f"/apps/{name}").status_code == 404


def test_failed_first_deploy_is_failed_with_its_step_and_log(
    client: Client, tmp_path: Path, app_names: list[str]
) -> None:
    name = unique_name("crash")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, cmd='["sh", "-c", "echo booting; echo cannot-start-marker >&2; exit 7"]')
    body = {"name": name, "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    _, job = client.deploy(body)
    assert job["status"] == "failed" and job["failed_step"] == "start", job
    status = client.status(name)
    assert status["state"] == "failed"
    assert status["commit"] is None
    assert status["last_deploy"]["failed_step"] == "start"
    assert "cannot-start-marker" in status["last_deploy"]["message"]
    assert "(the container exited with code 7)" in status["last_deploy"]["message"]


def test_failed_first_deploy_at_clone(client: Client, tmp_path: Path, app_names: list[str]) -> None:
    name = unique_name("noclone")
    app_names.append(name)
    body = {"name": name, "repo": f"file://{tmp_path}/missing", "port": free_port(), "container_port": 5000}
    _, job = client.deploy(body)
    assert job["status"] == "failed" and job["failed_step"] == "clone", job
    assert client.status(name)["state"] == "failed"


def test_concurrent_deploys_over_five_apps(client: Client, tmp_path: Path, app_names: list[str]) -> None:
    """10 deploys at once over 5 apps: every job ends, each app runs its last deploy, nothing lost."""
    repo = tmp_path / "repo"
    make_repo(repo, "shared\n")
    apps = [(unique_name(f"c{i}"), free_port()) for i in range(5)]
    app_names.extend(name for name, _ in apps)
    bodies = [
        {"name": name, "repo": f"file://{repo}", "port": port, "container_port": 5000}
        for _ in range(2)
        for name, port in apps
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda b: client.post("/apps/deploy", b), bodies))
    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    jobs = [r.json()["job"]["id"] for r in responses]
    assert len(set(jobs)) == 10
    finished = [client.wait_job(j, timeout=600) for j in jobs]
    # A deploy still queued when the app's next one came is superseded by it (never run).
    outcomes = [(j["app"], j["status"], j["started_at"], j["message"]) for j in finished]
    assert all(j["status"] == "succeeded" or not j["started_at"] for j in finished), outcomes
    assert all(j["status"] in ("succeeded", "canceled") for j in finished), outcomes
    for name, port in apps:
        mine = [j for j in finished if j["app"] == name]
        assert len(mine) == 2
        done = [j for j in mine if j["status"] == "succeeded"]
        if len(done) == 2:
            # Jobs of one app ran one after the other.
            first, second = sorted(mine, key=lambda j: j["started_at"])
            assert first["finished_at"] <= second["started_at"]
        else:
            (superseded,) = [j for j in mine if j["status"] == "canceled"]
            assert superseded["message"] == f"superseded by {done[0]['id']}"
        status = client.status(name)
        assert status["state"] == "running"
        assert status["last_deploy"]["job_id"] in {j["id"] for j in done}
        assert fetch(f"http://127.0.0.1:{port}/") == (200, "shared\n")
    listed = {a["name"] for a in client.get("/apps").json()["apps"]}
    assert {name for name, _ in apps} <= listed
    for name, _ in apps:
        assert client.wait_job(client.delete(f"/apps/{name}").json()["job"]["id"])["status"] == "succeeded"


ROUTES = [
    ("GET", "/apps"),
    ("POST", "/apps/deploy"),
    ("GET", "/apps/x/status"),
    ("DELETE", "/apps/x"),
    ("GET", "/infra"),
    ("POST", "/infra/provision"),
    ("POST", "/infra/destroy"),
    ("GET", "/jobs/" + "0" * 32),
    ("POST", "/jobs/" + "0" * 32 + "/cancel"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_but_healthz_needs_the_token(client: Client, method: str, path: str) -> None:
    for token in ("", "wrong-token", client.token + "x", client.token[:-1]):
        response = client.request(
            method, path, token=token, json={"force": True} if method == "POST" else None
        )
        assert response.status_code == 401, (token, response.text)
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"] == "unauthorized"
    assert client.request("GET", "/healthz", token="").status_code == 200


HOSTILE: list[Any] = [
    {"name": "; rm -rf /"},
    {"name": "$(touch /tmp/pwned)"},
    {"name": "../../etc"},
    {"name": "../../tmp/pwned"},
    {"repo": "--upload-pack=touch /tmp/pwned"},
    {"repo": "ext::sh -c touch% /tmp/pwned"},
    {"repo": "file:///tmp/x; touch /tmp/pwned"},
    {"repo": "$(touch /tmp/pwned)"},
    {"repo": "-c core.sshCommand=touch${IFS}/tmp/pwned"},
    {"ref": "--upload-pack=touch /tmp/pwned"},
    {"ref": "$(touch /tmp/pwned)"},
    {"ref": "main; touch /tmp/pwned"},
    {"ref": "../../../../tmp/pwned"},
    {"context": "../../../../tmp"},
    {"context": "/etc"},
    {"health_path": "/; touch /tmp/pwned"},
    {"health_path": "/$(touch /tmp/pwned)"},
    {"env": {"A; touch /tmp/pwned": "x"}},
    {"env": {"$(touch /tmp/pwned)": "x"}},
    {"env": {"A": {"nested": "x"}}},
    {"port": "8080; touch /tmp/pwned"},
    {"port": 62000},
    {"port": 22},
    {"container_port": [5000]},
    {"name": ["a"]},
    {"extra": "$(touch /tmp/pwned)"},
]


def test_hostile_payloads_change_nothing(server: Server, client: Client, tmp_path: Path) -> None:
    pwned = Path("/tmp/pwned")
    pwned.unlink(missing_ok=True)
    repo = tmp_path / "repo"
    make_repo(repo)
    good = {"name": "hostile", "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    apps_before = _app_dirs()
    targets = _paths_named_by(good, HOSTILE)
    targets_before = {p for p in targets if p.exists()}
    artifacts_before = sorted(p.name for p in (server.data_dir / "artifacts").glob("*"))
    for change in HOSTILE:
        response = client.post("/apps/deploy", good | change)
        assert response.status_code == 400, (change, response.text)
        body = response.json()
        assert body["error"] == "invalid" and body["fields"], body
    raw_cases = [
        (b"{" * 5000, "application/json", 400),
        (b'{"name": "x", "repo": ' + b'"' + b"a" * 70000 + b'"}', "application/json", 413),
        (b"name=x&repo=y", "application/x-www-form-urlencoded", 415),
        (b"\x00\xff\xfe", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"null", "application/json", 400),
    ]
    for raw, content_type, expected in raw_cases:
        response = client.request("POST", "/apps/deploy", data=raw, headers={"Content-Type": content_type})
        assert response.status_code == expected, (raw[:40], response.text)
        assert response.headers["Content-Type"] == "application/json"
    for path in ("/apps/..%2F..%2Fetc/status", "/apps/%3Brm%20-rf/status", "/jobs/..%2F..%2Fetc%2Fpasswd"):
        response = client.get(path)
        assert response.status_code == 404 and response.headers["Content-Type"] == "application/json"
    # Nothing happened: no file, no job, no app, no container.
    assert not pwned.exists()
    assert sorted(p.name for p in (server.data_dir / "artifacts").glob("*")) == artifacts_before
    assert "hostile" not in [a["name"] for a in client.get("/apps").json()["apps"]]
    # Nothing where a deploy of any of those names would have written (traversals resolved), and no new
    # app dir but well-formed names other than ours (other suites on this machine may deploy meanwhile).
    assert {p for p in targets if p.exists()} == targets_before
    new_dirs = _app_dirs() - apps_before
    assert {n for n in new_dirs if n == good["name"] or not APP_NAME.fullmatch(n)} == set(), new_dirs
    assert docker("ps", "--all", "--quiet", "--filter", "label=paas.app=hostile") == ""


APPS_ROOT = Path("/var/lib/paas/apps")
APP_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")


def _app_dirs() -> set[str]:
    return {p.name for p in APPS_ROOT.iterdir()} if APPS_ROOT.is_dir() else set()


def _paths_named_by(good: dict[str, Any], changes: list[Any]) -> set[Path]:
    """Where the engine would have put the files of each app name sent (``../`` resolved)."""
    names = [good["name"], *(c["name"] for c in changes if isinstance(c.get("name"), str))]
    return {Path(os.path.normpath(APPS_ROOT / name)) for name in names}


def test_server_errors_are_json(client: Client) -> None:
    for method, path in (("PUT", "/apps"), ("GET", "/apps/deploy"), ("GET", "/nope"), ("PATCH", "/jobs/x")):
        response = client.request(method, path)
        assert response.status_code in (404, 405)
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()) == {"error", "message", "fields"}
