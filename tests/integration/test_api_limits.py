"""Hostile clients against a real server process (waitress): idle connections do not lock others out,
a stalled client is disconnected after PAAS_HTTP_TIMEOUT, a body over 1 MiB is refused before it is
read, and a generated token never shows in the server's output. No Docker needed."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.api_fixtures import Server
from support.components import require

pytestmark = pytest.mark.integration

IDLE_CONNECTIONS = 150  # more than waitress's default connection_limit (100)
MANY_CONNECTIONS = 1100  # descriptors past 1023: what select() cannot watch
LIMIT_MESSAGE = "reached the connection limit"


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=60)


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to the server that send nothing."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def timed_get(server: Server, path: str = "/apps", timeout: float = 10) -> tuple[int, float]:
    """(status, seconds) of a request on a new connection."""
    began = time.monotonic()
    response = requests.get(
        f"http://127.0.0.1:{server.port}{path}",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=timeout,
    )
    return response.status_code, time.monotonic() - began


def read_head(sock: socket.socket, timeout: float) -> bytes:
    """The status line and headers the server sent (b"" if it closed first)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends)."""
    began = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - began


def file_modes(root: Path) -> dict[str, int]:
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in (root, *root.rglob("*"))}


def test_idle_connections_do_not_lock_others_out(tmp_path: Path) -> None:
    with (
        running(Server(tmp_path / "data")) as server,
        idle_connections(server.port, IDLE_CONNECTIONS) as idle,
    ):
        status, seconds = timed_get(server)
        assert status == 200 and seconds < 2, seconds
        # The last idle connection was accepted too: a request on it is answered at once.
        idle[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_head(idle[-1], 2).startswith(b"HTTP/1.1 200")
    assert LIMIT_MESSAGE not in server.log()


def test_connections_past_descriptor_1023_are_served(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MANY_CONNECTIONS + 100
    if soft != resource.RLIM_INFINITY and soft < wanted:
        require(
            hard == resource.RLIM_INFINITY or hard >= wanted,
            f"a hard limit of open files of {wanted} or more (it is {hard})",
            f"raise it (ulimit -Hn {wanted}, or LimitNOFILE= of the CI job's unit)",
        )
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        env = {"PAAS_HTTP_CONNECTIONS": "1500"}
        with (
            running(Server(tmp_path / "data", env=env)) as server,
            idle_connections(server.port, MANY_CONNECTIONS) as idle,
        ):
            status, seconds = timed_get(server)
            assert status == 200 and seconds < 2, seconds
            idle[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_head(idle[-1], 2).startswith(b"HTTP/1.1 200")
        assert "Traceback" not in server.log()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_at_the_connection_limit_idle_connections_are_closed_after_the_timeout(tmp_path: Path) -> None:
    """What 101 idle clients did to the old defaults (100 connections, 120 s timeout), made short: new
    clients wait until the idle connections time out, then are served."""
    env = {"PAAS_HTTP_CONNECTIONS": "100", "PAAS_HTTP_TIMEOUT": "2"}
    with (
        running(Server(tmp_path / "data", env=env)) as server,
        idle_connections(server.port, IDLE_CONNECTIONS),
    ):
        status, seconds = timed_get(server)
        assert status == 200 and 1.5 < seconds < 6, seconds
    assert LIMIT_MESSAGE in server.log()


def test_a_stalled_client_is_disconnected_after_the_timeout(tmp_path: Path) -> None:
    with running(Server(tmp_path / "data", env={"PAAS_HTTP_TIMEOUT": "2"})) as server:
        half = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        kept = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with half, kept:
            half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of the headers
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_head(kept, 2).startswith(b"HTTP/1.1 200")  # then a keep-alive connection, idle
            began = time.monotonic()
            wait_closed(half, 8)
            half_seconds = time.monotonic() - began
            wait_closed(kept, 8)
            kept_seconds = time.monotonic() - began
        assert 1.5 < half_seconds < 4 and 1.5 < kept_seconds < 4, (half_seconds, kept_seconds)
        assert timed_get(server)[0] == 200


def test_a_body_over_1_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    with running(Server(tmp_path / "data")) as server:
        auth = f"Authorization: Bearer {server.token}\r\n".encode()
        head = b"POST /apps/deploy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + auth
        # Content-Length over the limit: the answer comes before a byte of the body is sent.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + b"Content-Length: 2097152\r\n\r\n")
            answer = read_head(sock, 2)
            assert answer.startswith(b"HTTP/1.1 413"), answer
            assert wait_closed(sock, 2) < 2
        # Chunked: refused once the body passes 1 MiB, while the client is still sending.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
            sent = 0
            while sent < 4 * 1024 * 1024 and not select.select([sock], [], [], 0.01)[0]:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(chunk)
                sent += 64 * 1024
            answer = read_head(sock, 2)
            assert answer.startswith(b"HTTP/1.1 413"), (sent, answer)
            assert sent < 4 * 1024 * 1024
        # Between the API's 64 KiB and 1 MiB: the API reads it and answers in JSON.
        response = requests.post(
            f"http://127.0.0.1:{server.port}/apps/deploy",
            data=b"{" + b" " * 200 * 1024 + b"}",
            headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
        assert timed_get(server)[0] == 200


def test_a_generated_token_never_shows_in_the_output(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # looser than it should be: tightened at start
    with running(Server(data, set_token=False)) as server:
        token = server.token
        assert len(token) >= 32
        assert timed_get(server)[0] == 200
        refused = requests.get(
            f"http://127.0.0.1:{server.port}/apps",
            headers={"Authorization": f"Bearer {token[:-1]}"},
            timeout=10,
        )
        assert refused.status_code == 401 and token not in refused.text
        invalid = requests.post(
            f"http://127.0.0.1:{server.port}/apps/deploy",
            json={"name": token},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert invalid.status_code == 400
    log = server.log()
    assert str(data / "api-token") in log  # where the token is, printed once
    assert "tightened to 0700" in log
    # The deploy body above named the token as an app name: that may show, nothing else may.
    assert token not in log.replace(f"'{token}'", "")
    modes = file_modes(data)
    assert modes[str(data)] == 0o700 and modes[str(data / "api-token")] == 0o600
    assert {p: oct(m) for p, m in modes.items() if m & 0o077} == {}

    # Generated at the first start only: a second start (same data dir, same log file) uses the same
    # token, leaves its file alone and says nothing more about it.
    token_file = (data / "api-token").stat()
    with running(Server(data, set_token=False)) as again:
        assert again.token == token
        assert timed_get(again)[0] == 200
    assert (data / "api-token").stat().st_ino == token_file.st_ino
    assert (data / "api-token").stat().st_mtime_ns == token_file.st_mtime_ns
    log = again.log()
    assert log.count("serving on http://") == 2  # both starts are in it
    assert log.count(str(data / "api-token")) == 1  # the path, printed once
    assert token not in log.replace(f"'{token}'", "")
