"""Run the control plane: waitress (threaded, one process) serving :mod:`paas.api.routes`.

``paas serve`` calls :func:`serve`. SIGTERM or SIGINT stops it gracefully: no new connections, the
requests in flight end, running jobs get ``PAAS_SHUTDOWN_GRACE`` seconds to finish and are then
canceled, queued jobs are canceled, and the database (written through on every change) is closed.

Hostile clients are bounded: at most ``PAAS_HTTP_CONNECTIONS`` open connections; a connection on
which nothing arrives for ``PAAS_HTTP_TIMEOUT`` seconds (idle, or stalled in the middle of a request)
is closed; a body over 1 MiB is refused (413) before it is read: on its ``Content-Length`` at once, a
chunked one as soon as it passes the limit. The API's own, smaller limit answers in JSON for bodies up
to 1 MiB.

The data dir is the owner's only (0700, tightened at start when it is looser); the API token is never
printed or logged, only the path of the file it was generated into.
"""

from __future__ import annotations

import logging
import math
import resource
import signal
import stat
import sys
import threading
from types import FrameType
from typing import Any

from waitress.server import create_server

from paas.api.routes import create_app
from paas.core.config import Settings, ensure_token, load_settings

log = logging.getLogger(__name__)

# Bodies above the API's own 64 KiB limit get a JSON 413 from the API; waitress refuses (in plain
# text) bodies beyond this before reading them, so that it never buffers huge uploads.
WAITRESS_BODY_LIMIT = 1024 * 1024
# Seconds between two passes of waitress over its connections to close those idle past the timeout
# (waitress's default, 30, would keep them up to 30 s longer than PAAS_HTTP_TIMEOUT).
CLEANUP_INTERVAL = 1
# File descriptors kept for the server's own use beside its connections (database, artifacts, pipes
# and ptys of running jobs, logs).
FILES_RESERVED = 256


def private_data_dir(settings: Settings) -> None:
    """Create the data dir (and its job artifacts dir) with mode 0700, or tighten them to 0700 when the
    group or others may enter them."""
    for path in (settings.data_dir, settings.artifacts_dir):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o700)
            log.warning("%s was mode %04o: tightened to 0700", path, mode)


def fit_open_files(connections: int) -> int:
    """Raise the soft limit of open files so that ``connections`` sockets fit beside the server's own
    files (up to the hard limit); returns the number of connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FILES_RESERVED
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return connections
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            log.warning("cannot raise the limit of open files from %d to %d", soft, raised)
    if soft >= wanted:
        return connections
    fit = max(1, soft - FILES_RESERVED)
    log.warning(
        "open files are limited to %d (ulimit -n): at most %d connections, not %d (PAAS_HTTP_CONNECTIONS)",
        soft,
        fit,
        connections,
    )
    return fit


class _StopRequested(SystemExit):
    """Raised in the main thread by the signal handler; waitress's loop ends on SystemExit."""


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the API on ``host:port`` until SIGTERM or SIGINT."""
    settings = settings or load_settings()
    private_data_dir(settings)
    token, created = ensure_token(settings)
    if created:
        # The path only: the token itself is never printed (logs are read by more people than the
        # token is meant for). `paas` clients on this machine read the file.
        print(
            f"paas: generated an API token into {settings.token_path} (mode 0600); "
            "clients send it as 'Authorization: Bearer <token>'",
            file=sys.stderr,
            flush=True,
        )
    app = create_app(settings, token=token)
    server: Any = None
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            log.warning("already stopping (signal %d ignored)", signum)
            return
        stopping.set()
        log.info("signal %d: stopping", signum)
        raise _StopRequested(0)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=settings.http_threads,
            ident="paas",
            # waitress refuses a body of this size or more: a body of exactly 1 MiB passes.
            max_request_body_size=WAITRESS_BODY_LIMIT + 1,
            connection_limit=fit_open_files(settings.http_connections),
            channel_timeout=max(1, math.ceil(settings.http_timeout)),
            cleanup_interval=CLEANUP_INTERVAL,
            # poll(), not select(): select() fails on descriptors over 1023, which 1000 connections
            # reach, and that ends waitress's loop (the server) at once.
            asyncore_use_poll=True,
            clear_untrusted_proxy_headers=True,
        )
        log.info("serving on http://%s:%s (data dir %s)", host, server.effective_port, settings.data_dir)
        server.run()
    except _StopRequested:
        pass
    finally:
        try:
            if server is not None:
                server.close()
            log.info("stopped accepting requests; finishing jobs")
            app.close()
            log.info("stopped")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
