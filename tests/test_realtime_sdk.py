"""The official `openai` SDK's realtime client, unmodified, against an in-process `parley serve`
with the real cascade (Whisper tiny.en + SmolLM2 + Piper, the bundled models), offline:
base_url / websocket_base_url point at 127.0.0.1 and the api key is a dummy. The client streams
real recorded speech (asterisk prompts) in real time, 100 ms per append, like a microphone."""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager

import numpy as np
import pytest

from realtime_util import prompt_pcm, serve
from model.samples import have_prompts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(not have_prompts(), reason="asterisk prompts / ffmpeg not installed")]
openai = pytest.importorskip("openai")
pytest.importorskip("websockets")

CHUNK = 4800  # 100 ms of PCM16 at 24 kHz (bytes = 2 x samples)


@pytest.fixture(scope="module")
def cascade():
    from voice.engines.cascade import CascadeConfig, CascadeEngine

    engine = CascadeEngine(CascadeConfig())
    engine.warm_up()
    real_close = engine.close

    async def keep_open() -> None:  # each test's server shuts down; the models stay loaded
        pass

    engine.close = keep_open
    yield engine
    asyncio.run(real_close())


def _client(host: str):  # noqa: ANN202
    return openai.AsyncOpenAI(api_key="sk-parley-local", base_url=f"http://{host}/v1",
                              websocket_base_url=f"ws://{host}/v1")


class Mic:
    """Sends queued speech, else silence, 100 ms per input_audio_buffer.append, in real time."""

    def __init__(self, conn) -> None:  # noqa: ANN001
        self.conn = conn
        self.queue = bytearray()

    def say(self, pcm: bytes) -> None:
        self.queue += pcm

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0, k = loop.time(), 0
        while True:
            chunk = bytes(self.queue[: 2 * CHUNK]).ljust(2 * CHUNK, b"\0")
            del self.queue[: 2 * CHUNK]
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            k += 1
            await asyncio.sleep(max(0.0, t0 + 0.1 * k - loop.time()))


class Events:
    """Reads the connection with `async for` (the SDK's parsed models) into a list."""

    def __init__(self, conn) -> None:  # noqa: ANN001
        self.conn = conn
        self.items: list = []
        self.times: list[float] = []
        self._new = asyncio.Event()

    async def run(self) -> None:
        async for ev in self.conn:
            self.items.append(ev)
            self.times.append(time.monotonic())
            self._new.set()

    async def until(self, pred, timeout: float = 90.0):  # noqa: ANN001, ANN201
        try:
            async with asyncio.timeout(timeout):
                i = 0
                while True:
                    while i < len(self.items):
                        if pred(self.items[i]):
                            return self.items[i]
                        i += 1
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:  # say what did arrive: a bare timeout explains nothing
            seen = [getattr(e, "type", "?") + (f"({e.response.status})" if getattr(e, "type", "") == "response.done"
                                               else "") for e in self.items]
            raise AssertionError(f"no matching event in {timeout:g} s; events so far: {seen}") from None

    def of(self, t: str) -> list:
        return [e for e in self.items if e.type == t]


async def _open(host: str):  # noqa: ANN202
    mgr = _client(host).realtime.connect(model="parley")
    conn = await mgr.enter()
    ev, mic = Events(conn), Mic(conn)
    tasks = [asyncio.create_task(ev.run()), asyncio.create_task(mic.run())]
    await ev.until(lambda e: e.type == "session.created", 10)
    await conn.session.update(session={
        "type": "realtime", "output_modalities": ["audio"], "instructions": "",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "interrupt_response": True,
                                               "create_response": True}},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}}})
    await ev.until(lambda e: e.type == "session.updated", 10)
    return conn, ev, mic, tasks


@asynccontextmanager
async def _talking(engine):  # noqa: ANN001, ANN202
    """A server, a connected SDK client configured for server VAD, its event reader and mic."""
    async with serve(engine) as (host, server):
        conn, ev, mic, tasks = await _open(host)
        try:
            yield server, conn, ev, mic
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await conn.close()


def _audio(ev: Events, response_id: str) -> np.ndarray:
    pcm = b"".join(base64.b64decode(e.delta) for e in ev.of("response.output_audio.delta")
                   if e.response_id == response_id)
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


