"""Claims of README's "How a deploy works" that no other test made fail: deploys at a tag, at a commit
and with a sub-directory context; ``/.paas/upstream`` answered on loopback only; a request in flight
at the switch finished by the old release before it is retired; a failure at step cutover (nginx
rejects the configuration) that removes the new slot and keeps the old one serving.

One app (``app``) serves the first four, redeployed by each test: plain ansible-playbook, real git,
dockerd and nginx. The cutover failure needs an nginx whose configuration can be broken without
breaking this machine's: a private nginx (same binary, own configuration, pid and directories) that
the platform drives through ``app_nginx_conf_dir`` and ``app_proxy_nginx_bin``, behind a real server.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support.api_fixtures import Server, base_image, docker, free_port, git, unique_name, wait_until
from support.engine import (
    Prober,
    deploy_vars,
    get,
    remove,
    run_playbook,
    start_playbook,
    wait_for_body,
    write_app,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures(base_image.__name__)]

HTTPD = '["busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]'
# A CGI of every release: answers "slow <the release's index.html>" once /tmp/go exists in its container.
SLOW_CGI = """#!/bin/sh
while [ ! -e /tmp/go ]; do sleep 0.1; done
printf 'Content-Type: text/plain\\r\\n\\r\\nslow %s\\n' "$(cat /www/index.html)"
"""
# A CGI of every release: the client's address as nginx saw it (nginx sends it as X-Real-IP).
ADDR_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$HTTP_X_REAL_IP"
"""


def write_release(repo: Path, body: str) -> str:
    """A commit serving ``body`` at / from the root context and ``sub <body>`` from context ``sub``, the
    CGIs in both; returns its SHA."""
    for www, text in ((repo / "www", body), (repo / "sub" / "www", f"sub {body}")):
        (www / "cgi-bin").mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text(text)
        for cgi, script in (("slow", SLOW_CGI), ("addr", ADDR_CGI)):
            (www / "cgi-bin" / cgi).write_text(script)
            (www / "cgi-bin" / cgi).chmod(0o755)
    (repo / "sub" / "Dockerfile").write_text(f"FROM paas-local/busybox:1\nCOPY www /www\nCMD {HTTPD}\n")
    return write_app(repo, body)


def containers(name: str, *, running: bool = False) -> list[str]:
    flags = [] if running else ["--all"]
    return docker("ps", *flags, "--filter", f"label=paas.app={name}", "--format", "{{.Names}}").split()


def serving(name: str) -> str:
    [container] = containers(name, running=True)
    return container


def status_line(name: str, tmp_path: Path) -> dict[str, Any]:
    result = run_playbook("status.yml", {"app_name": name}, tmp_path)
    assert result.rc == 0, result.stdout[-3000:]
    [line] = result.status_lines
    return line


@dataclass
class App:
    name: str
    repo: Path
    port: int
    tagged: str  # commit of tag v1.0 (annotated)
    pinned: str  # a commit no branch or tag points at
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def deploy(self, tmp_path: Path, **extra: Any) -> None:
        result = run_playbook("deploy.yml", deploy_vars(self.name, self.repo, self.port, **extra), tmp_path)
        assert result.rc == 0, result.stdout[-4000:]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """Commits ``tagged`` (tag v1.0), ``pinned``, then ``head`` on main; deployed at main."""
    workdir = tmp_path_factory.mktemp("claims")
    repo = workdir / "repo"
    tagged = write_release(repo, "tagged\n")
    git(repo, "tag", "--annotate", "--message", "release 1.0", "v1.0")
    pinned = write_release(repo, "pinned\n")
    write_release(repo, "head\n")
    shared = App(unique_name("claims"), repo, free_port(), tagged, pinned, workdir)
    try:
        shared.deploy(workdir)
        assert get(shared.url) == (200, "head\n")
        yield shared
    finally:
        remove(shared.name, workdir)


def test_a_deploy_at_a_tag_serves_the_tagged_commit(app: App, tmp_path: Path) -> None:
    app.deploy(tmp_path, app_ref="v1.0")
    assert get(app.url) == (200, "tagged\n")
    line = status_line(app.name, tmp_path)
    assert (line["state"], line["commit"]) == ("running", app.tagged)  # the commit, not the tag object
    assert len(containers(app.name)) == 1


