"""One exception family for the whole service: each error carries its HTTP status and a machine code.

The API turns a :class:`PaasError` into ``{"error": code, "message": ..., "fields": {...}}``; any other
exception is a bug, logged with its traceback and answered with an opaque 500.
"""

from __future__ import annotations

from collections.abc import Mapping


class PaasError(Exception):
    """Base of every error the service reports to clients."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, fields: Mapping[str, str] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.fields: dict[str, str] = dict(fields or {})
        if code is not None:
            self.code = code

    def to_json(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, "fields": self.fields}


class ValidationError(PaasError):
    """The request is malformed: ``fields`` names every bad field and why."""

    status = 400
    code = "invalid"


class AuthenticationError(PaasError):
    status = 401
    code = "unauthorized"


class NotFoundError(PaasError):
    status = 404
    code = "not_found"


class MethodNotAllowedError(PaasError):
    status = 405
    code = "method_not_allowed"


class ConflictError(PaasError):
    """The request conflicts with the current state (a port held by another app, infra busy...)."""

    status = 409
    code = "conflict"


class PayloadTooLargeError(PaasError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(PaasError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequestsError(PaasError):
    """Too much work waits already: the client should retry after ``retry_after`` seconds (the API
    sends it as ``Retry-After``)."""

    status = 429
    code = "too_many_requests"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 30,
        fields: Mapping[str, str] | None = None,
        code: str | None = None,
    ):
        super().__init__(message, fields=fields, code=code)
        self.retry_after = retry_after


class UnavailableError(PaasError):
    """The service is shutting down and accepts no new work."""

    status = 503
    code = "unavailable"


class InternalError(PaasError):
    status = 500
    code = "internal"
