"""The engine behind a Unix socket (EngineHost / RemoteEngine, for front worker processes): the
same events as the engine itself, barge-in cancels the host's reply, full -> RuntimeError, a
worker's connection closing frees its sessions; a Server with a RemoteEngine connects a WebRTC
client and answers 503 when the host's engine is full."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from voice.engines.base import AgentAudio, Stage, UserText, UserTurn
from voice.engines.tone import ToneConfig, ToneEngine
from voice.engines.remote import EngineHost, RemoteEngine

pytestmark = pytest.mark.timeout(120)


class _Counting(ToneEngine):
    """A tone engine with ``slots`` sessions at most, counting open ones."""

    def __init__(self, slots: int) -> None:
        super().__init__(ToneConfig(delay_ms=50, reply_s=0.5))
        self.slots, self.open = slots, 0

    def stats(self, since: int = 0) -> dict:  # as the direct engine's frame clock
        return {"frame_clock": {"since": since}}

    def session(self):  # noqa: ANN201
        if self.open >= self.slots:
            raise RuntimeError(f"all {self.slots} slots are taken")
        self.open += 1
        sess = super().session()
        close = sess.close

        async def counted_close() -> None:
            self.open -= 1
            await close()

        sess.close = counted_close
        return sess


async def _until(cond, timeout: float = 2.0) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(0.02)


def _turn() -> UserTurn:
    now = time.monotonic()
    return UserTurn(1, np.zeros(16000, np.float32), t_speech_end=now, t_decided=now)


def test_remote_engine_equals_local_and_cancels(tmp_path) -> None:
    async def main() -> None:
        local = _Counting(2)
        host = EngineHost(_Counting(2), str(tmp_path / "engine.sock"))
        await host.start()
        remote = RemoteEngine(host.path)
        await remote.connect()
        try:
            assert remote.name == "tone" and remote.info()["engine"] == "tone"
            assert await remote.stats(7) == {"frame_clock": {"since": 7}}  # forwarded to the host
            want = [e async for e in local.session().respond(_turn())]
            a = await remote.open_session()
            a.feed(np.zeros(512, np.float32), time.monotonic())
            got = [e async for e in a.respond(_turn())]
            assert [type(e) for e in got] == [type(e) for e in want]
            aud = [e for e in got if isinstance(e, AgentAudio)]
            assert aud and np.allclose(np.concatenate([e.audio for e in aud]),
                                       np.concatenate([e.audio for e in want if isinstance(e, AgentAudio)]))
            b = await remote.open_session()
            with pytest.raises(RuntimeError, match="slots"):
                await remote.open_session()
            agen = b.respond(_turn())
            first = await agen.__anext__()
            assert isinstance(first, (UserText, Stage, AgentAudio))
            await agen.aclose()  # barge-in: the host's reply stops, the session stays
            a.commit(1, "played", True)
            await a.close()
            c = await remote.open_session()  # a's slot is free again
            await c.close()
            await _until(lambda: host.engine.open == 1)
        finally:
            await remote.close()
        await _until(lambda: host.engine.open == 0)  # the worker's connection is gone: sessions closed
        await host.close()

    asyncio.run(main())


def test_server_with_a_remote_engine_over_webrtc(tmp_path) -> None:
    from tests.test_server_rtc import Client, start

    async def main() -> None:
        host = EngineHost(_Counting(1), str(tmp_path / "engine.sock"))
        await host.start()
        remote = RemoteEngine(host.path)
        await remote.connect()
        runner, url, server = await start(remote)
        c = Client(url)
        try:
            await c.connect()
            assert host.engine.open == 1
            import aiohttp

            from tests.test_server_http import _offer_sdp, _post

            async with aiohttp.ClientSession() as http:  # the engine's one slot is taken: 503
                pc, sdp = await _offer_sdp()
                st, js = await _post(http, url, {"sdp": sdp, "type": "offer"})
                await pc.close()
            assert st == 503 and js["reason"] == "server_full", js
        finally:
            await c.close()
            await runner.cleanup()
            await host.close()

    asyncio.run(main())


def test_speculative_sessions_overlapping_replies_and_discard(tmp_path) -> None:
    """A speculative host session stays speculative behind the socket; a session's next reply can
    start before the last one's cancel reaches the host (the server throws a speculative reply away
    and starts the final one at once): each gets its own events, the late cancel stops only its own;
    `discard` reaches the host's session."""
    discarded: list[int] = []

    class _Spec(_Counting):
        def session(self):  # noqa: ANN202
            sess = super().session()
            sess.speculative = True
            sess.discard = discarded.append
            return sess

    async def main() -> None:
        host = EngineHost(_Spec(1), str(tmp_path / "engine.sock"))
        await host.start()
        remote = RemoteEngine(host.path)
        await remote.connect()
        try:
            a = await remote.open_session()
            assert a.speculative
            spec = a.respond(_turn())
            assert await spec.__anext__() is not None  # the speculative reply is running on the host
            final = a.respond(_turn())
            first = await final.__anext__()  # the final reply starts before the speculation's cancel
            await spec.aclose()  # its cancel arrives now: it must not stop the final reply
            a.discard(1)
            rest = [e async for e in final]
            got = [first, *rest]
            assert sum(isinstance(e, AgentAudio) for e in got) > 0, got
            await _until(lambda: discarded == [1])
            await a.close()
        finally:
            await remote.close()
        await host.close()

    asyncio.run(main())


