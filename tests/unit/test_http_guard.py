"""The connection guard's canned 503 is the error tree's, in OpenAI's shape, with a correct HTTP head."""

from __future__ import annotations

import json

from appliance.errors import TooManyConnectionsError
from appliance.runtime.http_guard import ConnectionGuard


def _split(refusal: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = refusal.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def test_the_connection_limit_refusal_is_a_503_that_closes_and_asks_for_a_retry_in_one_second() -> None:
    lines, body = _split(ConnectionGuard(max_connections=7, head_timeout_s=1.0).refusal)
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert lines[1:] == [
        b"content-type: application/json",
        b"retry-after: 1",
        b"connection: close",
        b"content-length: " + str(len(body)).encode(),
    ]


def test_the_connection_limit_refusal_body_has_openais_four_fields_from_the_error_tree() -> None:
    _, body = _split(ConnectionGuard(max_connections=7, head_timeout_s=1.0).refusal)
    assert json.loads(body) == {
        "error": {
            "message": "too many open connections (at most 7); retry shortly",
            "type": "server_error",
            "param": None,
            "code": "too_many_connections",
        }
    }
    assert TooManyConnectionsError.status_code == 503
    assert TooManyConnectionsError.error_type == "server_error"
