"""The OpenAI-compatible backend against a small local fake endpoint speaking the SSE protocol."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from model.common.errors import ParleyError
from model.components.llm import OpenAIChatLLM, load_llm

PIECES = ["The capital", " of France", " is Paris", ". ✓"]


class FakeServer:
    """aiohttp app in a thread: /v1/models, /v1/chat/completions (stream or not), /bad (HTTP 500)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if body["messages"][-1]["content"] == "fail":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"role": "assistant", "content": "".join(PIECES)}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": keep-alive comment\n\n")
        first = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
        await resp.write(f"data: {json.dumps(first)}\n\n".encode())
        for p in PIECES[: body.get("max_tokens", 99)]:
            ev = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]}
            await resp.write(f"data: {json.dumps(ev, ensure_ascii=False)}\n\n".encode())
            await asyncio.sleep(0.01)
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        return resp

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/nomodels/v1/chat/completions", self.chat)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> "FakeServer":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


def test_streams_pieces_in_order(server: FakeServer) -> None:
    llm = load_llm(f"http://127.0.0.1:{server.port}/v1")
    assert isinstance(llm, OpenAIChatLLM)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    pieces = list(llm.stream_chat(msgs, max_new_tokens=16, temperature=0.0, seed=3))
    assert pieces == PIECES
    req = server.requests[-1]
    assert req["model"] == "fake-model"  # the server's first model when none is given
    assert req["stream"] is True and req["messages"] == msgs
    assert req["max_tokens"] == 16 and req["temperature"] == 0.0 and req["seed"] == 3
    assert llm.chat(msgs, max_new_tokens=2) == "The capital of France"


def test_model_name_api_key_and_url_forms(server: FakeServer) -> None:
    llm = load_llm(f"http://127.0.0.1:{server.port}/v1/chat/completions", model="my-model", api_key="k123")
    assert llm.chat([{"role": "user", "content": "hi"}]) == "".join(PIECES)
    assert server.requests[-1]["model"] == "my-model"
    assert server.headers[-1]["Authorization"] == "Bearer k123"
    bare = load_llm(f"http://127.0.0.1:{server.port}")  # no path: /v1 is assumed
    assert bare.chat([{"role": "user", "content": "hi"}]) == "".join(PIECES)
    # a server without /models: the model name falls back to "default"
    nm = load_llm(f"http://127.0.0.1:{server.port}/nomodels/v1")
    assert nm.chat([{"role": "user", "content": "hi"}]) == "".join(PIECES)
    assert server.requests[-1]["model"] == "default"


def test_errors_are_clear(server: FakeServer) -> None:
    llm = load_llm(f"http://127.0.0.1:{server.port}/v1", model="m")
    with pytest.raises(ParleyError, match="HTTP 500.*boom"):
        llm.chat([{"role": "user", "content": "fail"}])
    with pytest.raises(ParleyError, match="bad chat message"):
        llm.chat([{"role": "robot", "content": "x"}])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ParleyError, match="unreachable"):
        load_llm(f"http://127.0.0.1:{port}/v1", model="m", timeout=5).chat([{"role": "user", "content": "x"}])
    with pytest.raises(ParleyError, match="unknown LLM"):
        load_llm("gpt-17")
    with pytest.raises(ParleyError, match="not found"):
        load_llm("/nonexistent/model.gguf")