def test_messages_of_one_loop_iteration_go_out_in_one_write() -> None:
    """`write_msg` queues; the loop iteration's messages are one `write` at its end, read back whole and
    in order; `flush_msgs` writes at once (before a close)."""
    from voice.engines.remote import flush_msgs, read_msg, write_msg

    async def main() -> None:
        got: asyncio.Queue = asyncio.Queue()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (msg := await read_msg(reader)) is not None:
                got.put_nowait(msg)

        path = f"/tmp/parley-cork-{os.getpid()}.sock"
        server = await asyncio.start_unix_server(serve, path)
        _, writer = await asyncio.open_unix_connection(path)
        writes = []
        real = writer.write
        writer.write = lambda data: (writes.append(len(data)), real(data))[1]  # type: ignore[method-assign]
        for i in range(64):  # a tick's frames of 64 sessions
            write_msg(writer, ("ev", i, np.full(640, i, np.float32)))
        assert writes == []  # queued until the iteration ends
        await asyncio.sleep(0)
        assert len(writes) == 1
        msgs = [await asyncio.wait_for(got.get(), 5) for _ in range(64)]
        assert [m[1] for m in msgs] == list(range(64)) and all((m[2] == m[1]).all() for m in msgs)
        write_msg(writer, ("close", 1))
        flush_msgs(writer)
        assert len(writes) == 2 and (await asyncio.wait_for(got.get(), 5)) == ("close", 1)
        writer.close()
        server.close()
        os.unlink(path)

    asyncio.run(main())


def test_handoff_wakes_the_loop_once_for_a_burst() -> None:
    """The frame clock's frames reach the replies' queues in order with one wake-up per burst."""
    import threading

    from voice.engines.direct import Handoff

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in range(8)]
        calls = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (calls.append(a), real(*a))[1]  # type: ignore[method-assign]
        h = Handoff()

        def tick(k: int) -> None:
            for i, q in enumerate(queues):
                h.put(loop, q, (k, i))

        for k in range(3):
            th = threading.Thread(target=tick, args=(k,))
            th.start()
            th.join()
            await asyncio.sleep(0)
        assert len(calls) == 3  # one per tick, not one per session
        for i, q in enumerate(queues):
            assert [q.get_nowait() for _ in range(3)] == [(k, i) for k in range(3)]
        return h, queues[0]

    h, q = asyncio.run(main())
    closed = asyncio.new_event_loop()
    closed.close()
    h.put(closed, q, "late")  # a closed loop (shutdown) does not raise into the clock's thread
    assert not h._pending  # noqa: SLF001
