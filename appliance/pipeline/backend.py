"""The inference backend seen by the pipeline: a Protocol, and Triton's implementation."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from appliance.errors import ApplianceError, BackendUnavailableError, RateLimitError
from appliance.pipeline.triton_http import TritonError, TritonHTTP
from appliance.triton.interface import EMBEDDING, INPUT_IDS, LENGTHS, NORM, SPANS, TASK_ID

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
READY_TIMEOUT_S = 2.0
OUTPUTS = (EMBEDDING, NORM)


class EmbeddingBackend(Protocol):
    """Turns one padded block of token ids into pooled unit vectors and their norms.

    With `spans` ([k, 2] start/stop pairs, one row only), each span of the row is pooled
    on its own (late chunking): k vectors come back.
    """

    async def embed(
        self, model: str, ids: I64, lengths: I64, task_id: int | None, *, spans: I64 | None = None
    ) -> tuple[F32, F32]: ...

    async def ready(self, models: list[str]) -> bool: ...

    async def close(self) -> None: ...


class TritonBackend:
    """Calls Triton over HTTP with binary tensors (`TritonHTTP`, pooled keep-alive connections).

    The call has no deadline of its own: the gateway's `request_timeout_s` cancels it, and a
    cancelled call's connection is closed, never reused.
    """

    def __init__(self, url: str) -> None:
        self.client = TritonHTTP(url)

    async def embed(
        self, model: str, ids: I64, lengths: I64, task_id: int | None, *, spans: I64 | None = None
    ) -> tuple[F32, F32]:
        inputs = [(INPUT_IDS, ids), (LENGTHS, lengths.reshape(-1, 1))]
        if task_id is not None:
            inputs.append((TASK_ID, np.full((ids.shape[0], 1), task_id, dtype=np.int64)))
        if spans is not None:
            inputs.append((SPANS, spans.reshape(1, -1)))
        try:
            result = await self.client.infer(model, inputs, OUTPUTS)
        except TritonError as exc:
            raise backend_error(exc.status, exc.message) from exc
        except OSError as exc:  # Triton is down or restarting (refused, reset, closed mid-answer)
            raise BackendUnavailableError("the inference server is not reachable; retry shortly") from exc
        return cast(F32, result[EMBEDDING]), cast(F32, result[NORM])

    async def ready(self, models: list[str]) -> bool:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                if not await self.client.server_ready():
                    return False
                for name in models:
                    if not await self.client.model_ready(name):
                        return False
        except OSError:  # includes the timeout
            return False
        return True

    async def close(self) -> None:
        await self.client.close()


def backend_error(status: int, message: str) -> ApplianceError | RuntimeError:
    """Triton's refusals -> what the client should do: back off (429) or retry later (503).

    By HTTP status first (Triton answers 429 or 503 for a full queue, 503 for a queue timeout or an
    unready model, 400/404 for a model it does not have loaded), then by Triton's message text where
    one status stands for several causes.
    """
    text = message.lower()
    if status == 429 or "maximum queue size" in text:
        return RateLimitError("the inference queue is full; retry shortly", code="overloaded")
    if status in (503, 504, 400, 404) and "timeout" in text:
        return BackendUnavailableError("the request waited too long in the inference queue; retry shortly")
    if status in (503, 404) or (
        status == 400 and ("not ready" in text or "not found" in text or "unavailable" in text)
    ):
        return BackendUnavailableError("the model is not loaded yet (starting or restarting); retry shortly")
    # Anything else is an inference failure we did not expect: a 500 whose details go to the log.
    return RuntimeError(f"inference failed: HTTP {status}: {message}")
