"""Sessions over real WebRTC (aiortc client <-> in-process server, tone engine, real audio).

* 50 connect/disconnect cycles (every 10th in the middle of a reply): no sessions, tasks or
  memory left behind;
* barge-in: a real utterance during the agent's reply silences it within a frame of the VAD
  decision (server) and at the client soon after; the history keeps only the played words;
* echo: the agent's own speech fed back into the microphone at -10 dB with 50-200 ms delay
  does not interrupt it, while a real utterance on top of the same echo does; with the echo
  guard off the echo alone interrupts (so the test can fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import gc
import json
import time
from collections import deque

import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from voice.engines.tone import ToneConfig, ToneEngine
from voice.server.app import Server, ServerConfig
from voice.server.turns import TurnConfig

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
SR, FRAME = 48000, 960


class Mic(MediaStreamTrack):
    """Real-time microphone: queued utterances + an optional echo of what the client received."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: deque[np.ndarray] = deque()
        self.cur = np.zeros(0, np.float32)
        self.k = 0
        self.t0: float | None = None
        self.echo_delay: float | None = None  # seconds; None: no echo
        self.echo_gain = 10 ** (-10 / 20)  # -10 dB
        self.heard: deque[tuple[float, np.ndarray]] = deque()  # (arrival time, frame)

    def say(self, x: np.ndarray) -> None:
        self.queue.append(np.asarray(x, np.float32))

    @property
    def busy(self) -> bool:
        return bool(self.queue) or len(self.cur) > 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        due = self.t0 + self.k * FRAME / SR
        if due > now:
            await asyncio.sleep(due - now)
        out = np.zeros(FRAME, np.float32)
        i = 0
        while i < FRAME and (len(self.cur) or self.queue):
            if not len(self.cur):
                self.cur = self.queue.popleft()
            n = min(FRAME - i, len(self.cur))
            out[i : i + n] = self.cur[:n]
            self.cur = self.cur[n:]
            i += n
        if self.echo_delay is not None:
            now = time.monotonic()
            while self.heard and self.heard[0][0] + self.echo_delay <= now:
                out += self.echo_gain * self.heard.popleft()[1]
        f = AudioFrame.from_ndarray((np.clip(out, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
                                    format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = SR, self.k * FRAME, fractions.Fraction(1, SR)
        self.k += 1
        return f


class Client:
    def __init__(self, url: str, echo_hint: str | None = None) -> None:
        self.url = url
        self.echo_hint = echo_hint  # the offer's "echo_hint" (None: not sent, the server assumes unknown)
        self.mic = Mic()
        self.events: list[tuple[float, dict]] = []
        self.frames: list[tuple[float, float]] = []  # (arrival, rms) of every received frame
        self.pc: RTCPeerConnection | None = None
        self._reader: asyncio.Task | None = None

    async def connect(self) -> None:
        import aiohttp

        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self.mic)
        ch = pc.createDataChannel("events")
        ch.on("message", lambda m: self.events.append((time.monotonic(), json.loads(m))))

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            self._reader = asyncio.ensure_future(self._read(track))

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if self.echo_hint is not None:
            body["echo_hint"] = self.echo_hint
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url + "/offer", json=body) as r:
                ans = await r.json()
                assert r.status == 200, ans
        await pc.setRemoteDescription(RTCSessionDescription(ans["sdp"], ans["type"]))
        await self.wait(lambda: any(e["type"] == "ready" for _, e in self.events), 15)

    async def _read(self, track) -> None:  # noqa: ANN001
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            x = f.to_ndarray().reshape(-1, len(f.layout.channels)).mean(1) / 32768.0
            self.frames.append((t, float(np.sqrt(np.mean(x**2)))))
            self.mic.heard.append((t, x.astype(np.float32)))

    def of(self, type_: str) -> list[dict]:
        return [e for _, e in self.events if e["type"] == type_]

    def time_of(self, type_: str) -> float | None:
        return next((t for t, e in self.events if e["type"] == type_), None)

    async def wait(self, cond, timeout: float) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timeout; events: {[e['type'] for _, e in self.events]}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.mic.stop()
        if self.pc is not None:
            await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def start(engine: ToneEngine, turn: TurnConfig = TurnConfig()) -> tuple[web.AppRunner, str, Server]:
    server = Server(engine, ServerConfig(max_sessions=8, turn=turn))
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", server  # noqa: SLF001


@contextlib.asynccontextmanager
async def connected(engine: ToneEngine):  # noqa: ANN201
    """A server for ``engine`` and a client connected to it; both closed after."""
    runner, url, _ = await start(engine)
    c = Client(url)
    try:
        await c.connect()
        yield c
    finally:
        await c.close()
        await runner.cleanup()


# --------------------------------------------------------------------------- real audio
def prompt48(name: str, rms: float = 0.08) -> np.ndarray:
    from model.audio import load_audio
    from model.samples import have_prompts, prompt_wav

    if not have_prompts():
        pytest.skip("asterisk-core-sounds-en-g722 not installed")
    x, _ = load_audio(prompt_wav(name), SR)
    return (x * rms / np.sqrt(np.mean(x**2))).astype(np.float32)


@pytest.fixture(scope="module")
def agent_speech(tmp_path_factory) -> str:
    """The agent's reply for the echo tests: real speech (piper joe), ~5 s, at 0.08 RMS."""
    from model.audio import save_wav
    from model.components.tts import load_voice

    v = load_voice("joe")
    x = v.synthesize("Sure. The weather today is sunny and warm, with a light breeze from the west "
                     "and no rain expected until the weekend.")
    x = x * 0.08 / np.sqrt(np.mean(x**2))
    p = tmp_path_factory.mktemp("agent") / "reply.wav"
    save_wav(p, x, v.sample_rate)
    return str(p)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


# --------------------------------------------------------------------------------- tests
def test_50_connect_disconnect_cycles_leave_nothing_behind() -> None:
    q = prompt48("vm-sorry")[: int(1.2 * SR)]

    async def main() -> None:
        runner, url, server = await start(ToneEngine(ToneConfig(delay_ms=50, reply_s=3.0)))
        try:
            mem10 = tasks10 = None
            for k in range(50):
                c = Client(url)
                await c.connect()
                if k % 10 == 9:  # hang up in the middle of the agent's reply
                    c.mic.say(np.concatenate([q, np.zeros(SR, np.float32)]))
                    await c.wait(lambda: c.of("latency"), 15)
                    await asyncio.sleep(0.3)
                await c.close()
                deadline = time.monotonic() + 10
                while server.sessions and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert not server.sessions, f"cycle {k}: session not closed"
                if k == 9:
                    await asyncio.sleep(0.5)
                    gc.collect()
                    mem10, tasks10 = rss_mb(), len(asyncio.all_tasks())
            await asyncio.sleep(0.5)
            gc.collect()
            mem50, tasks50 = rss_mb(), len(asyncio.all_tasks())
            print(f"rss after 10 cycles {mem10:.1f} MB, after 50 {mem50:.1f} MB; tasks {tasks10} -> {tasks50}")
            assert tasks50 <= tasks10, (tasks10, tasks50)
            assert mem50 - mem10 < 25, (mem10, mem50)
            left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("parley-")]
            assert not left, left
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_barge_in_stops_the_agent_and_keeps_only_played_words() -> None:
    q1, q2 = prompt48("vm-sorry"), prompt48("auth-incorrect")

    async def main() -> None:
        engine = ToneEngine(ToneConfig(delay_ms=100, reply_s=6.0))
        runner, url, server = await start(engine)
        c = Client(url)
        try:
            await c.connect()
            c.mic.say(np.concatenate([q1, np.zeros(SR, np.float32)]))
            await c.wait(lambda: c.of("latency"), 20)
            await asyncio.sleep(1.5)  # the agent has been talking for ~1.5 s
            from voice.client.signal import speech_bounds

            t_say = time.monotonic()
            t_speech = t_say + 0.02 + speech_bounds(q2, SR).start / SR  # starts at the next frame
            c.mic.say(np.concatenate([q2, np.zeros(int(1.5 * SR), np.float32)]))
            await c.wait(lambda: c.of("barge_in"), 10)
            t_barge = c.time_of("barge_in")
            await asyncio.sleep(1.0)
            b = c.of("barge_in")[0]
            done = c.of("agent_done")[0]
            assert b["turn"] == 1 and b["stop_ms"] < 20, b  # flushed within one frame of the decision
            assert b["held_ms"] is not None and b["held_ms"] > 0, b  # held since the first speech chunk
            assert done["interrupted"] and 1000 < done["played_ms"] < 3500, done
            words = engine.text.split()
            kept = done["text"].split()
            assert 0 < len(kept) < len(words) and kept == words[: len(kept)], done
            # the kept words match the played fraction of the reply
            assert abs(len(kept) / len(words) - done["played_ms"] / 6000) < 0.1, (kept, done)
            sess = next(iter(server.sessions.values()))
            assert sess.engine_session.history[1] == {"role": "assistant", "content": done["text"]}
            # at the client: loud until the user speaks, silent soon after (held, then flushed)
            loud_before = [r for t, r in c.frames if t_say - 0.5 < t < t_say]
            after = [r for t, r in c.frames if t_barge + 0.12 < t < t_barge + 0.8]
            assert min(loud_before) > 0.05 and max(after) < 0.01, (min(loud_before), max(after))
            t_silent = next(t for t, r in c.frames if t > t_say and r < 0.01)
            print(f"agent silent at the client {1000 * (t_silent - t_speech):.0f} ms after the user "
                  f"started; barge-in decided {1000 * (t_barge - t_speech):.0f} ms after (event arrival)")
            assert t_silent - t_speech < 1.0  # loose: timing numbers come from `parley bench latency`
            # and the interrupting question got its own reply
            await c.wait(lambda: len(c.of("agent_done")) >= 2, 20)
            assert c.of("user_transcript")[-1]["turn"] == 2
        finally:
            await c.close()
            await runner.cleanup()

    asyncio.run(main())