def test_sdk_spoken_question_gets_an_audio_reply_and_transcripts(cascade) -> None:  # noqa: ANN001
    async def main() -> None:
        async with _talking(cascade) as (server, conn, ev, mic):
            assert isinstance(ev.items[0], openai.types.realtime.SessionCreatedEvent)
            await conn.session.update(session={"type": "realtime", "instructions": "Be kind."})
            await ev.until(lambda e: e.type == "session.updated" and e.session.instructions == "Be kind.")
            sess = next(iter(server.sessions.values()))
            assert sess.engine_session.messages()[0]["content"].endswith("\nBe kind.")  # after Parley's prompt
            mic.say(prompt_pcm("privacy-prompt"))  # "Please enter your phone number, starting with..."
            done = await ev.until(lambda e: e.type == "response.done")
            user = (await ev.until(lambda e: e.type ==
                                   "conversation.item.input_audio_transcription.completed")).transcript
            assert "phone number" in user.lower(), user
            r = done.response
            assert r.status == "completed", r
            audio = _audio(ev, r.id)
            assert len(audio) > 24000 and float(np.sqrt(np.mean(audio**2))) > 0.01
            said = "".join(e.delta for e in ev.of("response.output_audio_transcript.delta"))
            assert len(said.split()) >= 2 and r.output[0].content[0].transcript == said
            stopped = ev.items.index(ev.of("input_audio_buffer.speech_stopped")[0])
            first = ev.items.index(ev.of("response.output_audio.delta")[0])
            print(f"user: {user!r}\nagent: {said!r} ({len(audio) / 24000:.1f} s audio)\n"
                  f"speech_stopped -> first audio delta: {ev.times[first] - ev.times[stopped]:.2f} s")
            assert ev.of("response.created")[0].response.id == r.id

    asyncio.run(main())


@pytest.mark.parametrize("noise_reduction, talk_after_s", [("near_field", 0.4), (None, 1.2)])
def test_sdk_barge_in_cancels_the_reply_and_truncates_it(cascade, noise_reduction, talk_after_s) -> None:  # noqa: ANN001
    """A barge-in cuts the reply: the server cancels it, or (when it was generated in full before
    the VAD confirmed) the client truncates what it had not played; either way the engine keeps
    only what was heard. This client returns no echo (its microphone is a file). Declared as a
    close-talking microphone (`noise_reduction: near_field`, the echo hint of a headset), it talks
    over the reply 0.4 s after its first audio arrives. Without it (the default, null) the server's
    echo guard assumes the worst-case echo path (a loud speaker, no echo cancellation) until it
    has heard ~1 s of input during agent speech, and may take an early barge-in for the agent's
    echo: that client waits 1.2 s, so the guard learns that it returns no echo. A short reply
    may be fully generated before the VAD confirms the interruption (then only its playback is
    cut): the interruption is repeated on the next reply, up to 3 times, to catch one still being
    generated."""

    async def main() -> None:
        async with _talking(cascade) as (server, conn, ev, mic):
            hint = {"audio": {"input": {"noise_reduction": {"type": noise_reduction}}}} if noise_reduction else {}
            await conn.session.update(session={"type": "realtime", "instructions": "Answer at length.", **hint})
            upd = await ev.until(lambda e: e.type == "session.updated" and e.session.instructions == "Answer at length.")
            nr = upd.session.audio.input.noise_reduction
            assert (nr.type if nr else None) == noise_reduction
            assert next(iter(server.sessions.values())).guard.hint.value == (noise_reduction or "unknown")
            mic.say(prompt_pcm("tt-weasels", tail_s=0.8))  # "Weasels have eaten our phone system."
            for _attempt in range(3):
                delta = await ev.until(lambda e: e.type == "response.output_audio.delta" and
                                       not any(d.response.id == e.response_id for d in ev.of("response.done")))
                t_first = time.monotonic()
                await asyncio.sleep(talk_after_s)
                mic.say(prompt_pcm("vm-sorry", lead_s=0.0))  # the user talks over the reply
                done = await ev.until(lambda e: e.type == "response.done" and e.response.id == delta.response_id)
                if done.response.status == "cancelled":
                    break
            started = await ev.until(lambda e: e.type == "input_audio_buffer.speech_started"
                                     and ev.items.index(e) > ev.items.index(delta))
            # like a client that stopped playback at speech_started: truncate to what it played
            t_heard = ev.times[ev.items.index(started)]
            audio_ms = round(1000 * len(_audio(ev, delta.response_id)) / 24000)
            played_ms = min(round(1000 * (t_heard - t_first)), audio_ms)
            if done.response.status == "cancelled":  # generation was still running: the server cut it
                assert done.response.status_details.reason == "turn_detected"
                assert ev.items.index(started) < ev.items.index(done)
            else:  # generated in full before the VAD confirmed: the client was still playing it
                assert done.response.status == "completed" and played_ms < audio_ms, (played_ms, audio_ms)
            await conn.conversation.item.truncate(item_id=delta.item_id, content_index=0,
                                                  audio_end_ms=played_ms)
            tr = await ev.until(lambda e: e.type == "conversation.item.truncated")
            assert tr.item_id == delta.item_id and tr.audio_end_ms == played_ms
            full = "".join(e.delta for e in ev.of("response.output_audio_transcript.delta")
                           if e.response_id == delta.response_id)
            second = await ev.until(lambda e: e.type == "response.done" and ev.items.index(e) > ev.items.index(done)
                                    and ev.items.index(e) > ev.items.index(started))
            assert second.response.status == "completed"
            sess = next(iter(server.sessions.values()))
            hist = sess.engine_session.history  # the cascade's LLM context
            heard = hist[-2]["content"]  # [..., cut reply, the interrupting user turn]
            print(f"{noise_reduction}, talking after {talk_after_s} s: attempts: {_attempt + 1} "
                  f"({done.response.status}); reply: {full!r}\n"
                  f"played {played_ms} of {audio_ms} ms, kept: {heard!r}")
            assert [m["role"] for m in hist[-3:]] == ["user", "assistant", "user"], hist  # only what was played
            assert heard and full.startswith(heard) and len(heard) <= len(full), (heard, full)

    asyncio.run(main())


