"""`parley serve` HTTP surface: demo files, health, and every kind of bad /offer gets a clear
4xx/5xx JSON answer while the server keeps serving valid sessions."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from aiohttp import web

from voice.engines.tone import ToneConfig, ToneEngine
from voice.server.app import Server, ServerConfig

pytestmark = pytest.mark.timeout(120)


async def _start(max_sessions: int = 4) -> tuple[web.AppRunner, str, Server]:
    server = Server(ToneEngine(ToneConfig()), ServerConfig(max_sessions=max_sessions, max_body=64 * 1024))
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    return runner, f"http://127.0.0.1:{port}", server


async def _offer_sdp(video_only: bool = False) -> tuple[object, str]:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video" if video_only else "audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _post(http: aiohttp.ClientSession, url: str, data) -> tuple[int, dict]:  # noqa: ANN001
    kw = {"data": data} if isinstance(data, (str, bytes)) else {"json": data}
    async with http.post(url + "/offer", **kw) as r:
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        return r.status, json.loads(await r.text())


def test_bad_requests_get_json_errors_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        runner, url, server = await _start(max_sessions=1)
        pcs = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/") as r:
                    assert r.status == 200 and "Connect" in await r.text()
                async with http.get(url + "/static/app.js") as r:
                    assert r.status == 200 and "RTCPeerConnection" in await r.text()
                    external = re.findall(r"https?://(?!127\.0\.0\.1|localhost)[\w.-]+", await r.text())
                    assert not external, f"page loads external assets: {external}"  # no CDN
                async with http.get(url + "/static/..%2fpyproject.toml") as r:
                    assert r.status == 404 and "error" in await r.json()
                async with http.get(url + "/nope") as r:
                    assert r.status == 404 and "error" in await r.json()
                async with http.get(url + "/offer") as r:
                    assert r.status == 405 and "error" in await r.json()

                cases = [
                    ("{not json", 400, "JSON"),
                    (b"\xff\xfe\x00garbage", 400, "JSON"),
                    ([1, 2, 3], 400, "object"),
                    ({"type": "offer"}, 400, "sdp"),
                    ({"sdp": "", "type": "offer"}, 400, "sdp"),
                    ({"sdp": "v=0\r\n", "type": "answer"}, 400, "type"),
                    ({"sdp": "hello", "type": "offer"}, 400, "SDP"),
                    ({"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nbroken", "type": "offer"}, 400, "SDP"),
                    ({"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer", "engine": "direct"}, 400, "engine"),
                    ("x" * (200 * 1024), 413, "too large"),
                ]
                for body, status, word in cases:
                    st, js = await _post(http, url, body)
                    assert st == status, (body if len(str(body)) < 80 else "huge", st, js)
                    assert word.lower() in js["error"].lower(), js

                pc, sdp = await _offer_sdp(video_only=True)
                pcs.append(pc)
                st, js = await _post(http, url, {"sdp": sdp, "type": "offer"})
                assert st == 400 and "audio" in js["error"], js

                # a valid offer still works; the next one finds the server full
                pc, sdp = await _offer_sdp()
                pcs.append(pc)
                st, js = await _post(http, url, {"sdp": sdp, "type": "offer"})
                assert st == 200 and js["type"] == "answer" and js["engine"] == "tone" and js["session"]
                pc2, sdp2 = await _offer_sdp()
                pcs.append(pc2)
                st, js = await _post(http, url, {"sdp": sdp2, "type": "offer"})
                assert st == 503 and "full" in js["error"], js
                async with http.get(url + "/health") as r:
                    h = await r.json()
                    assert h["sessions"] == 1 and h["max_sessions"] == 1 and h["engine"] == "tone"
        finally:
            for pc in pcs:
                await pc.close()
            await runner.cleanup()
        assert not server.sessions

    asyncio.run(main())
