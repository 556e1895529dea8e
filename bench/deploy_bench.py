#!/usr/bin/env python3
"""Deploy timings of Mini PaaS next to the same steps done by hand with git and the docker CLI.

Prints, for one small app on this machine, the median wall time of a first deploy, a no-change
redeploy and a new-commit redeploy through `ansible-playbook playbooks/deploy.yml`, and of the same
blue/green steps typed by hand (git clone/pull, docker build, docker run beside the old container,
poll it, nginx -t and reload, poll the public port, docker rm the old one), as ratios.
Figures, not gates. Needs root, dockerd and nginx (as the integration tests do).

    .venv/bin/python bench/deploy_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
PAAS_PORT, HAND_PORT = 8701, 8702  # public ports
NAME, HAND = "bench-app", "bench-hand"
DOCKERFILE = (
    'FROM paas-local/busybox:1\nCOPY www /www\nCMD ["busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n'
)


def run(*argv: str, cwd: Path | None = None) -> None:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True)


def commit(repo: Path, body: str) -> None:
    (repo / "www").mkdir(parents=True, exist_ok=True)
    (repo / "www" / "index.html").write_text(body)
    (repo / "Dockerfile").write_text(DOCKERFILE)
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    if not (repo / ".git").exists():
        run("git", "init", "--quiet", "--initial-branch=main", str(repo))
    run(*git, "add", "--all")
    run(*git, "commit", "--quiet", "-m", body)


def wait_http(port: int, body: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.read().decode() == body:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never served {body!r}")


def timed(action: Callable[[], None]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


class Paas:
    def __init__(self, repo: Path, workdir: Path) -> None:
        self.vars = workdir / "vars.json"
        self.vars.write_text(
            json.dumps(
                {
                    "app_name": NAME,
                    "app_repo": f"file://{repo}",
                    "app_port": PAAS_PORT,
                    "app_container_port": 5000,
                }
            )
        )

    def deploy(self) -> None:
        run(PLAYBOOK, "playbooks/deploy.yml", "-e", f"@{self.vars}", cwd=REPO)

    def remove(self) -> None:
        run(PLAYBOOK, "playbooks/remove.yml", "-e", f"app_name={NAME}", cwd=REPO)


class ByHand:
    """The same blue/green steps typed by an operator with git, the docker CLI and nginx.

    Clone or pull; build tagged by commit; start the new container beside the serving one on the idle
    loopback port; poll it until it answers; point nginx at it (write the server block, nginx -t,
    reload); poll the public port until it serves the new release; remove the old container.
    """

    SLOTS = (8711, 8712)
    CONF = Path("/etc/nginx/conf.d/bench-hand.conf")

    def __init__(self, repo: Path, workdir: Path) -> None:
        self.repo, self.src = repo, workdir / "hand-src"
        self.active: int | None = None

    def deploy(self, body: str) -> None:
        if self.src.exists():
            run("git", "-C", str(self.src), "pull", "--quiet", "--ff-only")
        else:
            run("git", "clone", "--quiet", str(self.repo), str(self.src))
        sha = subprocess.run(
            ["git", "-C", str(self.src), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        run("docker", "build", "--quiet", "-t", f"bench/hand:{sha}", str(self.src))
        port = self.SLOTS[1] if self.active == self.SLOTS[0] else self.SLOTS[0]
        name = f"{HAND}-{port}"
        run("docker", "rm", "--force", name)
        run("docker", "run", "--detach", "--name", name, "--restart", "unless-stopped", "--init",
            "-p", f"127.0.0.1:{port}:5000", f"bench/hand:{sha}")  # fmt: skip
        wait_http(port, body)
        self.CONF.write_text(
            f"server {{ listen {HAND_PORT}; location / {{ proxy_pass http://127.0.0.1:{port}; }} }}\n"
        )
        run("nginx", "-t", "-q")
        run("nginx", "-s", "reload")
        wait_http(HAND_PORT, body)
        if self.active is not None:
            run("docker", "rm", "--force", f"{HAND}-{self.active}")
        self.active = port

    def remove(self) -> None:
        for port in self.SLOTS:
            subprocess.run(["docker", "rm", "--force", f"{HAND}-{port}"], capture_output=True, check=False)
        self.CONF.unlink(missing_ok=True)
        subprocess.run(["nginx", "-s", "reload"], capture_output=True, check=False)
        images = subprocess.run(
            ["docker", "images", "--quiet", "bench/hand"], capture_output=True, text=True, check=False
        ).stdout.split()
        if images:
            subprocess.run(["docker", "rmi", "--force", *set(images)], capture_output=True, check=False)
        shutil.rmtree(self.src, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    run(str(REPO / "examples/busybox-base/build.sh"))

    rows: dict[str, tuple[list[float], list[float]]] = {
        "first deploy": ([], []),
        "no-change redeploy": ([], []),
        "new-commit redeploy": ([], []),
    }
    for number in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="paas-bench-") as tmp:
            work = Path(tmp)
            repo = work / "repo"
            commit(repo, f"run {number} v1\n")
            paas, hand = Paas(repo, work), ByHand(repo, work)
            try:
                v1, v2 = f"run {number} v1\n", f"run {number} v2\n"
                rows["first deploy"][0].append(timed(paas.deploy))
                rows["first deploy"][1].append(timed(partial(hand.deploy, v1)))
                rows["no-change redeploy"][0].append(timed(paas.deploy))
                rows["no-change redeploy"][1].append(timed(partial(hand.deploy, v1)))
                commit(repo, v2)
                rows["new-commit redeploy"][0].append(timed(paas.deploy))
                rows["new-commit redeploy"][1].append(timed(partial(hand.deploy, v2)))
            finally:
                paas.remove()
                hand.remove()

    print(f"Median of {args.runs} runs, seconds (this machine, one small busybox app)\n")
    print("| step | Mini PaaS | same steps by hand (git, docker CLI, nginx) | ratio |")
    print("|---|---:|---:|---:|")
    for step, (ours, theirs) in rows.items():
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {step} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    print(
        "\nMini PaaS also does what the hand-typed steps skip: input validation, port reservation under a "
        "host lock, a crash check of the new container, recorded probe attempts, nginx drain, rollback on "
        "failure, image pruning, and the comparison that makes a no-change redeploy change nothing."
    )


if __name__ == "__main__":
    main()
