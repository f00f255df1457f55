"""The gateway's errors: each one is an HTTP status, a short code and a human detail.

Handlers and services raise `ApiError` subclasses; one middleware turns them into the JSON
body of SPEC.md, `{"error": "<code>", "detail": "<what happened, what to do>"}`.
A detail never holds a credential.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    def body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"


class CapacityExceeded(ApiError):
    status, code = 429, "capacity_exceeded"


class DependencyUnavailable(ApiError):
    status, code = 503, "dependency_unavailable"


class ConnectionFailed(ApiError):
    """The operator could not serve the connection (phase Failed, reason in the detail)."""

    status, code = 503, "connection_failed"


class NotReadyInTime(ApiError):
    status, code = 504, "timeout"
