"""The request-log middleware in isolation: X-Request-ID, one line per request, JSON, never a key."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from appliance.gateway.requestlog import RequestLog

Message = dict[str, Any]


def run(app: Any, path: str = "/v1/embeddings", headers: list[tuple[bytes, bytes]] | None = None,
        **kwargs: Any) -> tuple[list[Message], list[tuple[str, int, dict[str, Any]]]]:
    finished: list[tuple[str, int, dict[str, Any]]] = []
    middleware = RequestLog(app, on_finish=lambda p, s, f, _: finished.append((p, s, dict(f))), **kwargs)
    scope: Any = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    sent: list[Message] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    async def go() -> None:
        try:
            await middleware(scope, receive, send)
        except RuntimeError:
            pass

    asyncio.run(go())
    return sent, finished


def app_answering(status: int, fields: dict[str, Any] | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"]["log"].update(fields or {})
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def response_id(sent: list[Message]) -> str:
    start = next(m for m in sent if m["type"] == "http.response.start")
    values: list[str] = [v.decode() for k, v in start["headers"] if k == b"x-request-id"]
    assert len(values) == 1, start["headers"]
    return values[0]


def request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "appliance.requests"]


def test_a_given_x_request_id_is_echoed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "appliance.requests")
    sent, _ = run(app_answering(200), headers=[(b"x-request-id", b"client-id_1.2:3")])
    assert response_id(sent) == "client-id_1.2:3"
    (line,) = request_lines(caplog)
    assert "request_id=client-id_1.2:3" in line and "status=200" in line


@pytest.mark.parametrize("given", [None, b"", b"has spaces", b"x" * 129, b"new\\nline", b"caf\xc3\xa9"])
def test_an_absent_or_unsafe_request_id_is_replaced_by_a_generated_one(
    caplog: pytest.LogCaptureFixture, given: bytes | None
) -> None:
    caplog.set_level(logging.INFO, "appliance.requests")
    headers = [] if given is None else [(b"x-request-id", given)]
    sent, _ = run(app_answering(200), headers=headers)
    generated = response_id(sent)
    assert len(generated) == 32 and int(generated, 16) >= 0
    (line,) = request_lines(caplog)
    assert f"request_id={generated}" in line


def test_json_format_gives_one_parseable_line_with_the_handler_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "appliance.requests")
    fields = {"key": "ops", "model": "m", "task": "t", "inputs": 2, "tokens": 17}
    _, finished = run(app_answering(429, fields), json_format=True, headers=[(b"x-request-id", b"abc")])
    (line,) = request_lines(caplog)
    record = json.loads(line)
    assert record == {"request_id": "abc", "method": "POST", "path": "/v1/embeddings", "status": 429,
                      "latency_ms": record["latency_ms"], **fields}
    assert isinstance(record["latency_ms"], float)
    assert finished == [("/v1/embeddings", 429, fields)]


def test_a_crashing_app_is_still_logged_once_as_a_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "appliance.requests")

    async def crash(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    _, finished = run(crash)
    (line,) = request_lines(caplog)
    assert "status=500" in line
    assert finished[0][1] == 500


def test_probes_and_metrics_are_not_logged_but_still_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "appliance.requests")
    for path in ("/health", "/ready", "/metrics"):
        _, finished = run(app_answering(200), path=path)
        assert finished[0][0] == path
    assert request_lines(caplog) == []


def test_the_authorization_header_never_reaches_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "appliance.requests")
    secret = "sk-unit-secret-4242"
    run(app_answering(401), headers=[(b"authorization", f"Bearer {secret}".encode())])
    run(app_answering(200), json_format=True, headers=[(b"authorization", f"Bearer {secret}".encode())])
    assert len(request_lines(caplog)) == 2
    assert secret not in caplog.text
