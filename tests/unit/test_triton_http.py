"""The gateway's Triton HTTP client against a scripted loopback server speaking Triton's binary protocol.

The e2e suite runs it against the real tritonserver (kill -9, queue refusals, timeouts); these tests
pin the connection handling that is hard to provoke there: reuse, a keep-alive connection closed while
idle, a call cancelled mid-flight, a server that dies mid-answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from appliance.pipeline.triton_http import TritonError, TritonHTTP

# A scripted server: gets (connection number, request number on it, JSON header, tensors) and
# returns the raw response bytes to write, None to close the connection without answering, or
# (bytes, CLOSE) to write them and then close.
CLOSE = "close"
Script = Callable[[int, int, dict[str, Any], list[bytes]], Awaitable[bytes | tuple[bytes, str] | None]]


def infer_answer(outputs: dict[str, npt.NDArray[Any]], *, keep_alive: bool = True) -> bytes:
    outputs = {n: a.astype(np.float32) for n, a in outputs.items()}
    header = json.dumps({
        "model_name": "m", "model_version": "1",
        "outputs": [{"name": n, "datatype": "FP32", "shape": list(a.shape),
                     "parameters": {"binary_data_size": a.nbytes}} for n, a in outputs.items()],
    }).encode()
    body = header + b"".join(a.tobytes() for a in outputs.values())
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n%s\r\n"
            % (len(header), len(body), b"" if keep_alive else b"Connection: close\r\n")) + body


def error_answer(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status, len(body), body)


async def serve(script: Script) -> tuple[asyncio.Server, list[int]]:
    """Start the scripted server on a free loopback port; the list counts requests per connection."""
    per_connection: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(per_connection)
        per_connection.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
                body = await reader.readexactly(int(fields.get(b"Content-Length", b"0")))
                length = int(fields.get(b"Inference-Header-Content-Length", len(body)))
                header = json.loads(body[:length]) if body else {}
                tensors, offset = [], length
                for item in header.get("inputs", []):
                    size = item["parameters"]["binary_data_size"]
                    tensors.append(body[offset:offset + size])
                    offset += size
                per_connection[number] += 1
                answer = await script(number, per_connection[number], header, tensors)
                if answer is None:
                    break
                writer.write(answer[0] if isinstance(answer, tuple) else answer)
                await writer.drain()
                if isinstance(answer, tuple):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, per_connection


def run(test: Callable[[TritonHTTP, list[int]], Coroutine[Any, Any, None]], script: Script) -> None:
    async def main() -> None:
        server, per_connection = await serve(script)
        client = TritonHTTP(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        try:
            await test(client, per_connection)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


async def echo_sum(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes:
    ids = np.frombuffer(tensors[0], np.int64).reshape(header["inputs"][0]["shape"])
    return infer_answer({"EMBEDDING": ids.astype(np.float32), "NORM": ids.sum(1, keepdims=True)})


IDS = [("INPUT_IDS", np.array([[1, 2, 3], [4, 5, 0]], np.int64)), ("LENGTHS", np.array([[3], [2]], np.int64))]


def test_infer_sends_binary_tensors_parses_the_outputs_and_reuses_one_connection() -> None:
    seen: list[dict[str, Any]] = []

    async def script(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes:
        seen.append(header)
        assert np.frombuffer(tensors[1], np.int64).tolist() == [3, 2]
        return await echo_sum(connection, number, header, tensors)

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        for _ in range(3):
            out = await client.infer("m", IDS, ["EMBEDDING", "NORM"])
            assert out["EMBEDDING"].tolist() == [[1, 2, 3], [4, 5, 0]]
            assert out["NORM"].dtype == np.float32 and out["NORM"].tolist() == [[6], [9]]
        assert per_connection == [3]

    run(test, script)
    assert seen[0]["inputs"] == [
        {"name": "INPUT_IDS", "shape": [2, 3], "datatype": "INT64", "parameters": {"binary_data_size": 48}},
        {"name": "LENGTHS", "shape": [2, 1], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
    ]
    assert seen[0]["outputs"] == [{"name": n, "parameters": {"binary_data": True}} for n in ("EMBEDDING", "NORM")]


def test_concurrent_calls_each_get_their_own_answer_on_their_own_connection() -> None:
    async def script(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes:
        await asyncio.sleep(0.01 * (3 - connection))  # answer out of order
        return await echo_sum(connection, number, header, tensors)

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        calls = [[("INPUT_IDS", np.array([[k, k]], np.int64))] for k in range(4)]
        outs = await asyncio.gather(*(client.infer("m", c, ["EMBEDDING", "NORM"]) for c in calls))
        assert [o["NORM"].item() for o in outs] == [0, 2, 4, 6]
        assert len(per_connection) == 4

    run(test, script)


def test_a_keep_alive_connection_the_server_closed_while_idle_is_retried_on_a_new_one() -> None:
    async def script(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes | None:
        if number == 2:
            return None  # closes instead of answering the second request on a connection
        return await echo_sum(connection, number, header, tensors)

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        for _ in range(3):
            assert (await client.infer("m", IDS, ["EMBEDDING", "NORM"]))["NORM"].tolist() == [[6], [9]]
        assert per_connection == [2, 2, 1]

    run(test, script)


def test_connection_close_from_the_server_is_honoured() -> None:
    async def script(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes:
        ids = np.frombuffer(tensors[0], np.int64).reshape(header["inputs"][0]["shape"])
        return infer_answer({"EMBEDDING": ids, "NORM": ids.sum(1, keepdims=True)}, keep_alive=False)

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        for _ in range(2):
            await client.infer("m", IDS, ["EMBEDDING", "NORM"])
        assert per_connection == [1, 1]

    run(test, script)


def test_an_error_status_raises_triton_error_with_tritons_message_and_keeps_the_connection() -> None:
    async def script(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes:
        if number == 1:
            return error_answer(503, "Exceeds maximum queue size")
        return await echo_sum(connection, number, header, tensors)

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        with pytest.raises(TritonError) as caught:
            await client.infer("m", IDS, ["EMBEDDING", "NORM"])
        assert caught.value.status == 503 and caught.value.message == "Exceeds maximum queue size"
        await client.infer("m", IDS, ["EMBEDDING", "NORM"])
        assert per_connection == [2]

    run(test, script)


def test_a_call_cancelled_mid_flight_never_leaves_its_late_answer_for_the_next_call() -> None:
    async def script(connection: int, number: int, header: dict[str, Any], tensors: list[bytes]) -> bytes:
        if connection == 0:
            await asyncio.sleep(0.2)  # answers after the caller gave up
        return await echo_sum(connection, number, header, tensors)

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.infer("m", [("INPUT_IDS", np.array([[7]], np.int64))], ["EMBEDDING", "NORM"])
        out = await client.infer("m", IDS, ["EMBEDDING", "NORM"])
        assert out["NORM"].tolist() == [[6], [9]]
        assert len(per_connection) == 2

    run(test, script)


def test_a_server_that_dies_mid_answer_raises_connection_error_without_a_retry() -> None:
    async def script(connection: int, number: int, header: dict[str, Any],
                     tensors: list[bytes]) -> bytes | tuple[bytes, str]:
        if number == 1:
            return await echo_sum(connection, number, header, tensors)
        return (await echo_sum(connection, number, header, tensors))[:60], CLOSE  # dies mid-answer

    async def test(client: TritonHTTP, per_connection: list[int]) -> None:
        await client.infer("m", IDS, ["EMBEDDING", "NORM"])
        with pytest.raises(ConnectionError):
            await client.infer("m", IDS, ["EMBEDDING", "NORM"])
        assert per_connection == [2]

    run(test, script)


def test_readiness_is_a_200_with_the_model_quoted_and_a_refused_connection_is_an_os_error() -> None:
    async def main() -> None:
        async def ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            known = (b"GET /v2/health/ready ", b"GET /v2/models/my%2Fmodel%20x/ready ")
            status = b"200 OK" if head.startswith(known) else b"400 Bad Request"
            writer.write(b"HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n" % status)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(ready, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = TritonHTTP(f"127.0.0.1:{port}")
        assert await client.server_ready()
        assert await client.model_ready("my/model x")  # one quoted path segment
        assert not await client.model_ready("absent")
        server.close()
        await server.wait_closed()
        await client.close()
        with pytest.raises(OSError):
            await TritonHTTP(f"127.0.0.1:{port}").server_ready()

    asyncio.run(main())
