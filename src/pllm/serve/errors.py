"""HTTP errors in the OpenAI shape (`{"error": {"message", "type", "param", "code"}}`), so the official
client raises its usual exception classes (AuthenticationError, NotFoundError, RateLimitError...)."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered as JSON with `status`; `headers` carries e.g. Retry-After."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def unauthorized(message: str) -> APIError:
    return APIError(401, message, type="authentication_error", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> APIError:
    return APIError(403, message, type="permission_error", code="forbidden")


def not_found(message: str, *, param: str | None = None) -> APIError:
    return APIError(404, message, type="not_found_error", code="not_found", param=param)


def overloaded(retry_after: int, message: str) -> APIError:
    return APIError(429, message, type="rate_limit_error", code="overloaded",
                    headers={"Retry-After": str(int(retry_after))})


def timed_out(message: str) -> APIError:
    return APIError(504, message, type="timeout_error", code="timeout")
