"""paas.server: the waitress limits it sets, the generated token never printed or logged, the data dir
private (0700, tightened when looser). waitress itself is replaced by a stub that returns at once."""

from __future__ import annotations

import logging
import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paas import server
from paas.core.config import Settings, load_settings


class StubServer:
    """What :func:`paas.server.serve` needs of waitress's server: it returns from run() at once."""

    effective_port = 8000

    def __init__(self) -> None:
        self.closed = False

    def run(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The keyword arguments :func:`serve` gave waitress's ``create_server``."""
    seen: dict[str, Any] = {}

    def create_server(app: Any, **kwargs: Any) -> StubServer:
        seen.update(kwargs)
        return StubServer()

    monkeypatch.setattr(server, "create_server", create_server)
    yield seen


def settings_for(data: Path, **env: str) -> Settings:
    return load_settings({"PAAS_DATA_DIR": str(data), "PAAS_MONITOR_INTERVAL": "0", **env})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_waitress_gets_the_connection_limit_timeout_and_body_limit(
    tmp_path: Path, created: dict[str, Any]
) -> None:
    settings = settings_for(
        tmp_path / "data", PAAS_API_TOKEN="t" * 20, PAAS_HTTP_CONNECTIONS="300", PAAS_HTTP_TIMEOUT="2.5"
    )
    server.serve(settings=settings)
    assert created["connection_limit"] == 300
    assert created["channel_timeout"] == 3  # waitress takes whole seconds: never shorter than asked
    assert created["cleanup_interval"] == 1  # idle connections closed about when their time is up
    # waitress refuses a body of max_request_body_size bytes or more: exactly 1 MiB passes.
    assert created["max_request_body_size"] == 1024 * 1024 + 1
    assert created["asyncore_use_poll"] is True  # select() fails past descriptor 1023


@pytest.mark.parametrize(
    ("soft", "hard", "raised_to", "fit"),
    [
        (1024, 4096, 1256, 1000),  # raised: the connections fit
        (1024, 1024, None, 768),  # the hard limit is too low: fewer connections
        (4096, 4096, None, 1000),  # enough already
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, None, 1000),
    ],
)
def test_the_open_files_limit_fits_the_connections(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, raised_to: int | None, fit: int
) -> None:
    raised: list[int] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, hard))

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        if limits[0] > hard:
            raise ValueError("over the hard limit")
        raised.append(limits[0])

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert server.fit_open_files(1000) == fit
    assert raised == ([raised_to] if raised_to else [])


def test_defaults_are_above_waitress_defaults(tmp_path: Path, created: dict[str, Any]) -> None:
    server.serve(settings=settings_for(tmp_path / "data", PAAS_API_TOKEN="t" * 20))
    # waitress's own default of 100 connections let 101 idle clients lock everyone out.
    assert created["connection_limit"] == 1000
    assert created["channel_timeout"] == 30


def test_a_generated_token_is_never_printed_or_logged(
    tmp_path: Path,
    created: dict[str, Any],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path / "data")
    server.serve(settings=settings)
    token = settings.token_path.read_text().strip()
    assert len(token) >= 32
    out, err = capfd.readouterr()
    assert token not in out and token not in err and token not in caplog.text
    assert str(settings.token_path) in err  # where to find it
    assert mode(settings.token_path) == 0o600
    # A second start reuses the token and says nothing about it.
    server.serve(settings=settings)
    out, err = capfd.readouterr()
    assert token not in out + err + caplog.text
    assert settings.token_path.read_text().strip() == token


def test_the_data_dir_is_created_private(tmp_path: Path, created: dict[str, Any]) -> None:
    previous = os.umask(0o022)
    try:
        data = tmp_path / "new" / "data"
        server.serve(settings=settings_for(data))
    finally:
        os.umask(previous)
    assert mode(data) == 0o700 and mode(data / "artifacts") == 0o700
    # Nothing the server wrote at start is readable by the group or others.
    for path in [data, *data.rglob("*")]:
        assert mode(path) & 0o077 == 0, f"{path} is mode {mode(path):04o}"


def test_a_looser_data_dir_is_tightened(
    tmp_path: Path, created: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    (data / "artifacts").mkdir(parents=True)
    for path in (data, data / "artifacts"):
        path.chmod(0o755)
    server.serve(settings=settings_for(data, PAAS_API_TOKEN="t" * 20))
    assert mode(data) == 0o700 and mode(data / "artifacts") == 0o700
    assert f"{data} was mode 0755: tightened to 0700" in caplog.text
