"""A thin client of the REST API (what the ``paas`` command calls): JSON in and out, the bearer token,
and API errors as :class:`ApiError` with the message and each bad field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import requests


class ApiError(click.ClickException):
    """The API answered with an error (or did not answer)."""

    exit_code = 1


class Client:
    """A thin client of the REST API."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = self.session.request(method, self.url + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach the API at {self.url}: {exc.__class__.__name__}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            raise ApiError(_describe_error(response.status_code, payload))
        return payload


def _describe_error(status: int, payload: Any) -> str:
    if not isinstance(payload, dict):
        return f"the API answered {status}"
    text = f"{payload.get('message') or payload.get('error') or 'error'} ({status})"
    fields = payload.get("fields") or {}
    if isinstance(fields, dict):
        for name, reason in sorted(fields.items()):
            text += f"\n  {name}: {reason}"
    return text
