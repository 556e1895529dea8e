"""The ``paas`` command: the server (``paas serve``) and a client of its REST API (everything else).

The client finds the API at ``PAAS_URL`` (default ``http://127.0.0.1:8000``) and its token in
``PAAS_API_TOKEN`` or, failing that, in the token file the server generated in the data dir
(``PAAS_DATA_DIR``), so on the server's own machine no setup is needed. Tables for people,
``--json`` for scripts. Exit codes: 0 success, 1 a failed job or an API error, 2 bad usage.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import click

from paas.client import Client
from paas.core import config

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_SECONDS = 0.5
TERMINAL = {"succeeded", "failed", "canceled"}


def _client(ctx: click.Context) -> Client:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "client" not in obj:
        token = obj.get("token")
        if not token:
            try:
                token = config.read_token(config.load_settings())
            except (config.SettingsError, OSError):
                token = None
        obj["client"] = Client(obj.get("url") or DEFAULT_URL, token)
    client: Client = obj["client"]
    return client


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _pairs(values: Iterable[str], option: str) -> dict[str, str]:
    """K=V options into a dict; a value may hold '='."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        result[key] = value
    return result


def _variables(values: Iterable[str]) -> dict[str, Any]:
    """--var K=V options: a value starting with '[' or '{' is JSON (a list or a map), any other is a
    string (Terraform converts "22" or "true" to the variable's type)."""
    result: dict[str, Any] = {}
    for key, value in _pairs(values, "--var").items():
        if value.startswith(("[", "{")):
            try:
                result[key] = json.loads(value)
            except ValueError:
                raise click.BadParameter(f"{key}: {value!r} is not valid JSON", param_hint="--var") from None
        else:
            result[key] = value
    return result


def _short(commit: Any) -> Any:
    return commit[:12] if isinstance(commit, str) else commit


def _show_app(app: Mapping[str, Any]) -> None:
    last = app.get("last_deploy") or {}
    health = app.get("health") or {}
    attempts = health.get("attempts") or []
    rows = [
        ("name", app.get("name")),
        ("state", app.get("state")),
        ("url", app.get("url")),
        ("repo", app.get("repo")),
        ("ref", app.get("ref") or "(default branch)"),
        ("commit", _short(app.get("commit"))),
        ("port", app.get("port")),
        ("container port", app.get("container_port")),
        ("health path", app.get("health_path")),
        ("last deploy", f"{last.get('status', '-')} (job {last.get('job_id', '-')})"),
    ]
    if last.get("failed_step"):
        rows.append(("failed step", last["failed_step"]))
    if attempts:
        last_attempt = attempts[-1]
        rows.append(
            (
                "health",
                f"{last_attempt.get('code')} in {last_attempt.get('latency_ms')} ms "
                f"at {health.get('checked_at')} ({len(attempts)} attempt(s))",
            )
        )
    _table(rows, ("field", "value"))
    if last.get("message") and last.get("status") == "failed":
        click.echo("\n" + str(last["message"]))


def _show_job(job: Mapping[str, Any]) -> None:
    _table(
        [
            ("id", job.get("id")),
            ("kind", job.get("kind")),
            ("app", job.get("app")),
            ("status", job.get("status")),
            ("created", job.get("created_at")),
            ("started", job.get("started_at")),
            ("finished", job.get("finished_at")),
            ("failed step", job.get("failed_step")),
        ],
        ("field", "value"),
    )
    if job.get("message"):
        click.echo("\n" + str(job["message"]))