async def _echo_run(reply_wav: str, delay_s: float | None, guard: bool, user: np.ndarray | None,
                    hint: str | None = None, user_after: float = 1.2) -> dict:
    """One reply of real speech with its echo `delay_s` s late in the mic (None: no echo); the
    user says `user` `user_after` s after the reply's first audio; `hint`: the client's echo hint."""
    engine = ToneEngine(ToneConfig(delay_ms=100, reply_wav=reply_wav))
    runner, url, server = await start(engine, TurnConfig(echo_guard=guard))
    c = Client(url, echo_hint=hint)
    try:
        await c.connect()
        c.mic.echo_delay = delay_s
        c.mic.say(np.concatenate([prompt48("vm-sorry"), np.zeros(SR, np.float32)]))
        await c.wait(lambda: c.of("latency"), 20)
        if user is not None:
            await asyncio.sleep(user_after)
            c.mic.say(user)
        await c.wait(lambda: c.of("agent_done"), 20)
        b = c.of("barge_in")
        return {"barge_in": bool(b), "played_ms": b[0]["played_ms"] if b else None,
                "done": c.of("agent_done")[0], "starts": len(c.of("turn_start")),
                "holds": sum(e["state"] == "starting" for e in c.of("vad"))}
    finally:
        await c.close()
        await runner.cleanup()


