"""The HTTP API: routes and JSON error handlers only; every decision is the service layer's.

Every answer is JSON, errors included (``{"error", "message", "fields"}``): Bottle's own error pages
(HTML) are replaced, unknown exceptions are logged with their traceback and answered with an opaque
500. Every route but ``GET /healthz`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import functools
import gzip
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import bottle

from paas.api.openapi import openapi_document
from paas.core.config import Settings, ensure_token, read_token
from paas.core.errors import (
    AuthenticationError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    PaasError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from paas.core.validation import parse_empty
from paas.execution.commands import CommandExecutor
from paas.execution.runner import AnsibleRunner, Runner
from paas.service import Service

log = logging.getLogger(__name__)

BODY_LIMIT = 64 * 1024
PUBLIC_ROUTES = frozenset({("GET", "/healthz"), ("HEAD", "/healthz")})
JSON_TYPE_RE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
UNPRINTABLE_RE = re.compile(r"[^\x21-\x7e]")

Payload = dict[str, Any] | bytes
Reply = tuple[int, Payload] | tuple[int, Payload, dict[str, str]]


def _response(status: int, payload: Payload, headers: dict[str, str] | None = None) -> bottle.HTTPResponse:
    """A JSON response; ``payload`` may be JSON already serialized (bytes)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":"))
    response = bottle.HTTPResponse(body=body, status=status)
    response.set_header("Content-Type", "application/json")
    response.set_header("Cache-Control", "no-store")
    for name, value in (headers or {}).items():
        response.set_header(name, value)
    return response


def _error(exc: PaasError, headers: dict[str, str] | None = None) -> bottle.HTTPResponse:
    extra = dict(headers or {})
    if exc.status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="paas"')
    if isinstance(exc, TooManyRequestsError):
        extra.setdefault("Retry-After", str(exc.retry_after))
    return _response(exc.status, exc.to_json(), extra)


