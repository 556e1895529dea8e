"""A throwaway sshd on 127.0.0.1 for the integration tests: it plays a remote server (or an instance),
lets a generated user key in as root, and serves one host key at a time. Its configuration includes
``<workdir>/sshd_config.d/*.conf`` first, as Debian's and Ubuntu's do, and it writes its pid to
``<workdir>/sshd.pid``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def keygen(path: Path) -> str:
    """A new ed25519 key at ``path``; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


class Sshd:
    """An sshd on 127.0.0.1:``port`` that lets ``user_key`` in as root, serving one host key at a time."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.user_key = workdir / "user_key"
        (workdir / "authorized_keys").write_text(keygen(self.user_key) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def host_key(self, name: str) -> str:
        """The public line of host key ``name`` (made on first use)."""
        path = self.workdir / f"host_key_{name}"
        if not path.exists():
            keygen(path)
        return path.with_name(path.name + ".pub").read_text().strip()

    @property
    def config(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def drop_in_dir(self) -> Path:
        return self.workdir / "sshd_config.d"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "sshd.pid"

    def start(self, key_name: str) -> None:
        self.host_key(key_name)
        config = self.config
        self.drop_in_dir.mkdir(exist_ok=True)
        config.write_text(
            f"Include {self.drop_in_dir}/*.conf\n"
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.workdir / f'host_key_{key_name}'}\n"
            f"PidFile {self.pid_file}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "StrictModes no\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        log = (self.workdir / "sshd.log").open("ab")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / "sshd.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise AssertionError("sshd did not listen")

    def stop(self) -> None:
        """Stop the listener and every connection it serves (a reinstalled server drops them all)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for child in children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.proc.terminate()
        self.proc.wait(timeout=10)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (sshd's per-connection processes start sessions of their own)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found
