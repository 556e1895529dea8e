"""Request data is data, never code: attacks of a token holder through the real API (waitress,
ansible-runner, dockerd, nginx). A marker file proves that nothing ran; a sentinel proves that no
secret leaks to the data dir, the server's log or any answer."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import api_fixtures
from support.api_fixtures import Client, Server, docker, free_port, git, make_repo, unique_name, wait_until

app_names = api_fixtures.app_names
base_image = api_fixtures.base_image

pytestmark = pytest.mark.integration

MARKER_DIR = Path("/tmp/paas-injection")
# The server's own environment holds a secret unrelated to Mini PaaS: it must reach no artifact.
SERVER_SENTINEL = "srv-sentinel-" + uuid.uuid4().hex


def payloads(marker: Path) -> list[str]:
    """Jinja that would create ``marker`` if anything templated it (expression, statement, comment)."""
    return [
        f"{{{{ lookup('pipe', 'touch {marker}') }}}}",
        f"{{% set x = lookup('pipe', 'touch {marker}') %}}",
        f"{{# {{{{ lookup('pipe', 'touch {marker}') }}}} #}}",
        f"{{{{ query('pipe', 'touch {marker}') }}}}x",
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("paas-security") / "data",
        env={"PAAS_WORKERS": "2", "MY_DB_PASS": SERVER_SENTINEL},
    ).start()
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


@pytest.fixture
def client(server: Server) -> Client:
    return server.client


@pytest.fixture
def marker() -> Iterator[Path]:
    MARKER_DIR.mkdir(exist_ok=True)
    path = MARKER_DIR / uuid.uuid4().hex
    yield path
    path.unlink(missing_ok=True)


def test_jinja_in_fields_that_cannot_hold_it_is_refused_and_runs_nothing(
    client: Client, tmp_path: Path, marker: Path
) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    good = {"name": unique_name("inj"), "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    for payload in payloads(marker):
        for change, field in (
            ({"name": payload}, "name"),
            ({"repo": f"https://example.com/{payload}"}, "repo"),
            ({"repo": f"file://{repo}/{payload}"}, "repo"),
            ({"ref": payload}, "ref"),
            ({"health_path": "/" + payload}, "health_path"),
            ({"context": payload}, "context"),
            ({"env": {payload: "x"}}, "env"),
            ({"resources": {"memory": payload}}, "resources.memory"),
        ):
            response = client.post("/apps/deploy", good | change)
            assert response.status_code == 400, (change, response.text)
            assert field in response.json()["fields"], (change, response.json())
    # Terraform variables: the module refuses the value at plan, and nothing templates it on the way.
    response = client.post(
        "/infra/provision", {"environment": "local", "variables": {"host_name": payloads(marker)[0]}}
    )
    assert response.status_code == 202, response.text
    job = client.wait_job(response.json()["job"]["id"], timeout=300)
    assert job["status"] == "failed", job
    assert not marker.exists()


def test_template_syntax_in_env_values_is_deployed_byte_for_byte(
    client: Client, tmp_path: Path, marker: Path, app_names: list[str]
) -> None:
    name = unique_name("lit")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo)
    secret = "Zq{#S3c{{ret}}%}Pw"
    env = {
        "SECRET": secret,
        "OLD_PASSWORD": "Zq{#S3cretPw",
        **{f"P{i}": p for i, p in enumerate(payloads(marker))},
    }
    _, job = client.deploy(
        {"name": name, "repo": f"file://{repo}", "port": free_port(), "container_port": 5000, "env": env}
    )
    assert job["status"] == "succeeded", job
    inside = docker("exec", f"paas-{name}-blue", "env")
    lines = set(inside.splitlines())
    for key, value in env.items():
        assert f"{key}={value}" in lines, (key, inside)
    assert not marker.exists()


def test_no_sentinel_in_the_data_dir_the_log_or_any_answer(
    server: Server, client: Client, tmp_path: Path, app_names: list[str]
) -> None:
    sentinel = "app-sentinel-" + uuid.uuid4().hex
    name = unique_name("snt")
    app_names.append(name)
    repo = tmp_path / "repo"
    make_repo(repo, "sentinel app\n")
    body = {
        "name": name,
        "repo": f"file://{repo}",
        "port": free_port(),
        "container_port": 5000,
        "env": {"DB_PASSWORD": sentinel, "MODE": "x"},
    }
    # A good deploy.
    _, job = client.deploy(body)
    assert job["status"] == "succeeded", job
    assert sentinel in docker("inspect", "--format", "{{json .Config.Env}}", f"paas-{name}-blue")
    # A failing deploy of an app that prints its environment when it crashes.
    make_repo(repo, "broken\n", cmd='["sh", "-c", "env; echo crashing; exit 3"]')
    _, job = client.deploy(body)
    assert job["status"] == "failed" and job["failed_step"] == "start", job
    assert "DB_PASSWORD=***" in job["message"] and "crashing" in job["message"], job["message"]
    # A canceled deploy (cancelled while it builds).
    make_repo(repo, "slow\n", dockerfile_extra="RUN sleep 20\n")
    accepted = client.post("/apps/deploy", body).json()
    job_id = accepted["job"]["id"]
    wait_until(lambda: client.job(job_id)["status"] == "running", 60, what="the deploy to run")
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 202
    assert client.wait_job(job_id)["status"] == "canceled"
    for path in (f"/jobs/{job_id}", f"/apps/{name}/status", "/apps", "/infra"):
        assert client.get(path).status_code == 200
    # Neither the app's secret, nor a secret of the server's environment, nor the API token.
    for secret in (sentinel, SERVER_SENTINEL, server.token):
        found = subprocess.run(
            ["grep", "-rlaF", "--", secret, str(server.data_dir), str(server.log_path)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert found == "", found
        assert not any(secret in text for text in client.responses)
    # The grep does look: the data dir holds the runs' records (their command files among them); the
    # variables files are gone.
    assert list(server.data_dir.glob("artifacts/*/artifacts/*/command"))
    assert not list(server.data_dir.glob("artifacts/*/vars.yml"))


def _no_file_repos_server(tmp_path: Path, **env: str) -> Server:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Server(tmp_path / "data", env={"PAAS_ALLOW_FILE_REPOS": "", "PAAS_FILE_REPO_ROOTS": "", **env})


def test_file_repos_only_when_enabled_and_under_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    (root / "app").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    body: dict[str, Any] = {"name": "filerepo", "port": free_port(), "container_port": 5000}

    closed = _no_file_repos_server(tmp_path / "closed").start()
    try:
        response = closed.client.post("/apps/deploy", body | {"repo": f"file://{root}/app"})
        assert response.status_code == 400 and "PAAS_ALLOW_FILE_REPOS" in response.json()["fields"]["repo"]
    finally:
        assert closed.stop() == 0

    opened = _no_file_repos_server(
        tmp_path / "open",
        PAAS_ALLOW_FILE_REPOS="1",
        PAAS_FILE_REPO_ROOTS=f"{root}:/nonexistent",
        PAAS_REPO_HOSTS="git.example.com",
    ).start()
    try:
        for repo in (f"file://{tmp_path}/outside", f"file://{root}/link", f"file://{root}/app/../../outside"):
            response = opened.client.post("/apps/deploy", body | {"repo": repo})
            assert response.status_code == 400, (repo, response.text)
            assert "PAAS_FILE_REPO_ROOTS" in response.json()["fields"]["repo"]
        response = opened.client.post("/apps/deploy", body | {"repo": "https://github.com/org/app.git"})
        assert response.status_code == 400 and "PAAS_REPO_HOSTS" in response.json()["fields"]["repo"]
        assert opened.client.get("/apps").json()["apps"] == []
    finally:
        assert opened.stop() == 0


def test_submodules_never_use_the_file_transport(
    client: Client, tmp_path: Path, app_names: list[str]
) -> None:
    """An app repository cannot pull another repository of the host into its build."""
    private = tmp_path / "private"
    make_repo(private, "the host's private code\n")
    repo = tmp_path / "repo"
    make_repo(repo)
    git(
        repo, "-c", "protocol.file.allow=always", "submodule", "add", "--quiet", f"file://{private}", "stolen"
    )
    git(repo, "commit", "--quiet", "-m", "add a submodule")
    name = unique_name("sub")
    app_names.append(name)
    _, job = client.deploy(
        {"name": name, "repo": f"file://{repo}", "port": free_port(), "container_port": 5000}
    )
    assert job["status"] == "failed" and job["failed_step"] == "clone", job
    assert "transport 'file' not allowed" in job["message"], job["message"]
    assert not list(Path("/var/lib/paas/apps", name).glob("src/stolen/*"))