def _endpoint(func: Callable[..., Reply]) -> Callable[..., bottle.HTTPResponse]:
    """Run a route, turning its reply or its exception into a JSON response."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> bottle.HTTPResponse:
        try:
            reply = func(*args, **kwargs)
        except PaasError as exc:
            return _error(exc)
        except Exception:
            log.exception("unhandled error in %s %s", bottle.request.method, _printable(bottle.request.path))
            return _error(InternalError("internal error"))
        return _response(*reply)

    return wrapper


def _printable(text: str) -> str:
    """A request path fit for one log line (no control characters, bounded)."""
    return UNPRINTABLE_RE.sub("?", text)[:300]


def read_json(*, required: bool) -> Any:
    """The request's JSON body: 413 above 64 KiB, 415 when not JSON, 400 when malformed.

    Returns ``{}`` when the body is empty and not ``required`` (a JSON ``null`` stays None).
    """
    request = bottle.request
    try:
        length = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ValidationError("bad Content-Length", fields={"body": "bad Content-Length"}) from None
    if length > BODY_LIMIT:
        raise PayloadTooLargeError(f"the body is larger than {BODY_LIMIT // 1024} KiB")
    raw = request.environ["wsgi.input"].read(length) if length > 0 else b""
    if len(raw) > BODY_LIMIT:
        raise PayloadTooLargeError(f"the body is larger than {BODY_LIMIT // 1024} KiB")
    content_type = request.environ.get("CONTENT_TYPE", "")
    if not raw and not required:
        return {}
    if not JSON_TYPE_RE.match(content_type):
        raise UnsupportedMediaTypeError("send the body as JSON (Content-Type: application/json)")
    if not raw:
        raise ValidationError("a JSON body is required", fields={"body": "is required"})

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValidationError("the body is not valid JSON", fields={"body": "is not valid JSON"}) from None


def build_routes(service: Service, token: str) -> bottle.Bottle:
    """The Bottle application of ``service``, guarded by ``token``."""
    app = bottle.Bottle(catchall=True)
    expected = token.encode("utf-8")

    @app.hook("before_request")  # type: ignore[untyped-decorator]
    def authenticate() -> None:
        request = bottle.request
        if (request.method, request.path) in PUBLIC_ROUTES:
            return
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        # Compare in constant time, and always compare (no early exit on a bad scheme).
        matches = hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected)
        if scheme.lower() != "bearer" or not matches:
            reason = "missing bearer token" if not header else "wrong bearer token"
            raise _error(AuthenticationError(reason))

    def handle_http_error(error: bottle.HTTPError) -> str:
        """Bottle's own errors (no route, wrong method, ...) as JSON instead of HTML."""
        status = error.status_code
        exc: PaasError
        if status == 404:
            exc = NotFoundError("no such route")
        elif status == 405:
            exc = MethodNotAllowedError("method not allowed on this route")
        elif status == 413:
            exc = PayloadTooLargeError("the body is too large")
        elif status == 415:
            exc = UnsupportedMediaTypeError("unsupported media type")
        elif 400 <= status < 500:
            exc = ValidationError("bad request")
            exc.status, exc.code = status, "bad_request"
        else:
            if error.exception is not None:
                log.error(
                    "unhandled error in %s %s",
                    bottle.request.method,
                    _printable(bottle.request.path),
                    exc_info=error.exception,
                )
            exc = InternalError("internal error")
        bottle.response.set_header("Content-Type", "application/json")
        bottle.response.set_header("Cache-Control", "no-store")
        return json.dumps(exc.to_json(), separators=(",", ":"))

    for code in (400, 401, 403, 404, 405, 408, 411, 413, 414, 415, 416, 417, 431, 500, 501, 502, 503):
        app.error(code)(handle_http_error)

    def route(path: str, method: str) -> Callable[[Callable[..., Reply]], Callable[..., Reply]]:
        def register(func: Callable[..., Reply]) -> Callable[..., Reply]:
            app.route(path, method=method, callback=_endpoint(func))
            return func

        return register

    @route("/healthz", "GET")
    def healthz() -> Reply:
        return 200, {"status": "ok"}

    @route("/openapi.json", "GET")
    def openapi() -> Reply:
        return 200, openapi_document()

    # GET /apps serializes every app: keep the answer (plain and gzipped) until the store changes.
    apps_cache: dict[str, Any] = {"version": None, "body": b"", "gzip": b""}
    apps_cache_lock = threading.Lock()

    @route("/apps", "GET")
    def list_apps() -> Reply:
        version = service.apps.version
        with apps_cache_lock:
            cached = dict(apps_cache) if apps_cache["version"] == version else None
        if cached is None:
            body = json.dumps({"apps": service.apps.list_apps()}, separators=(",", ":")).encode("utf-8")
            cached = {"version": version, "body": body, "gzip": gzip.compress(body, compresslevel=5)}
            if service.apps.version == version:  # nothing was written meanwhile: the answer is current
                with apps_cache_lock:
                    apps_cache.update(cached)
        if "gzip" in bottle.request.environ.get("HTTP_ACCEPT_ENCODING", ""):
            return 200, cached["gzip"], {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return 200, cached["body"], {"Vary": "Accept-Encoding"}

    @route("/apps/deploy", "POST")
    def deploy() -> Reply:
        app_status, job = service.apps.deploy(read_json(required=True))
        return 202, {"app": app_status, "job": job}, {"Location": f"/jobs/{job['id']}"}

    @route("/apps/<name>/status", "GET")
    def app_status(name: str) -> Reply:
        return 200, dict(service.apps.status(name))

    # "deploy" is not an app name (validation reserves it): /apps/deploy is only the deploy action.
    @route("/apps/<name:re:(?!deploy$)[^/]+>", "DELETE")
    def delete_app(name: str) -> Reply:
        job = service.apps.delete(name)
        return 202, {"job": job}, {"Location": f"/jobs/{job['id']}"}

    @route("/infra", "GET")
    def infra() -> Reply:
        return 200, service.infra.view()

    @route("/infra/provision", "POST")
    def provision() -> Reply:
        job = service.infra.provision(read_json(required=False))
        return 202, {"job": job}, {"Location": f"/jobs/{job['id']}"}

    @route("/infra/destroy", "POST")
    def destroy() -> Reply:
        job = service.infra.destroy(read_json(required=False))
        return 202, {"job": job}, {"Location": f"/jobs/{job['id']}"}

    @route("/jobs/<id>", "GET")
    def job(id: str) -> Reply:
        return 200, service.job(id)

    @route("/jobs/<id>/cancel", "POST")
    def cancel(id: str) -> Reply:
        parse_empty(read_json(required=False))
        job = service.cancel_job(id)
        return 202, {"job": job}, {"Location": f"/jobs/{job['id']}"}

    return app


def route_table(app: bottle.Bottle) -> set[tuple[str, str]]:
    """``{(METHOD, /openapi/{style})}`` of the registered routes (for the OpenAPI check)."""
    table = set()
    for r in app.routes:
        table.add((str(r.method), re.sub(r"<([a-z_]+)(:[^>]*)?>", r"{\1}", str(r.rule))))
    return table


@dataclass
class Application:
    """The WSGI application of the control plane, with its running service.

    Logs one line per request (method, path, status, milliseconds). :meth:`close` stops the
    service: no new jobs, running ones finish or are canceled, the database is closed.
    """

    wsgi: bottle.Bottle
    service: Service

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.monotonic()
        seen: list[str] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append(status)
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        try:
            return self.wsgi(environ, recording_start_response)  # type: ignore[no-any-return]
        finally:
            log.info(
                "%s %s %s %.1fms",
                _printable(str(environ.get("REQUEST_METHOD", "?"))),
                _printable(str(environ.get("PATH_INFO", ""))),
                seen[-1].split(" ", 1)[0] if seen else "-",
                (time.monotonic() - began) * 1000,
            )

    def close(self) -> None:
        self.service.stop()


def create_app(
    settings: Settings,
    runner: Runner | None = None,
    *,
    token: str | None = None,
    executor: CommandExecutor | None = None,
) -> Application:
    """Build and start the control plane. ``runner`` defaults to ansible-runner and ``executor`` to
    subprocesses (tests pass fakes)."""
    api_token = token or read_token(settings) or ensure_token(settings)[0]
    service = Service(settings, runner or AnsibleRunner(settings), executor=executor)
    service.start()
    return Application(wsgi=build_routes(service, api_token), service=service)
