"""The one table from errors to HTTP responses in OpenAI's error shape."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from appliance.errors import (
    HTTP_ERRORS,
    ApplianceError,
    InvalidRequestError,
    PayloadTooLargeError,
    split_msgspec_error,
)
from appliance.gateway.schemas import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()

# Litestar's own HTTP errors (404 route, 405 method, 413 body...) -> the error tree's types.
_HTTP_TYPES = {cls.status_code: cls.error_type for cls in HTTP_ERRORS}


def error_body(exc: ApplianceError) -> bytes:
    """The JSON body of `exc`'s response (also for refusals made below Litestar, e.g. the 431)."""
    return _encoder.encode(
        ErrorResponse(error=ErrorBody(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code))
    )


def error_response(
    status: int,
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    body = ErrorResponse(error=ErrorBody(message=message, type=error_type, param=param, code=code))
    return Response(_encoder.encode(body), status_code=status, media_type="application/json", headers=headers)


def request_error_from_msgspec(exc: msgspec.ValidationError | msgspec.DecodeError) -> InvalidRequestError:
    """`Expected `str`, got `int` - at `$.input[3]`` -> a 400 whose `param` is `input[3]`."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):  # ValidationError subclasses DecodeError
        return InvalidRequestError(f"the request body is not valid JSON: {text}")
    _, param = split_msgspec_error(text)
    return InvalidRequestError(f"invalid request: {text}", param=param)


def handle_appliance_error(_: Request[Any, Any, Any], exc: ApplianceError) -> Response[bytes]:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    headers.update(exc.headers or {})
    return error_response(exc.status_code, exc.message, exc.error_type, param=exc.param, code=exc.code, headers=headers)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status == 413:
        limit = request.app.state.settings.limits.max_body_bytes
        too_large = f"the request body is larger than this server's limit of {limit} bytes ([limits] max_body_bytes)"
        return handle_appliance_error(request, PayloadTooLargeError(too_large))
    error_type = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    message = exc.detail if status < 500 else "Internal Server Error"
    return error_response(status, message, error_type, headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal Server Error", "server_error")
