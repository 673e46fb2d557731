"""Triton's refusals -> the client's next step, by HTTP status first and Triton's text second."""

from __future__ import annotations

import pytest

from appliance.errors import BackendUnavailableError, RateLimitError
from appliance.pipeline.backend import backend_error


@pytest.mark.parametrize(
    ("status", "message", "kind", "says"),
    [
        (429, "Exceeds maximum queue size", RateLimitError, "queue is full"),
        (503, "Exceeds maximum queue size", RateLimitError, "queue is full"),
        (503, "Request timeout expired", BackendUnavailableError, "waited too long"),
        (503, "Server is not ready", BackendUnavailableError, "not loaded yet"),
        (404, "Request for unknown model: 'm' is not found", BackendUnavailableError, "not loaded yet"),
        (400, "Model 'm' is not ready", BackendUnavailableError, "not loaded yet"),
        (400, "inference failed: ValueError: LENGTHS out of range", RuntimeError, "HTTP 400"),
        (500, "something else", RuntimeError, "HTTP 500"),
    ],
)
def test_each_refusal_maps_to_what_the_client_should_do(status: int, message: str, kind: type, says: str) -> None:
    error = backend_error(status, message)
    assert type(error) is kind
    assert says in str(error)
