"""Run the control plane: waitress (threaded, one process) serving :mod:`paas.api`.

``paas serve`` calls :func:`serve`. SIGTERM or SIGINT stops it gracefully: no new connections, the
requests in flight end, running jobs get ``PAAS_SHUTDOWN_GRACE`` seconds to finish and are then
canceled, queued jobs are canceled, and the database (written through on every change) is closed.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from waitress.server import create_server

from paas.api import create_app
from paas.config import Settings, ensure_token, load_settings

log = logging.getLogger(__name__)

# Bodies above the API's own 64 KiB limit get a JSON 413 from the API; waitress refuses (in plain
# text) only bodies beyond this, so that it never buffers huge uploads.
WAITRESS_BODY_LIMIT = 16 * 1024 * 1024


class _StopRequested(SystemExit):
    """Raised in the main thread by the signal handler; waitress's loop ends on SystemExit."""


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the API on ``host:port`` until SIGTERM or SIGINT."""
    settings = settings or load_settings()
    token, created = ensure_token(settings)
    if created:
        # Printed once, when generated; `paas` clients read it from the file afterwards.
        print(
            f"paas: generated an API token, stored in {settings.token_path} (mode 0600):\n{token}",
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
            max_request_body_size=WAITRESS_BODY_LIMIT,
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
