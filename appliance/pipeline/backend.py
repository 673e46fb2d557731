"""The inference backend seen by the pipeline: a Protocol, and Triton's implementation."""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
import numpy as np
import numpy.typing as npt
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from appliance.compile.pbtxt import EMBEDDING, INPUT_IDS, LENGTHS, NORM, SPANS, TASK_ID
from appliance.errors import ApplianceError, BackendUnavailableError, RateLimitError

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
READY_TIMEOUT_S = 2.0
# aiohttp offers "gzip, deflate" by default and Triton then compresses every response:
# CPU on both sides of a loopback hop for incompressible float32 vectors.
IDENTITY = {"Accept-Encoding": "identity"}


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
    """Calls Triton over HTTP with binary tensors (tritonclient's asyncio client)."""

    def __init__(self, url: str, *, timeout_s: float = 300.0) -> None:
        self.client = triton_http.InferenceServerClient(url, conn_timeout=timeout_s)

    async def embed(
        self, model: str, ids: I64, lengths: I64, task_id: int | None, *, spans: I64 | None = None
    ) -> tuple[F32, F32]:
        inputs = [_tensor(INPUT_IDS, ids), _tensor(LENGTHS, lengths.reshape(-1, 1))]
        if task_id is not None:
            inputs.append(_tensor(TASK_ID, np.full((ids.shape[0], 1), task_id, dtype=np.int64)))
        if spans is not None:
            inputs.append(_tensor(SPANS, spans.reshape(1, -1)))
        outputs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in (EMBEDDING, NORM)]
        try:
            result = await self.client.infer(model, inputs, outputs=outputs, headers=IDENTITY)
        except InferenceServerException as exc:
            raise backend_error(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:  # Triton is down, restarting or timed out
            raise BackendUnavailableError("the inference server is not reachable; retry shortly") from exc
        return result.as_numpy(EMBEDDING), result.as_numpy(NORM)

    async def ready(self, models: list[str]) -> bool:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                if not await self.client.is_server_ready():
                    return False
                for name in models:
                    if not await self.client.is_model_ready(name):
                        return False
        except (InferenceServerException, aiohttp.ClientError, OSError):
            return False
        return True

    async def close(self) -> None:
        await self.client.close()


def _tensor(name: str, array: I64) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, list(array.shape), "INT64")
    tensor.set_data_from_numpy(array, binary_data=True)
    return tensor


def backend_error(exc: InferenceServerException) -> ApplianceError | RuntimeError:
    """Triton's refusals -> what the client should do: back off (429) or retry later (503)."""
    message = exc.message() or ""
    if "maximum queue size" in message:
        return RateLimitError("the inference queue is full; retry shortly", code="overloaded")
    if "timeout" in message.lower():
        return BackendUnavailableError("the request waited too long in the inference queue; retry shortly")
    if "unavailable" in message.lower() or "not ready" in message.lower() or "not found" in message.lower():
        return BackendUnavailableError("the model is not loaded yet (starting or restarting); retry shortly")
    # Anything else is an inference failure we did not expect: a 500 whose details go to the log.
    return RuntimeError(f"inference failed: {message}")
