"""A WebRTC client for `parley serve`: the engine of `parley talk`, reusable from Python.

Built on the client's aiortc peer (`voice.client.peer.ClientPeer`: SDP exchange, a real-time
"microphone" track, a recorder with packet arrival times, the data-channel event log), which
`parley bench latency` reuses, so both measure the same way:

    async with VoiceClient(url) as c:          # connects, waits for the first audio frame
        r = await c.ask(audio_48k)             # plays it, waits for the reply to finish
        r.transcript, r.agent_text, r.latency_ms, r.reply  # reply: 48 kHz float32

`latency_ms` is measured at the client: first audible agent sample (playout clock) minus the
end of the question's speech (found on the clean source, not by the server's VAD).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.common.audio_constants import SPEECH_SR, WEBRTC_SR
from model.common.errors import ParleyError

TAIL_SILENCE_S = 1.5  # silence sent after the question so the server's VAD sees its end
NO_TURN_S = 4.0  # no turn_end this long after the question ended: the server heard nothing


@dataclass
class TalkResult:
    transcript: str | None  # what the server heard (user_transcript events joined)
    agent_text: str | None  # what the agent played (agent_done texts joined)
    latency_ms: float | None  # client-measured voice-to-voice latency
    server_total_ms: float | None  # server's end of speech -> first audio queued
    stages: dict[str, float]  # server's stage breakdown (ms)
    reply: np.ndarray = field(repr=False)  # (T,) float32 48 kHz: agent audio from its onset
    events: list[dict] = field(repr=False, default_factory=list)
    gap_ms: int | None = None  # silence the server inserted mid-reply (engine behind real time); None: not reported

    @property
    def reply_audible(self) -> bool:
        return self.latency_ms is not None


class VoiceClient:
    """An aiortc user of a Parley server (see module docstring)."""

    def __init__(self, url: str = "http://127.0.0.1:8080", engine: str | None = None) -> None:
        from voice.client.peer import ClientPeer  # noqa: PLC0415

        self.session = ClientPeer(url, engine=engine)

    async def __aenter__(self) -> "VoiceClient":
        await self.session.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    @property
    def events(self) -> list[dict]:
        return [e.data for e in self.session.events]

    def _events_after(self, t: float) -> list:
        return [e for e in self.session.events if e.t >= t]

    async def play(self, audio_48k: np.ndarray) -> tuple[float, float]:
        """Play audio as the microphone; returns (capture time of its first, last sample)."""
        pb = self.session.player.play(np.asarray(audio_48k, np.float32))
        s0 = await pb.started
        await pb.finished
        t0 = self.session.player.sample_time(s0)
        t1 = self.session.player.sample_time(s0 + len(audio_48k) - 1)
        return t0, t1

    async def ask(self, audio_48k: np.ndarray, timeout: float = 60.0) -> TalkResult:
        """Say `audio_48k` (+ silence), wait until the agent's reply is over; collect it all."""
        from voice.client import signal as sig  # noqa: PLC0415

        s = self.session
        x = np.asarray(audio_48k, np.float32)
        try:
            bounds = sig.speech_bounds(x, WEBRTC_SR)
        except ValueError:
            raise ParleyError("the question holds no audible speech") from None
        t_start = time.monotonic()
        x = np.concatenate([x, np.zeros(int(TAIL_SILENCE_S * WEBRTC_SR), np.float32)])
        pb = s.player.play(x)
        s0 = await pb.started
        t_end = await s.player.wait_sent(s0 + bounds.end)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self._events_after(t_start)
            ends = sum(e.type == "turn_end" for e in evs)
            dones = sum(e.type == "agent_done" for e in evs)
            if ends and dones >= ends and pb.finished.done():
                break
            if not ends and pb.finished.done() and time.monotonic() - t_end > NO_TURN_S:
                raise ParleyError("the server heard no turn in the question (too quiet or too short?)")
            await asyncio.sleep(0.05)
        else:
            raise ParleyError(f"no complete reply from the server within {timeout:.0f} s")
        await asyncio.sleep(0.3)  # the last frames in flight
        onset = s.onset_after(t_end)
        evs = [e.data for e in self._events_after(t_start)]
        users = [e.get("text", "") for e in evs if e.get("type") == "user_transcript"]
        agents = [e.get("text", "") for e in evs if e.get("type") == "agent_done" and e.get("text")]
        lat = next((e for e in evs if e.get("type") == "latency"), None)
        reply = np.zeros(0, np.float32)
        if onset is not None:
            rec = s.recorder
            reply = rec.audio[rec.index_at(onset) :].copy()
        return TalkResult(
            transcript=" ".join(u for u in users if u) or None,
            agent_text=" ".join(agents) or None,
            latency_ms=None if onset is None else round(1000 * (onset - t_end), 1),
            server_total_ms=None if lat is None else lat.get("total_ms"),
            stages=dict(lat.get("stages", {})) if lat else {},
            reply=reply,
            events=evs,
            gap_ms=_gap_ms(evs),
        )


async def talk_async(question: str | Path, url: str, timeout: float = 60.0) -> TalkResult:
    from model.audio import load_audio  # noqa: PLC0415

    x, _ = load_audio(question, WEBRTC_SR)
    async with VoiceClient(url) as c:
        return await c.ask(x, timeout=timeout)


def talk(question: str | Path, url: str = "http://127.0.0.1:8080", out: str | Path | None = None,
         timeout: float = 60.0) -> TalkResult:
    """Blocking `parley talk`: ask one question, optionally save the reply as a WAV."""
    import logging  # noqa: PLC0415

    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    result = asyncio.run(talk_async(question, url, timeout))
    if out is not None:
        from model.audio import save_wav  # noqa: PLC0415

        save_wav(out, result.reply, WEBRTC_SR)
    return result


def transcribe_reply(r: TalkResult, asr: str = "tiny.en") -> str:
    """What Whisper (the bundled `asr`, on this CPU) hears in the reply: an independent check that
    the agent's audio says words, whatever the engine claims it said."""
    from model.audio import resample  # noqa: PLC0415
    from model.components.asr_ct2 import load_asr  # noqa: PLC0415

    if not len(r.reply):
        return ""
    return load_asr(asr).transcribe(resample(r.reply, WEBRTC_SR, SPEECH_SR)).strip()


def _gap_ms(evs: list[dict]) -> int | None:
    gaps = [e["gap_ms"] for e in evs if e.get("type") == "agent_done" and "gap_ms" in e]
    return sum(gaps) if gaps else None


def print_result(r: TalkResult) -> None:
    print(f"you said:   {r.transcript or '(nothing recognized)'}")
    print(f"agent said: {r.agent_text or '(no reply)'}")
    if r.latency_ms is None:
        print("latency:    no audible reply")
        return
    stages = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in r.stages.items())
    server = f"; server {r.server_total_ms:.0f} ms ({stages})" if r.server_total_ms is not None else ""
    print(f"latency:    {r.latency_ms:.0f} ms voice-to-voice at the client{server}")
    if r.gap_ms is not None:
        print(f"gaps:       {r.gap_ms} ms of silence inserted mid-reply (the engine behind real time)")
