"""Stand-in for the API in the api_tls Molecule scenario: plain HTTP on 127.0.0.1.

Every request is answered with JSON describing what arrived (method, path, headers, body size);
``GET /seen`` lists the paths of every request received so far, so the scenario can prove that a
request never reached it. Usage: ``upstream.py PORT``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN: list[str] = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "api-tls-molecule-upstream"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/seen":
            with LOCK:
                reply: object = list(SEEN)
        else:
            with LOCK:
                SEEN.append(self.path)
            reply = {
                "service": "api-tls-molecule",
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": len(body),
            }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()


if __name__ == "__main__":
    main()
