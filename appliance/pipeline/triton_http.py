"""Triton's HTTP/REST protocol: the few calls the gateway makes, over pooled keep-alive connections.

This is the hot path's one network hop, so it is kept lean: asyncio's transport plus httptools (the
HTTP parser uvicorn runs on), a JSON header by msgspec and the tensors as raw bytes (Triton's binary
tensor extension): about a quarter of tritonclient's client CPU per call (`python -m bench.triton_hop`;
docs/performance.md, "Triton hop").
It speaks only what the gateway needs: `POST /v2/models/<m>/infer` and the two readiness `GET`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast
from urllib.parse import quote

import httptools
import msgspec
import numpy as np
import numpy.typing as npt

MAX_CONNECTIONS = 100  # as aiohttp's default: concurrent calls beyond it wait for a free connection
HEADER_LENGTH = b"inference-header-content-length"
DTYPES: dict[str, type[np.generic]] = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32}
DATATYPES = {np.dtype(t): name for name, t in DTYPES.items()}


class TritonError(Exception):
    """Triton answered a call with an error status; `message` is Triton's own text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class _Binary(msgspec.Struct):
    binary_data_size: int = 0


class _Output(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]
    parameters: _Binary = msgspec.field(default_factory=_Binary)


class _InferResponse(msgspec.Struct):
    outputs: list[_Output] = []


class _ErrorBody(msgspec.Struct):
    error: str = ""


_decode_response = msgspec.json.Decoder(_InferResponse).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_encode = msgspec.json.Encoder().encode


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection with at most one call in flight."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self.closed = False
        self.answered = 0  # responses read so far: a reused connection may have been closed idle
        self.heard = False  # any byte of the current response arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError("the inference server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.heard = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response from the inference server: {exc}"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        self.answered += 1
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), self._headers, b"".join(self._body)))

    async def call(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body, self.heard = {}, [], False
        self._transport.write(request)
        return await self._waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class TritonHTTP:
    """A pool of keep-alive connections to one Triton HTTP endpoint (`host:port`)."""

    def __init__(self, url: str, *, max_connections: int = MAX_CONNECTIONS) -> None:
        host, _, port = url.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._host_header = f"Host: {url}\r\n".encode()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def infer(
        self, model: str, inputs: Sequence[tuple[str, npt.NDArray[np.generic]]], outputs: Sequence[str]
    ) -> dict[str, npt.NDArray[np.generic]]:
        """One inference call with binary tensors both ways; returns the named outputs."""
        header = _encode(
            {
                "inputs": [
                    {
                        "name": name,
                        "shape": list(array.shape),
                        "datatype": DATATYPES[array.dtype],
                        "parameters": {"binary_data_size": array.nbytes},
                    }
                    for name, array in inputs
                ],
                "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
            }
        )
        body = [header, *(array.tobytes() for _, array in inputs)]  # C order, whatever the strides
        size = sum(len(part) for part in body)
        request = b"".join(
            [
                b"POST /v2/models/%s/infer HTTP/1.1\r\n" % _segment(model),
                self._host_header,
                b"Content-Type: application/octet-stream\r\n"
                b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(header), size),
                *body,
            ]
        )
        status, headers, raw = await self._call(request)
        if status != 200:
            raise TritonError(status, _error_text(raw))
        return _parse_outputs(headers, raw)

    async def server_ready(self) -> bool:
        """Triton's `GET /v2/health/ready` answered 200."""
        return await self._ok(b"/v2/health/ready")

    async def model_ready(self, model: str) -> bool:
        """Triton's `GET /v2/models/<model>/ready` answered 200."""
        return await self._ok(b"/v2/models/%s/ready" % _segment(model))

    async def _ok(self, path: bytes) -> bool:
        status, _, _ = await self._call(b"GET %s HTTP/1.1\r\n%s\r\n" % (path, self._host_header))
        return status == 200

    async def _call(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        async with self._slots:
            while True:
                connection = await self._connection()
                reused = connection.answered > 0
                try:
                    answer = await connection.call(request)
                except ConnectionError:
                    connection.close()
                    if reused and not connection.heard:
                        continue  # closed while idle, before our request: retry on a new connection
                    raise
                except BaseException:  # cancelled (client gone, request timeout) mid-call: the
                    connection.close()  # connection's next bytes would be this call's answer
                    raise
                if not connection.closed:
                    self._idle.append(connection)
                return answer

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _parse_outputs(headers: dict[bytes, bytes], raw: bytes) -> dict[str, npt.NDArray[np.generic]]:
    length = int(headers.get(HEADER_LENGTH, len(raw)))
    meta = _decode_response(raw[:length])
    view = memoryview(raw)
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    offset = length
    for output in meta.outputs:
        size = output.parameters.binary_data_size
        if output.datatype not in DTYPES or size == 0:
            raise ConnectionError(f"the inference server sent output {output.name!r} as JSON or {output.datatype}")
        arrays[output.name] = np.frombuffer(view[offset : offset + size], DTYPES[output.datatype]).reshape(output.shape)
        offset += size
    return arrays


def _segment(model: str) -> bytes:
    """A model name as one URL path segment."""
    return quote(model, safe="").encode()


def _error_text(raw: bytes) -> str:
    try:
        return _decode_error(raw).error or raw.decode(errors="replace")
    except msgspec.DecodeError:
        return raw.decode(errors="replace")