def test_a_deploy_at_a_commit_sha_serves_that_commit(app: App, tmp_path: Path) -> None:
    app.deploy(tmp_path, app_ref=app.pinned)
    assert get(app.url) == (200, "pinned\n")
    assert status_line(app.name, tmp_path)["commit"] == app.pinned
    assert len(containers(app.name)) == 1


def test_a_deploy_with_a_sub_directory_context_builds_it(app: App, tmp_path: Path) -> None:
    app.deploy(tmp_path, app_context="sub")
    assert get(app.url) == (200, "sub head\n")
    assert len(containers(app.name)) == 1


def http_from(address: str, port: int, path: str) -> str:
    """The raw answer to ``GET path`` sent to ``address:port`` from ``address``: a connection from an
    address of this machine that is not loopback (nginx sees it as the client's)."""
    with socket.create_connection((address, port), timeout=10, source_address=(address, 0)) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.decode(errors="replace")


def bridge_address(name: str) -> str:
    """This machine's address on the app's Docker network (a bridge it made, never an external one)."""
    info = json.loads(docker("inspect", serving(name)))[0]
    gateway: str = info["NetworkSettings"]["Networks"][f"paas-{name}"]["Gateway"]
    return gateway


def slot_port(name: str) -> str:
    """The loopback port of the serving container, which nginx forwards to."""
    info = json.loads(docker("inspect", serving(name)))[0]
    port: str = info["HostConfig"]["PortBindings"]["5000/tcp"][0]["HostPort"]
    return port


def test_the_upstream_probe_names_the_serving_slot_on_loopback(app: App) -> None:
    assert get(f"{app.url}.paas/upstream") == (200, slot_port(app.name))
    assert get(f"{app.url}cgi-bin/addr") == (200, "127.0.0.1\n")  # nginx sees loopback here
    # Asked as the next test asks: the public port answers, and nginx sees a client that is not on
    # loopback (the bridge's address, or this machine's address Docker's masquerading rule puts instead).
    answer = http_from(bridge_address(app.name), app.port, "/cgi-bin/addr")
    assert answer.startswith("HTTP/1.1 200"), answer
    seen = ipaddress.ip_address(answer.rsplit("\r\n\r\n", 1)[1].strip())
    assert not seen.is_loopback, answer


def test_the_upstream_probe_is_refused_from_another_address(app: App) -> None:
    answer = http_from(bridge_address(app.name), app.port, "/.paas/upstream")
    if not answer.startswith("HTTP/1.1 "):  # not the product's doing: fail, never an expected failure
        pytest.fail(f"no HTTP answer from nginx: {answer!r}")
    assert answer.startswith("HTTP/1.1 403"), answer


def test_a_request_in_flight_at_the_switch_is_finished_by_the_old_release(app: App, tmp_path: Path) -> None:
    old = serving(app.name)
    _, old_body = get(app.url)
    slow: dict[str, Any] = {}

    def slow_request() -> None:
        response = requests.get(f"{app.url}cgi-bin/slow", timeout=120)
        slow.update(status=response.status_code, body=response.text)

    thread = threading.Thread(target=slow_request, daemon=True)
    write_release(app.repo, "drained\n")
    with Prober(app.url) as prober:
        thread.start()
        wait_until(
            lambda: "/bin/sh slow" in docker("top", old),
            10,
            what="the slow request to run in the old release",
        )
        deploy, output = start_playbook("deploy.yml", deploy_vars(app.name, app.repo, app.port), tmp_path)
        try:
            # New requests reach the new release while the slow one is still held by the old one.
            assert wait_for_body(app.url, "drained\n", timeout=180), output.read_text()[-4000:]
            assert not slow, slow
            # The deploy waits for the old nginx workers to finish: the old container still runs.
            assert deploy.poll() is None, output.read_text()[-4000:]
            assert json.loads(docker("inspect", old))[0]["State"]["Running"]
        finally:
            docker("exec", old, "touch", "/tmp/go", check=False)
            thread.join(timeout=60)
            rc = deploy.wait(timeout=120)
    assert rc == 0, output.read_text()[-4000:]
    assert (slow["status"], slow["body"]) == (200, f"slow {old_body}")
    assert prober.failures == []
    assert {b for _, b in prober.results} == {old_body, "drained\n"}
    # Retired once its request was done.
    assert containers(app.name) == [serving(app.name)] and old not in containers(app.name)
    assert get(app.url) == (200, "drained\n")


# ---- a failure at step cutover: a private nginx whose configuration the operator broke ----

