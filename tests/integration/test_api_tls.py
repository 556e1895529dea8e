"""The API behind TLS: ``playbooks/api-tls.yml`` puts an nginx TLS front, with a self-signed certificate
made at provision time, on a "public" address in front of a real server that listens on 127.0.0.1 only.

127.0.0.2 stands for the host's public address: a loopback address the API does not listen on. The
front's certificate is checked with ``curl --cacert``; plain HTTP sent to the TLS port, and anything
sent to the API's port on the public address, never reaches the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.api_fixtures import REPO, Server, free_port, unique_name, wait_until

pytestmark = pytest.mark.integration

PUBLIC = "127.0.0.2"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
TLS_DIR = Path("/etc/nginx/paas-api-tls")
CONF_DIR = Path("/etc/nginx/conf.d")


@dataclass
class Front:
    server: Server
    name: str
    port: int

    @property
    def cacert(self) -> Path:
        return TLS_DIR / self.name / "cert.pem"

    @property
    def conf(self) -> Path:
        return CONF_DIR / f"paas-api-tls-{self.name}.conf"


def api_tls_playbook(variables: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "playbooks/api-tls.yml", "-e", json.dumps(variables)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl printing the body, then the status code on a line of its own."""
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", "--write-out", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def answer(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    server = Server(tmp_path / "data").start()
    tls = Front(server, unique_name("it"), free_port())
    try:
        run = api_tls_playbook(
            {
                "api_tls_name": tls.name,
                "api_tls_listen_address": PUBLIC,
                "api_tls_listen_port": tls.port,
                "api_tls_upstream": f"http://127.0.0.1:{server.port}",
            }
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        yield tls
    finally:
        removed = api_tls_playbook({"api_tls_name": tls.name, "api_tls_state": "absent"})
        server.stop()
        assert removed.returncode == 0, removed.stdout[-4000:]
        assert not tls.conf.exists()
        assert not (TLS_DIR / tls.name).exists()


def test_the_api_over_tls_with_a_self_signed_certificate(front: Front) -> None:
    url = f"https://{PUBLIC}:{front.port}"
    direct = answer(curl(f"http://127.0.0.1:{front.server.port}/healthz"))
    assert direct[0] == 200
    assert oct(front.cacert.stat().st_mode & 0o777) == "0o644"
    assert oct((front.cacert.parent / "key.pem").stat().st_mode & 0o777) == "0o600"

    # The certificate made on the host names the public address and localhost; curl checks it.
    by_address = wait_until(
        lambda: (r := curl("--cacert", str(front.cacert), f"{url}/healthz")).returncode == 0 and r,
        10,
        what="the TLS front to answer",
    )
    assert answer(by_address) == direct
    by_name = curl(
        "--cacert",
        str(front.cacert),
        "--resolve",
        f"localhost:{front.port}:{PUBLIC}",
        f"https://localhost:{front.port}/healthz",
    )
    assert answer(by_name) == direct
    untrusted = curl(f"{url}/healthz")
    assert untrusted.returncode == 60, untrusted.stderr  # the certificate is not in the system's trust

    # Authenticated calls work through the front; the token still matters.
    token = f"Authorization: Bearer {front.server.token}"
    status, body = answer(curl("--cacert", str(front.cacert), "--header", token, f"{url}/apps"))
    assert status == 200, body
    assert json.loads(body)["apps"] == []
    status, body = answer(curl("--cacert", str(front.cacert), f"{url}/apps"))
    assert status == 401, body

    # The CLI, told the front's URL and to trust its certificate.
    cli = subprocess.run(
        [sys.executable, "-c", "from paas.cli import main; main()", "apps", "--json"],
        env=dict(
            os.environ,
            PAAS_URL=url,
            PAAS_API_TOKEN=front.server.token,
            REQUESTS_CA_BUNDLE=str(front.cacert),
            PYTHONPATH=str(REPO),
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["apps"] == []

    # Plain HTTP on the TLS port gets nginx's 400, not the API's answer.
    status, body = answer(curl(f"http://{PUBLIC}:{front.port}/healthz"))
    assert status == 400
    assert "plain HTTP request was sent to HTTPS port" in body
    assert direct[1] not in body

    # The API itself is not on the public address.
    refused = curl(f"http://{PUBLIC}:{front.server.port}/")
    assert refused.returncode == 7, refused.stdout + refused.stderr  # could not connect