def test_sdk_malformed_events_get_errors_and_the_connection_survives(cascade) -> None:  # noqa: ANN001
    async def main() -> None:
        async with serve(cascade) as (host, _server):
            mgr = _client(host).realtime.connect(model="parley")
            conn = await mgr.enter()
            ev = Events(conn)
            task = asyncio.create_task(ev.run())
            try:
                await conn.send_raw("{this is not json")
                await conn.send_raw('{"type": "input_audio_buffer.frobnicate"}')
                await conn.input_audio_buffer.append(audio="not base64 !!!")
                await conn.input_audio_buffer.append(audio=base64.b64encode(b"\x00\x01\x02").decode())
                await conn.session.update(session={"type": "realtime", "audio": {
                    "input": {"format": {"type": "audio/pcmu"}}}})
                await conn.conversation.item.truncate(item_id="item_nope", content_index=0, audio_end_ms=10)
                await ev.until(lambda e: len(ev.of("error")) == 6, 10)
                codes = [e.error.code for e in ev.of("error")]
                assert codes == ["invalid_json", "invalid_event_type", "invalid_base64", "invalid_audio_format",
                                 "unsupported_audio_format", "item_not_found"], codes
                assert all(isinstance(e, openai.types.realtime.RealtimeErrorEvent) for e in ev.of("error"))
                await conn.session.update(session={"type": "realtime", "instructions": "still here"})
                upd = await ev.until(lambda e: e.type == "session.updated", 10)
                assert upd.session.instructions == "still here"
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await conn.close()

    asyncio.run(main())


def test_sdk_connect_disconnect_cycles_leak_nothing(cascade) -> None:  # noqa: ANN001
    async def main() -> None:
        async with serve(cascade) as (host, server):
            client = _client(host)
            before = {t.get_name() for t in asyncio.all_tasks()}
            turn = prompt_pcm("vm-sorry")
            speech = turn[: 2 * 24000]  # 1 s: a turn starts, the client leaves mid-speech
            t0 = time.monotonic()
            for i in range(20):
                async with client.realtime.connect(model="parley") as conn:
                    first = await conn.recv()
                    assert first.type == "session.created"
                    if i % 5 == 4:  # leave while the cascade answers (ASR / LLM running)
                        await conn.input_audio_buffer.append(audio=base64.b64encode(turn).decode())
                        while (await conn.recv()).type != "response.created":
                            pass
                    elif i % 2:
                        await conn.input_audio_buffer.append(audio=base64.b64encode(speech).decode())
                    assert len(server.sessions) == 1
            dt = time.monotonic() - t0

            def leftover() -> set[str]:  # the server's tasks (handlers, sessions, writers) that remain
                names = {t.get_name() for t in asyncio.all_tasks()} - before
                return {n for n in names if not n.startswith("parley-vad-batch")}

            deadline = time.monotonic() + 5.0
            while (server.sessions or leftover()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            print(f"20 cycles in {dt:.1f} s; left after {5 - deadline + time.monotonic():.2f} s: {leftover()}")
            assert server.sessions == {} and not leftover(), leftover()

    asyncio.run(main())
