"""A small web app for real hosts: a page, a health endpoint, and a visit counter kept in memory."""

import os
import threading

from flask import Flask

app = Flask(__name__)
_lock = threading.Lock()
_visits = 0


@app.get("/")
def index() -> str:
    global _visits
    with _lock:
        _visits += 1
        count = _visits
    greeting = os.environ.get("GREETING", "Hello")
    return f"<h1>{greeting} from Mini PaaS</h1><p>visit {count} to this container</p>\n"


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