NGINX_CONF = """\
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{
    worker_connections 64;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/conf.d/*.conf;
}}
"""


@dataclass
class Nginx:
    dir: Path

    @property
    def bin(self) -> Path:
        return self.dir / "nginx"

    @property
    def conf_dir(self) -> Path:
        return self.dir / "conf.d"

    @property
    def extra_vars(self) -> dict[str, str]:
        """What makes the deploy and remove playbooks drive this nginx."""
        return {"app_nginx_conf_dir": str(self.conf_dir), "app_proxy_nginx_bin": str(self.bin)}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin), *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def private_nginx(tmp_path: Path) -> Iterator[Nginx]:
    nginx = Nginx(tmp_path / "nginx")
    (nginx.dir / "tmp").mkdir(parents=True)
    nginx.conf_dir.mkdir()
    (nginx.dir / "nginx.conf").write_text(NGINX_CONF.format(dir=nginx.dir))
    nginx.bin.write_text(f'#!/bin/sh\nexec /usr/sbin/nginx -c {nginx.dir}/nginx.conf "$@"\n')
    nginx.bin.chmod(0o755)
    started = nginx.run()
    assert started.returncode == 0, started.stderr
    try:
        yield nginx
    finally:
        nginx.run("-s", "quit")
        pid = nginx.dir / "nginx.pid"
        wait_until(lambda: not pid.exists(), 30, what="the private nginx to stop")


def test_a_failure_at_cutover_removes_the_new_slot_and_the_old_one_keeps_serving(
    private_nginx: Nginx, tmp_path: Path
) -> None:
    server = Server(tmp_path / "data", env={"PAAS_EXTRA_VARS": json.dumps(private_nginx.extra_vars)}).start()
    client = server.client
    name = unique_name("cut")
    repo = tmp_path / "repo"
    first = write_app(repo, "before\n")
    port = free_port()
    body = {"name": name, "repo": f"file://{repo}", "port": port, "container_port": 5000}
    url = f"http://127.0.0.1:{port}/"
    conf = private_nginx.conf_dir / f"paas-app-{name}.conf"
    try:
        _, job = client.deploy(body)
        assert job["status"] == "succeeded", job
        assert get(url) == (200, "before\n")
        old = serving(name)
        served_conf = conf.read_text()

        # An operator's broken server block elsewhere in nginx's configuration: `nginx -t` fails, so the
        # switch cannot be validated. The running nginx is not reloaded: it serves on.
        (private_nginx.conf_dir / "00-typo.conf").write_text(
            f"server {{\n    listen 127.0.0.1:{free_port()};\n    proxy_passs http://127.0.0.1:1;\n}}\n"
        )
        assert private_nginx.run("-t").returncode != 0
        write_app(repo, "never served\n")
        with Prober(url) as prober:
            wait_until(lambda: prober.results, 10, what="an answer before the deploy")
            before = len(prober.results)
            _, job = client.deploy(body)
            during = len(prober.results) - before
            after = len(prober.results) + 2  # the next-but-one answer: to a request begun after the job
            wait_until(lambda: len(prober.results) >= after, 10, what="answers after the deploy")
        assert job["status"] == "failed" and job["failed_step"] == "cutover", job
        assert "nginx rejected the config" in job["message"] and "proxy_passs" in job["message"], job

        # The new slot is gone, the old container serves the old release, nothing failed meanwhile.
        assert containers(name) == [old]
        assert during > 0, "the prober made no request during the deploy"
        assert prober.failures == []
        assert {b for _, b in prober.results} == {"before\n"}
        assert get(url) == (200, "before\n")
        assert conf.read_text() == served_conf
        assert sorted(p.name for p in private_nginx.conf_dir.iterdir()) == ["00-typo.conf", conf.name]
        status = client.status(name)
        assert (status["state"], status["commit"]) == ("running", first)
        assert (
            status["last_deploy"]["status"] == "failed" and status["last_deploy"]["failed_step"] == "cutover"
        )
    finally:
        (private_nginx.conf_dir / "00-typo.conf").unlink(missing_ok=True)
        response = client.delete(f"/apps/{name}")
        if response.status_code == 202:
            client.wait_job(response.json()["job"]["id"])
        assert server.stop() == 0, server.log()[-3000:]
        if containers(name):  # the API's removal failed: clean up all the same
            run_playbook("remove.yml", {"app_name": name, **private_nginx.extra_vars}, tmp_path)
    assert containers(name) == [] and not conf.exists()
