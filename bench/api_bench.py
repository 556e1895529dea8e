#!/usr/bin/env python3
"""Throughput and tail latency of ``GET /apps`` with 1,000 apps in the database, and the server's RSS.

Starts ``paas serve`` on loopback with a throwaway data dir holding 1,000 app records (written through
the store, as the service writes them), then loads ``GET /apps`` with 64 concurrent connections using
wrk (Debian's ``wrk``). Prints req/s, latency percentiles and the server's resident memory idle and
after the load. Figures, not gates.

    .venv/bin/python bench/api_bench.py [--apps 1000] [--connections 64] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from paas.core.store import Store

TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a throwaway token for a loopback server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed(data_dir: Path, apps: int) -> None:
    store = Store(data_dir / "paas.json")
    at = "2026-11-27T12:00:00+00:00"
    with store.transaction():
        for number in range(apps):
            spec = {
                "repo": f"https://git.example.com/team/app-{number}.git",
                "ref": "main",
                "port": 10000 + number,
                "container_port": 8000,
                "health_path": "/healthz",
                "context": ".",
                "env_keys": ["DATABASE_URL", "SECRET_KEY"],
            }
            store.put_app(
                {
                    "name": f"app-{number:04d}",
                    "state": "running",
                    "created_at": at,
                    "updated_at": at,
                    "desired": spec,
                    "served": {**spec, "commit": f"{number:040x}"},
                    "last_deploy": {
                        "job_id": f"{number:032x}",
                        "status": "succeeded",
                        "started_at": at,
                        "finished_at": at,
                        "failed_step": None,
                        "message": None,
                    },
                    "health": {"checked_at": at, "attempts": [{"code": 200, "latency_ms": 3.2}]},
                    "generation": 1,
                    "deleting": None,
                }
            )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--gzip", action="store_true", help="send Accept-Encoding: gzip, as requests and browsers do"
    )
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("wrk is missing: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="paas-api-bench-") as tmp:
        data = Path(tmp)
        seed(data, args.apps)
        port = free_port()
        env = {
            **os.environ,
            "PAAS_DATA_DIR": str(data),
            "PAAS_API_TOKEN": TOKEN,
            "PAAS_MONITOR_INTERVAL": "0",
        }
        with (data / "server.log").open("w") as log:
            server = subprocess.Popen(  # one request log line per request, as in production
                [sys.executable, "-m", "paas", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
            )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(2)
            idle = rss_mb(server.pid)
            request = urllib.request.Request(f"{url}/apps", headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                size = len(response.read())
            out = subprocess.run(
                [
                    wrk,
                    "-t",
                    "4",
                    "-c",
                    str(args.connections),
                    "-d",
                    f"{args.seconds}s",
                    "--latency",
                    "-H",
                    f"Authorization: Bearer {TOKEN}",
                    *(["-H", "Accept-Encoding: gzip"] if args.gzip else []),
                    f"{url}/apps",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            loaded = rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    print(f"GET /apps, {args.apps} apps ({size / 1024:.0f} KiB per answer), {args.connections} connections, "
          f"{args.seconds} s, wrk on loopback{', gzip' if args.gzip else ''}")  # fmt: skip
    print(f"  requests/s: {rate.group(1) if rate else '?'}")
    for pct in ("50", "90", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        print(f"  p{pct} latency: {found.group(1) if found else '?'}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    print(f"  errors: {errors.group(0) if errors else 'none'}")
    print(f"  server RSS: {idle:.1f} MB idle, {loaded:.1f} MB after the load")


if __name__ == "__main__":
    main()
