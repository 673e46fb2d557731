"""One error tree. Each class carries its HTTP status, OpenAI error type and what it means.

The gateway maps these (and only these) to responses in exactly one place
(`appliance.gateway.errors`); anything else is a 500 that says nothing more. The OpenAPI
document and the README's error table are generated from `HTTP_ERRORS`.
"""

from __future__ import annotations

import re

_MSGSPEC_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def split_msgspec_error(message: str) -> tuple[str, str | None]:
    """msgspec's "Expected `int`, got `str` - at `$.a[0].b`" -> ("Expected `int`, got `str`", "a[0].b")."""
    match = _MSGSPEC_PATH.search(message)
    if match is None:
        return message, None
    return message[: match.start()], match.group("path")


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    description: str = "an unexpected error; the message says nothing more, the traceback is in the log"
    code: str | None = None
    retry_after: int | None = None  # seconds, sent as Retry-After (429 / 503)
    headers: dict[str, str] | None = None  # more response headers (rate-limit state, retry-after-ms)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ConfigError(ApplianceError):
    """embed.toml is invalid. The message names the TOML key and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"embed.toml: `{key}`: {problem}\n  fix: {fix}", param=key)
        self.key = key
        self.problem = problem
        self.fix = fix


class InvalidRequestError(ApplianceError):
    status_code = 400
    error_type = "invalid_request_error"
    description = (
        "invalid request: `param` names the field (e.g. `input[3]`); token ids outside the vocabulary too "
        "(`code` `invalid_token_id`)"
    )


class AuthenticationError(ApplianceError):
    status_code = 401
    error_type = "invalid_request_error"
    description = "missing or invalid API key"
    code = "invalid_api_key"


class ModelNotFoundError(ApplianceError):
    status_code = 404
    error_type = "invalid_request_error"
    description = "unknown model"
    code = "model_not_found"


class PayloadTooLargeError(ApplianceError):
    status_code = 413
    error_type = "invalid_request_error"
    description = "request body larger than `[limits] max_body_bytes`"


class UnsupportedMediaTypeError(ApplianceError):
    status_code = 415
    error_type = "invalid_request_error"
    description = "the body is not JSON (send `Content-Type: application/json`)"


class HeadersTooLargeError(ApplianceError):
    status_code = 431
    error_type = "invalid_request_error"
    description = "too many request headers, or too many bytes of them"


class RateLimitError(ApplianceError):
    status_code = 429
    error_type = "rate_limit_error"
    description = "overloaded or over a key's limit; retry after `Retry-After` seconds"
    retry_after = 1


class BackendUnavailableError(ApplianceError):
    """Triton is not ready (starting, restarting) or did not answer in time."""

    status_code = 503
    error_type = "service_unavailable"
    description = "the inference server is not ready; retry after `Retry-After` seconds"
    retry_after = 2


class TooManyConnectionsError(ApplianceError):
    """Refused at connect time: `[limits] max_connections` are already open (the connection is closed)."""

    status_code = 503
    error_type = "server_error"
    description = (
        "`[limits] max_connections` connections already open: a new one is answered this and closed; retry after "
        "`Retry-After` seconds"
    )
    code = "too_many_connections"
    retry_after = 1


class RequestTimeoutError(ApplianceError):
    """The request was not answered within `[limits] request_timeout_s`."""

    status_code = 504
    error_type = "timeout"
    description = "no answer within `[limits] request_timeout_s`"
    retry_after = 2


# What a client of the HTTP API can get, in status order (ConfigError never reaches a client).
# Of the two 503s BackendUnavailableError comes last: lookups keyed by status (the OpenAPI 503,
# Litestar's own 503s) keep its type and description.
HTTP_ERRORS: tuple[type[ApplianceError], ...] = (
    InvalidRequestError,
    AuthenticationError,
    ModelNotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    RateLimitError,
    HeadersTooLargeError,
    TooManyConnectionsError,
    BackendUnavailableError,
    RequestTimeoutError,
    ApplianceError,
)