def _follow(client: Client, job: Mapping[str, Any], as_json: bool) -> NoReturn:
    """Show each task of a job as it happens; exit 0 when it succeeded, 1 otherwise."""
    shown = 0
    job_id = job["id"]
    while True:
        job = client.call("GET", f"/jobs/{job_id}")
        events = job.get("events") or []
        if not as_json:
            for event in events[shown:]:
                click.echo(
                    f"  {event.get('result', ''):<11} {event.get('task', '')}  [{event.get('host', '')}]"
                )
        shown = len(events)
        if job.get("status") in TERMINAL:
            break
        time.sleep(POLL_SECONDS)
    if as_json:
        _print_json(job)
    else:
        click.echo(f"job {job_id} {job['status']}")
        if job["status"] != "succeeded" and job.get("message"):
            click.echo(str(job["message"]), err=True)
    sys.exit(0 if job["status"] == "succeeded" else 1)


def _submitted(client: Client, answer: Mapping[str, Any], what: str, wait: bool, as_json: bool) -> None:
    """Report a job the API accepted: follow it with ``--wait`` (exiting with its outcome), else print it."""
    job = answer["job"]
    if wait:
        if not as_json:
            click.echo(f"{what}: job {job['id']}")
        _follow(client, job, as_json)
    if as_json:
        _print_json(answer)
    else:
        state = f", app {answer['app']['state']}" if "app" in answer else ""
        click.echo(f"{what}: job {job['id']} ({job['status']}){state}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url", envvar="PAAS_URL", default=DEFAULT_URL, show_default=True, help="API base URL (PAAS_URL)."
)
@click.option(
    "--token", envvar="PAAS_API_TOKEN", help="API token (PAAS_API_TOKEN; default: the server's token file)."
)
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None) -> None:
    """Mini PaaS: deploy apps from git to Docker hosts through Ansible."""
    ctx.ensure_object(dict).update(url=url, token=token)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("PAAS_LOG_LEVEL", "INFO"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (PAAS_LOG_LEVEL).",
)
def serve(host: str, port: int, log_level: str) -> None:
    """Run the API server in the foreground (settings from PAAS_* variables)."""
    from paas import server
    from paas.core import logs

    logs.configure(log_level.upper())
    try:
        server.serve(host=host, port=port)
    except config.SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("name")
