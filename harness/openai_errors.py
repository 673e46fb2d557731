"""OpenAI's error shape, checked the same way by every end-to-end test."""

from __future__ import annotations

from typing import Any

import httpx


def assert_openai_error(response: httpx.Response, status: int, error_type: str | None = None,
                        param: Any = ..., code: Any = ...) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` with the given status (and fields when given)."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    assert "Traceback" not in error["message"] and 'File "' not in error["message"], error
    if error_type is not None:
        assert error["type"] == error_type, error
    if param is not ...:
        assert error["param"] == param, error
    if code is not ...:
        assert error["code"] == code, error
    result: dict[str, Any] = error
    return result
