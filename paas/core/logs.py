"""Logging set-up of the ``paas`` command: the only place that configures handlers.

Library modules only call ``logging.getLogger(__name__)``; the CLI calls :func:`configure` once.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: int | str = logging.INFO) -> None:
    """Send the ``paas`` loggers (and warnings of the libraries) to stderr, one line per record."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError("unknown log level")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("paas").setLevel(level)
    # waitress logs its own errors (and the listening address) under "waitress".
    logging.getLogger("waitress").setLevel(max(level, logging.INFO))