@click.option("--repo", required=True, help="Git URL (https://, ssh://, user@host:path or file://).")
@click.option("--port", required=True, type=int, help="Public port on the host.")
@click.option("--container-port", required=True, type=int, help="Port the app listens on in its container.")
@click.option("--ref", help="Branch, tag or commit (default: the repository's default branch).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable; repeatable.")
@click.option("--health-path", help="Path probed for health (default /).")
@click.option("--context", help="Directory of the repository holding the Dockerfile (default .).")
@click.option("--memory", help="Memory limit of the container, e.g. 256m or 1g (default: the server's).")
@click.option("--cpus", type=float, help="CPU limit of the container, e.g. 0.5 (default: the server's).")
@click.option("--pids", type=int, help="Process limit of the container (default: the server's).")
@click.option(
    "--wait", is_flag=True, help="Show each task as it happens; exit non-zero when the deploy fails."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def deploy(
    ctx: click.Context,
    name: str,
    repo: str,
    port: int,
    container_port: int,
    ref: str | None,
    env: tuple[str, ...],
    health_path: str | None,
    context: str | None,
    memory: str | None,
    cpus: float | None,
    pids: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Deploy (or redeploy) the app NAME."""
    body: dict[str, Any] = {"name": name, "repo": repo, "port": port, "container_port": container_port}
    if ref is not None:
        body["ref"] = ref
    if env:
        body["env"] = _pairs(env, "--env")
    if health_path is not None:
        body["health_path"] = health_path
    if context is not None:
        body["context"] = context
    resources = {k: v for k, v in (("memory", memory), ("cpus", cpus), ("pids", pids)) if v is not None}
    if resources:
        body["resources"] = resources
    client = _client(ctx)
    answer = client.call("POST", "/apps/deploy", body)
    _submitted(client, answer, f"deploying {name}", wait, as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def apps(ctx: click.Context, as_json: bool) -> None:
    """List the apps."""
    answer = _client(ctx).call("GET", "/apps")
    if as_json:
        _print_json(answer)
        return
    rows = [
        (a.get("name"), a.get("state"), a.get("port"), _short(a.get("commit")), a.get("url"))
        for a in answer.get("apps", [])
    ]
    _table(rows, ("NAME", "STATE", "PORT", "COMMIT", "URL"))


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show the status of the app NAME."""
    answer = _client(ctx).call("GET", f"/apps/{name}/status")
    if as_json:
        _print_json(answer)
    else:
        _show_app(answer)


@main.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the app is removed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def destroy(ctx: click.Context, name: str, wait: bool, as_json: bool) -> None:
    """Remove the app NAME: its containers, images, proxy config and files."""
    client = _client(ctx)
    answer = client.call("DELETE", f"/apps/{name}")
    _submitted(client, answer, f"removing {name}", wait, as_json)


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--cancel", is_flag=True, help="Cancel the job.")
@click.option("--wait", is_flag=True, help="Follow the job until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def job(ctx: click.Context, job_id: str, cancel: bool, wait: bool, as_json: bool) -> None:
    """Show (or cancel, or follow) the job ID."""
    client = _client(ctx)
    answer = (
        client.call("POST", f"/jobs/{job_id}/cancel")["job"]
        if cancel
        else client.call("GET", f"/jobs/{job_id}")
    )
    if wait:
        _follow(client, answer, as_json)
    if as_json:
        _print_json(answer)
    else:
        _show_job(answer)


@main.group()
def infra() -> None:
    """Provision, inspect or destroy the infrastructure the apps run on."""


@infra.command("provision")
@click.option("--environment", help="local, ssh or aws (default: the server's PAAS_ENVIRONMENT).")
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="KEY=VALUE",
    help="Terraform variable; repeatable. A VALUE starting with [ or { is JSON (list, map).",
)
@click.option("--wait", is_flag=True, help="Show each step as it happens; exit non-zero on failure.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def infra_provision(
    ctx: click.Context, environment: str | None, variables: tuple[str, ...], wait: bool, as_json: bool
) -> None:
    """Create (or update) the hosts and prepare them to run apps."""
    body: dict[str, Any] = {}
    if environment:
        body["environment"] = environment
    if variables:
        body["variables"] = _variables(variables)
    client = _client(ctx)
    answer = client.call("POST", "/infra/provision", body)
    _submitted(client, answer, "provisioning", wait, as_json)


@infra.command("destroy")
@click.option("--force", is_flag=True, help="Remove every app first (otherwise refused while apps exist).")
@click.option("--wait", is_flag=True, help="Show each step as it happens; exit non-zero on failure.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def infra_destroy(ctx: click.Context, force: bool, wait: bool, as_json: bool) -> None:
    """Destroy the infrastructure."""
    client = _client(ctx)
    answer = client.call("POST", "/infra/destroy", {"force": True} if force else {})
    _submitted(client, answer, "destroying", wait, as_json)


@infra.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def infra_status(ctx: click.Context, as_json: bool) -> None:
    """Show the infrastructure: environment, state and hosts."""
    answer = _client(ctx).call("GET", "/infra")
    if as_json:
        _print_json(answer)
        return
    click.echo(f"environment {answer.get('environment')}: {answer.get('state')}")
    hosts = answer.get("hosts") or []
    if isinstance(hosts, dict):
        hosts = [{"name": k, **v} for k, v in hosts.items()]
    rows = [
        (h.get("name"), h.get("address"), h.get("port"), h.get("user"), h.get("connection")) for h in hosts
    ]
    if rows:
        _table(rows, ("HOST", "ADDRESS", "PORT", "USER", "CONNECTION"))
    for name, value in sorted((answer.get("outputs") or {}).items()):
        click.echo(f"{name}: {value if isinstance(value, str) else json.dumps(value)}")


if __name__ == "__main__":  # pragma: no cover
    main()