def test_echo_of_the_agent_does_not_interrupt_it(agent_speech: str) -> None:
    for d in (0.05, 0.12, 0.2):
        r = asyncio.run(_echo_run(agent_speech, d, guard=True, user=None))
        assert not r["barge_in"] and not r["done"]["interrupted"] and r["starts"] == 1, (d, r)


def test_a_real_utterance_over_the_echo_interrupts(agent_speech: str) -> None:
    user = prompt48("auth-incorrect")
    r = asyncio.run(_echo_run(agent_speech, 0.12, guard=True, user=user))
    assert r["barge_in"] and r["done"]["interrupted"], r


def test_without_the_guard_the_echo_interrupts(agent_speech: str) -> None:
    r = asyncio.run(_echo_run(agent_speech, 0.12, guard=False, user=None))
    assert r["barge_in"], r


def test_a_cough_during_the_reply_only_holds_it_for_a_moment() -> None:
    """A short burst of real speech (150 ms) while the agent talks: the agent may hold its audio
    while the VAD decides, then goes on; no barge-in, the whole reply is played and kept."""
    from model.audio import load_audio
    from model.samples import prompt_wav

    x, _ = load_audio(prompt_wav("auth-incorrect"), SR)
    x = x * 0.08 / np.sqrt(np.mean(x**2))
    burst = x[int(0.5 * SR) : int(0.65 * SR)].astype(np.float32).copy()
    burst[:240] *= np.linspace(0, 1, 240)
    burst[-240:] *= np.linspace(1, 0, 240)

    async def main() -> None:
        engine = ToneEngine(ToneConfig(delay_ms=100, reply_s=4.0))
        async with connected(engine) as c:
            c.mic.say(np.concatenate([prompt48("vm-sorry"), np.zeros(SR, np.float32)]))
            await c.wait(lambda: c.of("latency"), 20)
            await asyncio.sleep(1.0)
            c.mic.say(burst)
            await c.wait(lambda: c.of("agent_done"), 20)
            done = c.of("agent_done")[0]
            assert not c.of("barge_in") and len(c.of("turn_start")) == 1
            assert not done["interrupted"] and done["text"] == engine.text, done
            assert done["played_ms"] == 4000 and done["gap_ms"] == 0

    asyncio.run(main())


def test_a_reply_streamed_slower_than_real_time_reports_its_gaps() -> None:
    """An engine that streams its reply at half real time: the output runs dry between pieces and
    agent_done says how much silence was inserted (~ the reply's length); the whole reply still plays."""

    async def main() -> None:
        async with connected(ToneEngine(ToneConfig(delay_ms=100, reply_s=1.0, stream_speed=0.5))) as c:
            c.mic.say(np.concatenate([prompt48("vm-sorry"), np.zeros(SR, np.float32)]))
            await c.wait(lambda: c.of("agent_done"), 20)
            done = c.of("agent_done")[0]
            assert not done["interrupted"] and done["played_ms"] == 1000, done
            assert 600 <= done["gap_ms"] <= 1300, done

    asyncio.run(main())
