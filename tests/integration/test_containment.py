"""Apps are contained (issue 7, items 2 and 6) through plain ansible-playbook: real git, dockerd, nginx.

Limits and no-new-privileges in ``docker inspect``, one network per app (app A cannot reach app B's
container port), a context or Dockerfile symlinked out of the checkout refused before dockerd sees a
build, and a hung build stopped at ``app_build_timeout`` with nothing of it left.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.api_fixtures import base_image, docker, free_port, git, unique_name
from support.components import require
from support.engine import deploy_vars, remove, run_playbook, write_app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures(base_image.__name__)]

MIB = 1024 * 1024
# A raw HTTP request for busybox nc (the static busybox's wget crashes).
HTTP_GET = "GET / HTTP/1.0\r\n\r\n"


@dataclass
class App:
    name: str
    port: int
    container: dict[str, Any]

    @property
    def network(self) -> str:
        return f"paas-{self.name}"

    @property
    def address(self) -> str:
        address: str = self.container["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        return address

    @property
    def gateway(self) -> str:
        gateway: str = self.container["NetworkSettings"]["Networks"][self.network]["Gateway"]
        return gateway


def inspect(container: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(docker("inspect", container))[0]
    return info


def serving_container(name: str) -> dict[str, Any]:
    [container] = docker("ps", "--filter", f"label=paas.app={name}", "--format", "{{.Names}}").split()
    return inspect(container)


def ask(container: str, host: str, port: int) -> subprocess.CompletedProcess[str]:
    """An HTTP request from inside ``container`` to ``host:port`` (busybox nc, 2 s timeout)."""
    return subprocess.run(
        ["docker", "exec", "--interactive", container, "nc", "-w", "2", host, str(port)],
        input=HTTP_GET,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def answers(container: str, host: str, port: int, body: str) -> bool:
    """Whether ``host:port`` answers ``body`` to ``container`` (three tries: other tests reload nginx)."""
    for _ in range(3):
        if body in ask(container, host, port).stdout:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[App, App]]:
    """App A deployed with the default limits, app B with its own; both removed afterwards."""
    tmp_path = tmp_path_factory.mktemp("containment")
    names = [unique_name("ct-a"), unique_name("ct-b")]
    extra: list[dict[str, Any]] = [{}, {"app_memory": "64m", "app_cpus": 0.5, "app_pids": 64}]
    apps: list[App] = []
    try:
        for name, limits in zip(names, extra, strict=True):
            repo = tmp_path / name
            write_app(repo, f"{name}\n")
            port = free_port()
            result = run_playbook("deploy.yml", deploy_vars(name, repo, port, **limits), tmp_path)
            assert result.rc == 0, result.stdout[-4000:]
            apps.append(App(name, port, serving_container(name)))
        yield apps[0], apps[1]
    finally:
        for name in names:
            remove(name, tmp_path)
        for name in names:
            assert docker("network", "ls", "--quiet", "--filter", f"name=^paas-{name}$") == ""


def test_default_limits_are_set_on_the_container(two_apps: tuple[App, App]) -> None:
    a, _ = two_apps
    host = a.container["HostConfig"]
    assert host["Memory"] == 512 * MIB
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 512
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["LogConfig"]["Type"] == "json-file"
    assert host["LogConfig"]["Config"] == {"max-file": "3", "max-size": "10m"}


def test_limits_of_the_deploy_are_set_on_the_container(two_apps: tuple[App, App]) -> None:
    _, b = two_apps
    host = b.container["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 * MIB, 500_000_000, 64)
    assert "no-new-privileges" in host["SecurityOpt"]


def test_each_app_is_alone_on_its_network(two_apps: tuple[App, App]) -> None:
    for app in two_apps:
        assert app.container["HostConfig"]["NetworkMode"] == app.network
        assert list(app.container["NetworkSettings"]["Networks"]) == [app.network]


def test_each_app_has_a_subnet_of_its_own_from_the_platforms_pool(two_apps: tuple[App, App]) -> None:
    """Subnets come from app_network_pool, one /28 per app kept in its record, not from Docker's
    default pools (which hold about 30 networks)."""
    pool = ipaddress.IPv4Network("172.30.0.0/16")
    subnets = []
    for app in two_apps:
        network = json.loads(docker("network", "inspect", app.network))[0]
        subnet = ipaddress.IPv4Network(network["IPAM"]["Config"][0]["Subnet"])
        record = json.loads(Path(f"/var/lib/paas/apps/{app.name}/app.json").read_text())
        assert subnet.subnet_of(pool) and subnet.prefixlen == 28, subnet
        assert record["subnet"] == str(subnet)
        assert ipaddress.ip_address(app.address) in subnet
        subnets.append(subnet)
    assert not subnets[0].overlaps(subnets[1])


def test_an_app_cannot_reach_another_apps_container_port(two_apps: tuple[App, App]) -> None:
    a, b = two_apps
    a_name, b_name = a.container["Name"].lstrip("/"), b.container["Name"].lstrip("/")
    # nc works in there: each app reaches its own container port.
    assert answers(a_name, a.address, 5000, f"{a.name}\n")
    # Not the other app's container port, either way.
    for source, target in ((a_name, b), (b_name, a)):
        attempt = ask(source, target.address, 5000)
        assert attempt.returncode != 0 and attempt.stdout == "", attempt
    # Nor its loopback slot port through the host: published on 127.0.0.1 only.
    slot = int(b.container["HostConfig"]["PortBindings"]["5000/tcp"][0]["HostPort"])
    attempt = ask(a_name, a.gateway, slot)
    assert attempt.returncode != 0 and attempt.stdout == "", attempt
    # Its public port (nginx) is the way in.
    assert answers(a_name, a.gateway, b.port, f"{b.name}\n")


def test_an_app_deployed_before_networks_moves_to_its_own(tmp_path: Path) -> None:
    """A serving container on Docker's default bridge, its app network absent (a deploy of an older
    platform): the redeploy releases it onto the network; a rerun then changes nothing."""
    name = unique_name("ct-old")
    repo = tmp_path / "repo"
    write_app(repo, "old platform\n")
    port = free_port()
    try:
        first = run_playbook("deploy.yml", deploy_vars(name, repo, port), tmp_path)
        assert first.rc == 0, first.stdout[-4000:]
        old = serving_container(name)["Name"].lstrip("/")
        docker("network", "connect", "bridge", old)
        docker("network", "disconnect", f"paas-{name}", old)
        docker("network", "rm", f"paas-{name}")

        moved = run_playbook("deploy.yml", deploy_vars(name, repo, port), tmp_path)
        assert moved.rc == 0, moved.stdout[-4000:]
        container = serving_container(name)
        assert container["Name"].lstrip("/") != old
        assert list(container["NetworkSettings"]["Networks"]) == [f"paas-{name}"]

        rerun = run_playbook("deploy.yml", deploy_vars(name, repo, port), tmp_path)
        assert rerun.rc == 0, rerun.stdout[-4000:]
        assert rerun.changed == 0, rerun.stdout[-6000:]
    finally:
        remove(name, tmp_path)


@pytest.mark.parametrize("link", ["context", "dockerfile"])
def test_a_symlink_out_of_the_checkout_fails_the_build_step(link: str, tmp_path: Path) -> None:
    name = unique_name(f"ct-{link[:3]}")
    outside = tmp_path / "outside"
    outside.mkdir()
    # A valid build on its own: only the symlink check can stop it.
    (outside / "Dockerfile").write_text('FROM paas-local/busybox:1\nCMD ["sleep", "600"]\n')
    repo = tmp_path / "repo"
    write_app(repo, "never built\n")
    if link == "context":
        (repo / "app").symlink_to(outside)
        extra = {"app_context": "app"}
        expected = f"the build context /var/lib/paas/apps/{name}/src/app resolves to {outside}, outside"
    else:
        (repo / "Dockerfile").unlink()
        (repo / "Dockerfile").symlink_to(outside / "Dockerfile")
        extra = {}
        expected = (
            f"the Dockerfile Dockerfile resolves to {outside / 'Dockerfile'}, outside the build context"
        )
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "symlink out of the checkout")
    try:
        result = run_playbook("deploy.yml", deploy_vars(name, repo, free_port(), **extra), tmp_path)
        assert result.rc != 0
        message = result.failure_messages[-1]
        assert f"deploy of '{name}' failed at step 'build': app_image: {expected}" in message, message
        assert "nothing was built" in message
        assert docker("images", "--all", "--quiet", f"paas/{name}") == ""
        assert docker("ps", "--all", "--quiet", "--filter", f"label=paas.app={name}") == ""
    finally:
        remove(name, tmp_path)


def test_a_hung_build_is_stopped_and_leaves_nothing(tmp_path: Path) -> None:
    name = unique_name("ct-hang")
    repo = tmp_path / "repo"
    # Each step after the LABEL carries it: its containers and images are found by it.
    write_app(repo, "never built\n", extra=f"LABEL paas.test={name}\nRUN echo {name} && sleep 600\n")
    timeout = 15
    try:
        result = run_playbook(
            "deploy.yml", deploy_vars(name, repo, free_port(), app_build_timeout=timeout), tmp_path
        )
        assert result.rc != 0
        message = result.failure_messages[-1]
        assert (
            f"deploy of '{name}' failed at step 'build': the clone and build took longer than {timeout} s"
            in message
        ), message
        assert "it was stopped, and the containers and images it left were removed" in message
        # The play starts, reserves and clones in a few seconds; then the build gets what is left.
        assert timeout <= result.seconds < timeout + 30, result.seconds
        # Nothing of the build runs or remains: not its step container, not the images it made.
        assert docker("ps", "--all", "--quiet", "--filter", f"label=paas.test={name}") == ""
        assert docker("images", "--all", "--quiet", "--filter", f"label=paas.test={name}") == ""
        assert docker("images", "--all", "--quiet", f"paas/{name}") == ""
        running = subprocess.run(["pgrep", "-f", f"echo {name}"], capture_output=True, check=False)
        assert running.returncode == 1, running.stdout
    finally:
        remove(name, tmp_path)


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    name = unique_name("ct-fail")
    repo = tmp_path / "repo"
    write_app(repo, "never built\n", extra=f"LABEL paas.test={name}\nRUN echo {name} && false\n")
    try:
        result = run_playbook("deploy.yml", deploy_vars(name, repo, free_port()), tmp_path)
        assert result.rc != 0
        message = result.failure_messages[-1]
        assert f"deploy of '{name}' failed at step 'build': app_image: the build of paas/{name}:" in message
        assert "returned a non-zero code: 1" in message, message
        assert "DEPRECATED" not in message, message
        assert docker("ps", "--all", "--quiet", "--filter", f"label=paas.test={name}") == ""
        assert docker("images", "--all", "--quiet", "--filter", f"label=paas.test={name}") == ""
    finally:
        remove(name, tmp_path)


BAD_LIMITS: dict[str, tuple[dict[str, Any], str]] = {
    "memory-unit": ({"app_memory": "512x"}, "app_memory must be a size of at least 6m"),
    "memory-small": ({"app_memory": "5m"}, "app_memory must be a size of at least 6m"),
    "memory-number": ({"app_memory": 536870912}, "app_memory must be a size of at least 6m"),
    "cpus-zero": ({"app_cpus": 0}, "app_cpus must be a number within 0.01-64"),
    "cpus-high": ({"app_cpus": 65}, "app_cpus must be a number within 0.01-64"),
    "cpus-text": ({"app_cpus": "1; rm -rf /"}, "app_cpus must be a number within 0.01-64"),
    "pids-low": ({"app_pids": 15}, "app_pids must be an integer within 16-65536"),
    "pids-high": ({"app_pids": 65537}, "app_pids must be an integer within 16-65536"),
    "build-timeout-zero": ({"app_build_timeout": 0}, "app_build_timeout must be a whole number of seconds"),
}


@pytest.mark.parametrize("case", sorted(BAD_LIMITS))
def test_a_bad_limit_fails_fast_naming_it(case: str, tmp_path: Path) -> None:
    override, message = BAD_LIMITS[case]
    name = unique_name("ct-bad")
    result = run_playbook(
        "deploy.yml", deploy_vars(name, tmp_path / "nowhere", free_port(), **override), tmp_path
    )
    assert result.rc != 0
    assert any(message in m for m in result.failure_messages), (
        result.failure_messages or result.stdout[-3000:]
    )
    assert result.seconds < 15, result.seconds
    assert not Path(f"/var/lib/paas/apps/{name}").exists()


def test_more_cpus_than_the_host_has_fail_the_start_step_naming_it(tmp_path: Path) -> None:
    cpus = int(docker("info", "--format", "{{.NCPU}}")) + 1
    require(
        cpus <= 64, "a host with fewer than 64 CPUs (else every valid app_cpus fits)", "run on such a host"
    )
    name = unique_name("ct-cpus")
    repo = tmp_path / "repo"
    write_app(repo, "too greedy\n")
    try:
        result = run_playbook("deploy.yml", deploy_vars(name, repo, free_port(), app_cpus=cpus), tmp_path)
        assert result.rc != 0
        message = result.failure_messages[-1]
        assert f"deploy of '{name}' failed at step 'start'" in message, message
        assert f"app_container_cpus ({cpus}) is more than the host's {cpus - 1} CPUs" in message, message
        assert docker("ps", "--all", "--quiet", "--filter", f"label=paas.app={name}") == ""
    finally:
        remove(name, tmp_path)


def test_a_hung_clone_fails_the_clone_step_on_time(tmp_path: Path) -> None:
    """A repository server that accepts and then says nothing: the deploy fails at the time limit."""
    name = unique_name("ct-clone")
    timeout = 5
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        repo = f"https://127.0.0.1:{port}/app.git"
        try:
            result = run_playbook(
                "deploy.yml",
                deploy_vars(name, tmp_path, free_port(), app_repo=repo, app_build_timeout=timeout),
                tmp_path,
            )
            assert result.rc != 0
            message = result.failure_messages[-1]
            assert f"deploy of '{name}' failed at step 'clone'" in message, message
            assert f"Timed out after {timeout} second" in message, message
            assert timeout <= result.seconds < timeout + 30, result.seconds
        finally:
            remove(name, tmp_path)
