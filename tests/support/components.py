"""What the integration tests need from the machine, and the one way they ask for it.

A test whose component is missing (terraform, the provider mirror, sshd, moto, ...) is skipped on a
developer's machine, saying what to install; under ``CI=true`` it fails instead, so a CI machine that
lost a component cannot turn a claim of the README into a silent skip. ``.ci/run`` sets ``CI=true``.

Ask in a test with :func:`require`, or for a whole module with a fixture made by :func:`requires`::

    needs = requires(TERRAFORM, OPENSSH_SERVER)  # module-scoped, autouse
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = [
    "ANSIBLE_INVENTORY",
    "AWS_PROVIDER_MIRROR",
    "BUSYBOX_STATIC",
    "DOCKERD",
    "ENGINE",
    "HOST_PYTHON",
    "MOTO",
    "NGINX",
    "OPENSSH_SERVER",
    "PKILL",
    "ROOT",
    "SSH_KEYGEN",
    "TERRAFORM",
    "Component",
    "on_ci",
    "require",
    "requires",
]

VENV_BIN = Path(sys.executable).parent
# The mirror the server finds by itself (paas' KNOWN_MIRRORS, first entry): .ci/run checks the same path.
MIRROR_ROOT = Path("/opt/tf-plugins")
KNOWN_MIRRORS = (
    MIRROR_ROOT,
    Path("/usr/local/share/terraform/plugins"),
    Path("/usr/share/terraform/plugins"),
)


def on_ci() -> bool:
    """Whether this run is CI's (``CI=true``, as CI services and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing(what: str, how: str) -> NoReturn:
    if on_ci():
        pytest.fail(f"CI=true and {what} is missing: {how}", pytrace=False)
    pytest.skip(f"{what} is missing ({how})")


def require(condition: bool, what: str, how: str) -> None:
    """Go on when ``condition`` holds; else skip (locally) or fail (``CI=true``) naming ``what`` and
    ``how`` to get it."""
    if not condition:
        _missing(what, how)


@dataclass(frozen=True)
class Component:
    """Something of the machine a test needs: what it is, how to get it, and whether it is here."""

    what: str
    how: str
    present: Callable[[], bool]

    def require(self) -> None:
        require(self.present(), self.what, self.how)


def requires(*components: Component) -> Any:
    """A module-scoped autouse fixture requiring ``components``: assign it in a test module."""

    @pytest.fixture(scope="module", autouse=True)
    def _components() -> Iterator[None]:
        for component in components:
            component.require()
        yield

    return _components


def _executable(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


def _aws_mirror() -> bool:
    """A filesystem mirror holding hashicorp/aws where the server looks for one."""
    return any(
        any((mirror / "registry.terraform.io" / "hashicorp" / "aws").glob("*/*/terraform-provider-aws*"))
        for mirror in KNOWN_MIRRORS
    )


def _dockerd() -> bool:
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


DOCKERD = Component(
    "a Docker engine that answers `docker info`",
    "apt-get install docker.io, then start it: bash .ci/start-dockerd",
    _dockerd,
)
NGINX = Component(
    "nginx (/usr/sbin/nginx)", "apt-get install nginx", lambda: Path("/usr/sbin/nginx").exists()
)
BUSYBOX_STATIC = Component(
    "Debian's busybox-static (/bin/busybox: the test images are built FROM it, no registry)",
    "apt-get install busybox-static",
    lambda: Path("/bin/busybox").exists(),
)
# What every test of the deploy engine needs (the test images are built on first use).
ENGINE = (DOCKERD, NGINX, BUSYBOX_STATIC)
TERRAFORM = Component(
    "terraform (>= 1.5) on PATH",
    "install it from https://developer.hashicorp.com/terraform/install (HashiCorp's apt repository, or "
    "the release zip into /usr/local/bin)",
    _executable("terraform"),
)
AWS_PROVIDER_MIRROR = Component(
    f"a filesystem mirror of the hashicorp/aws provider ({MIRROR_ROOT}; the tests use no registry)",
    f"run `terraform providers mirror {MIRROR_ROOT}` in terraform/aws/ on a machine with registry access "
    f"and copy {MIRROR_ROOT} here",
    _aws_mirror,
)
MOTO = Component(
    "moto_server (the AWS emulator) in the venv",
    "`make setup` installs it (requirements-dev.txt pins moto[server])",
    lambda: (VENV_BIN / "moto_server").exists(),
)
OPENSSH_SERVER = Component(
    "sshd (/usr/sbin/sshd)",
    "apt-get install openssh-server",
    lambda: Path("/usr/sbin/sshd").exists(),
)
SSH_KEYGEN = Component("ssh-keygen", "apt-get install openssh-client", _executable("ssh-keygen"))
PKILL = Component("pkill", "apt-get install procps", _executable("pkill"))
ROOT = Component(
    "root (the throwaway sshd logs in as root; the engine writes /etc/nginx and /var/lib/paas)",
    "run the integration tests as root",
    lambda: os.geteuid() == 0,
)
HOST_PYTHON = Component(
    "/usr/bin/python3 (the hosts' Python)",
    "apt-get install python3",
    lambda: Path("/usr/bin/python3").exists(),
)
ANSIBLE_INVENTORY = Component(
    "ansible-inventory in the venv",
    "`make setup` installs it (requirements.txt pins ansible-core)",
    lambda: (VENV_BIN / "ansible-inventory").exists(),
)
