"""Helpers of the Realtime tests: an in-process `parley serve`, prompts as PCM16 24 kHz, a raw
WebSocket client that collects events."""

from __future__ import annotations

import asyncio
import base64
import json
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

import aiohttp
import numpy as np
from aiohttp import web

from voice.engines.base import Engine
from voice.server.app import Server, ServerConfig

SR = 24000


def prompt_pcm(name: str, lead_s: float = 0.3, tail_s: float = 1.2) -> bytes:
    """A real recorded prompt (asterisk, one US female voice) as PCM16 24 kHz with silence around it."""
    from model.audio import load_audio
    from model.samples import prompt_wav

    x, _ = load_audio(prompt_wav(name), SR)
    x = np.concatenate([np.zeros(int(lead_s * SR)), x, np.zeros(int(tail_s * SR))])
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


@asynccontextmanager
async def serve(engine: Engine, max_sessions: int = 4) -> AsyncIterator[tuple[str, Server]]:
    server = Server(engine, ServerConfig(max_sessions=max_sessions))
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        await runner.cleanup()


class RawClient:
    """aiohttp WebSocket client that keeps every server event."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict] = []

    async def send(self, ev: dict | str) -> None:
        await self.ws.send_str(ev if isinstance(ev, str) else json.dumps(ev))

    async def append(self, pcm: bytes, chunk_bytes: int = 9600) -> None:
        for i in range(0, len(pcm), chunk_bytes):
            await self.send({"type": "input_audio_buffer.append", "audio": b64(pcm[i : i + chunk_bytes])})

    async def until(self, pred, timeout: float = 20.0) -> dict:  # noqa: ANN001
        """Read events until one satisfies pred (checked on already received ones first)."""
        for ev in self.events:
            if pred(ev):
                return ev
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket closed: {msg}")
                ev = json.loads(msg.data)
                self.events.append(ev)
                if pred(ev):
                    return ev

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@asynccontextmanager
async def connected(engine: Engine) -> AsyncIterator[tuple[RawClient, Server]]:
    """A server on `engine` and one raw client connected to /v1/realtime (session.created read)."""
    async with serve(engine) as (host, server), aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://{host}/v1/realtime?model=parley") as ws:
            c = RawClient(ws)
            await c.until(of_type("session.created"))
            yield c, server


def of_type(t: str):  # noqa: ANN201
    return lambda ev: ev["type"] == t
