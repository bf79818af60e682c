"""The gateway's dependency clients against a raw HTTP server that misbehaves like a real one can."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import REGISTRY

from services.gateway.clients import DependencyError, ServiceClients
from services.gateway.config import GatewaySettings


async def _serve_closing_reused_connections() -> tuple[asyncio.AbstractServer, str, list[int]]:
    """Answers the first request on each connection (keep-alive), then closes the connection when a
    second request arrives on it without answering: what a server does when its keep-alive timer
    fires just as the client reuses the connection."""
    answered: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )
                await reader.readexactly(length)
                if served:
                    break  # a reused connection: drop it unanswered
                body = json.dumps({"items": [], "n": len(answered)}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                answered.append(1)
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", answered


def _retries() -> float:
    return REGISTRY.get_sample_value("recsys_gateway_dependency_retries_total", {"dependency": "retriever"}) or 0.0


def test_a_pooled_connection_closed_by_the_server_is_retried_once_on_a_fresh_one() -> None:
    async def scenario() -> None:
        server, url, answered = await _serve_closing_reused_connections()
        clients = ServiceClients(GatewaySettings(ENVIRONMENT="test", RETRIEVER_URL=url))
        try:
            before = _retries()
            for _ in range(3):  # each call after the first reuses the pooled connection
                assert (await clients.candidates({"user_id": "u"}))["items"] == []
            assert len(answered) == 3
            assert _retries() == before + 2
        finally:
            await clients.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_dependency_that_never_answers_is_a_timeout_not_a_hang() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        clients = ServiceClients(
            GatewaySettings(ENVIRONMENT="test", RETRIEVER_URL=url, GATEWAY_RETRIEVER_TIMEOUT_S=0.3)
        )
        try:
            with pytest.raises(DependencyError) as err:
                await clients.candidates({"user_id": "u"})
            assert err.value.kind == "timeout" and err.value.dependency == "retriever"
        finally:
            await clients.aclose()
            server.close()

    asyncio.run(scenario())
