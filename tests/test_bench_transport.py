"""The benchmark client's clocks against a minimal in-process WebRTC agent whose times are known.

The agent is a bare aiohttp + aiortc peer in the same process (same monotonic clock): it logs
the exact time each of its output frames is handed to aiortc, and receives the client's audio
through a `Recorder` (packet arrival times). So the client's measurements can be checked
against ground truth without any model:
  * uplink: the user's end of speech arrives at the agent 15-50 ms (median) after the client
    says it was spoken (20 ms packetization + Opus + loopback);
  * downlink: the agent's first sample is heard at the client 0-20 ms (median) after it was
    handed to aiortc, and its silence likewise (aiortc's 80 ms jitter buffer must not count).
"""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame

from model.common.audio_constants import WEBRTC_FRAME, WEBRTC_SR
from voice.client import signal as sig
from voice.client.peer import ClientPeer
from voice.client.recorder import Recorder

pytestmark = pytest.mark.timeout(120)


class ScheduledOutput(MediaStreamTrack):
    """Agent output: 20 ms frames in real time from a queue; logs when marked frames leave."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[tuple[np.ndarray, str | None]] = []
        self.marks: dict[str, float] = {}
        self._k = 0
        self._t0: float | None = None

    def say(self, audio: np.ndarray, mark_start: str, mark_end: str) -> None:
        n = -(-len(audio) // WEBRTC_FRAME) * WEBRTC_FRAME
        x = np.zeros(n, dtype=np.float32)
        x[: len(audio)] = audio
        frames = list(x.reshape(-1, WEBRTC_FRAME))
        self.queue += [(f, mark_start if i == 0 else None) for i, f in enumerate(frames)]
        self.queue.append((np.zeros(WEBRTC_FRAME, dtype=np.float32), mark_end))

    async def recv(self) -> AudioFrame:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._k * WEBRTC_FRAME / WEBRTC_SR
        if due > now:
            await asyncio.sleep(due - now)
        x, mark = self.queue.pop(0) if self.queue else (np.zeros(WEBRTC_FRAME, dtype=np.float32), None)
        f = AudioFrame.from_ndarray((x * 32767).astype(np.int16).reshape(1, WEBRTC_FRAME), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = WEBRTC_SR, self._k * WEBRTC_FRAME, fractions.Fraction(1, WEBRTC_SR)
        self._k += 1
        if mark:
            self.marks[mark] = time.monotonic()
        return f


class MiniAgent:
    def __init__(self) -> None:
        self.out = ScheduledOutput()
        self.rec: Recorder | None = None
        self.pcs: list[RTCPeerConnection] = []

    async def offer(self, request: web.Request) -> web.Response:
        p = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            self.rec = Recorder(track, receiver)
            self.rec.start()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=p["sdp"], type=p["type"]))
        pc.addTrack(self.out)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


def burst(seconds: float, lead: float = 0.2, tail: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * WEBRTC_SR)) / WEBRTC_SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.concatenate([np.zeros(int(lead * WEBRTC_SR), np.float32), x, np.zeros(int(tail * WEBRTC_SR), np.float32)])


async def _scenario() -> dict[str, list[float]]:
    agent = MiniAgent()
    app = web.Application()
    app.router.add_post("/offer", agent.offer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    sess = ClientPeer(f"http://127.0.0.1:{port}")
    out: dict[str, list[float]] = {"uplink": [], "onset": [], "offset": []}
    try:
        await sess.connect()
        for k in range(3):
            # uplink: the user's utterance, its end timed by the client and by the agent
            u = burst(0.6 + 0.013 * k)  # shifts the end inside the 20 ms frame
            b = sig.speech_bounds(u, WEBRTC_SR)
            pb = sess.player.play(u)
            s0 = await pb.started
            await pb.finished
            t_end = sess.player.sample_time(s0 + b.end)
            await asyncio.sleep(0.3)
            rec = agent.rec
            x = rec.audio
            db = sig.hop_levels_db(x, WEBRTC_SR)
            last_loud = int(np.flatnonzero(db > -40)[-1] + 1) * sig.hop_size(WEBRTC_SR)
            out["uplink"].append(rec.sample_time(last_loud) - t_end)
            # downlink: the agent says something; start and end handed to aiortc at known times
            agent.out.say(burst(0.5, lead=0.0, tail=0.0), f"s{k}", f"e{k}")
            while f"e{k}" not in agent.out.marks:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.6)
            t_s, t_e = agent.out.marks[f"s{k}"], agent.out.marks[f"e{k}"]
            t_on = sess.onset_after(t_s - 0.3)
            t_off = sess.offset_after(t_s)
            out["onset"].append(t_on - t_s)
            out["offset"].append(t_off - t_e)
    finally:
        await sess.close()
        for pc in agent.pcs:
            await pc.close()
        await runner.cleanup()
    return out


def test_client_clocks_match_the_agent() -> None:
    d = asyncio.run(_scenario())
    ms = {k: [round(v * 1000, 1) for v in vs] for k, vs in d.items()}
    print(ms)
    med = {k: float(np.median(v)) for k, v in ms.items()}
    # medians: physics (20 ms packetization, Opus), robust to a busy shared CPU
    assert 15 <= med["uplink"] <= 50, ms  # an off-by-one-frame sender clock would leave this
    assert 0 <= med["onset"] <= 20, ms  # aiortc's 80 ms jitter buffer would show here
    assert -5 <= med["offset"] <= 30, ms
    # every single one: causal and not far off
    assert all(0 <= v <= 80 for v in ms["uplink"]), ms
    assert all(0 <= v <= 40 for v in ms["onset"]), ms
    assert all(-5 <= v <= 50 for v in ms["offset"]), ms
