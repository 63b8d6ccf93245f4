"""metav1.Status bodies exactly as a real API server writes them, and the exception
handlers raise to send one."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class StatusError(Exception):
    """Raised by handlers; the middleware answers with ``body`` and HTTP ``code``."""

    def __init__(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("message", ""))
        self.body = body
        self.code = int(body["code"])
        self.headers = headers or {}

    def response(self) -> web.Response:
        return json_response(self.body, status=self.code, headers=self.headers)


def status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A failure Status (field order as Go marshals metav1.Status)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(name: str | None, resource: str, group: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def not_found(resource: str, name: str, group: str = "") -> StatusError:
    qualified = f"{resource}.{group}" if group else resource
    return StatusError(
        status(404, "NotFound", f'{qualified} "{name}" not found', _details(name, resource, group))
    )


def path_not_found() -> StatusError:
    return StatusError(
        status(404, "NotFound", "the server could not find the requested resource", {})
    )


def bad_request(message: str) -> StatusError:
    return StatusError(status(400, "BadRequest", message))


def unauthorized() -> StatusError:
    return StatusError(status(401, "Unauthorized", "Unauthorized"))


def forbidden(message: str, resource: str, name: str | None, group: str = "") -> StatusError:
    return StatusError(status(403, "Forbidden", message, _details(name, resource, group)))


def method_not_allowed(resource: str, name: str | None = None) -> StatusError:
    return StatusError(
        status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            _details(name, resource, ""),
        )
    )


def not_acceptable(message: str) -> StatusError:
    return StatusError(status(406, "NotAcceptable", message))


def too_many_requests(retry_after_s: int) -> StatusError:
    return StatusError(
        status(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
            {"retryAfterSeconds": retry_after_s},
        ),
        headers={"Retry-After": str(retry_after_s)},
    )


def internal_error(cause: str) -> StatusError:
    return StatusError(
        status(
            500,
            "InternalError",
            f"Internal error occurred: {cause}",
            {"causes": [{"message": cause}]},
        )
    )


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with the Content-Type the API server uses."""
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )
