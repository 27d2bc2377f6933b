"""Load shedding: at capacity (server sessions or engine slots) an offer gets 503 with a JSON
reason; a client that vanishes without hanging up frees its slot within a second."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from tests.test_server_http import _offer_sdp, _post
from tests.test_server_rtc import Client, start
from voice.engines.tone import ToneConfig, ToneEngine

pytestmark = pytest.mark.timeout(120)


class _OneSlotEngine(ToneEngine):
    """A tone engine with one slot of its own (like the direct model's static batch)."""

    def __init__(self) -> None:
        super().__init__(ToneConfig())
        self.taken = 0

    def session(self):  # noqa: ANN201
        if self.taken:
            raise RuntimeError("all 1 generator slots are taken")
        self.taken += 1
        return super().session()


def test_503_with_reason_when_the_engine_is_full() -> None:
    async def main() -> None:
        runner, url, server = await start(_OneSlotEngine())  # 8 server sessions, 1 engine slot
        pcs = []
        try:
            async with aiohttp.ClientSession() as http:
                for expect in (200, 503):
                    pc, sdp = await _offer_sdp()
                    pcs.append(pc)
                    st, js = await _post(http, url, {"sdp": sdp, "type": "offer"})
                    assert st == expect, js
                assert js["reason"] == "server_full" and "slots" in js["error"], js
                assert js["sessions"] == 1 and js["max_sessions"] == 8
                async with http.get(url + "/stats") as r:
                    assert r.status == 200 and (await r.json())["sessions"] == 1
        finally:
            for pc in pcs:
                await pc.close()
            await runner.cleanup()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def _heard_session():  # noqa: ANN202
    """A tone server and a connected client whose audio the server's session has started to read."""
    runner, url, server = await start(ToneEngine(ToneConfig()))
    c = Client(url)
    try:
        await c.connect()
        sess = next(iter(server.sessions.values()))
        await c.wait(lambda: sess._last_input is not None, 15)  # noqa: SLF001
        yield c, server, sess
    finally:
        await c.close()
        await runner.cleanup()


def test_a_vanished_client_frees_its_slot_within_a_second() -> None:
    async def main() -> None:
        async with _heard_session() as (c, server, sess):

            async def hang():  # noqa: ANN202 - the client's process is gone: no audio, no goodbye
                await asyncio.Event().wait()

            c.mic.recv = hang
            await asyncio.sleep(0.1)  # the frame in flight
            t0 = time.monotonic()
            while server.sessions and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.02)
            assert not server.sessions
            assert time.monotonic() - sess._last_input < 1.0  # noqa: SLF001

    asyncio.run(main())


def test_late_frames_from_a_live_client_do_not_close_the_session(monkeypatch) -> None:  # noqa: ANN001
    """Our side is slow, not the client: its RTP packets keep arriving while decoded frames are held
    back for 1.5 s (as a starved decoder thread on a loaded server does). The watchdog sees the
    packets, counts `input_late` and keeps the session; frames flow again afterwards."""
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    stall = {"until": 0.0}
    recv = RemoteStreamTrack.recv

    async def late_recv(self):  # noqa: ANN001, ANN202
        while time.monotonic() < stall["until"]:
            await asyncio.sleep(0.01)
        return await recv(self)

    monkeypatch.setattr(RemoteStreamTrack, "recv", late_recv)

    async def main() -> None:
        async with _heard_session() as (_, server, sess):
            stall["until"] = time.monotonic() + 1.5
            await asyncio.sleep(2.0)
            assert server.sessions and not sess.closed
            assert sess.stats["input_late"] >= 3, sess.stats
            assert time.monotonic() - sess._last_input < 0.4  # noqa: SLF001 - frames flow again

    asyncio.run(main())
