"""The agent's output track: 20 ms frames of 48 kHz mono audio, in real time, from a queue.

The server's `Session` queues agent speech as `Segment`s (one per clause / piece, tagged with
the turn and the words it speaks). `recv()` (pulled by aiortc's RTP sender) paces itself on
the monotonic clock, takes the next 960 samples from the queue (zeros when idle, so the
connection always carries audio) and advances each segment's `sent` counter, which is how the
server knows what the user actually heard. `flush()` empties the queue synchronously: the
frame returned by the next `recv()` is silent, so barge-in stops the agent within one frame.
`pause()` / `resume()` hold the queue (silent frames, nothing consumed) while the VAD decides
whether a sound during the agent's speech is an interruption. While the session marks a turn's
reply as `streaming` (its engine still generating), a frame the queue cannot fill is a gap the user
hears (the engine fell behind real time) once more audio of that reply follows: `starved[turn]`
counts them. Silence after a reply's last piece, while its engine finishes (the LLM's last tokens,
its end-of-turn score), is not heard as a gap and is not counted.
Samples are taken from the queue only when a frame is returned (after the pacing sleep).
`recv()` hands aiortc an Opus packet (mono, encoded here, in the event loop: aiortc would encode
a stereo upmix in its thread pool, and the hop costs more than the encode; a silent stretch after its
first frame is one cached packet, `voice.opus.silence_packet`); `next_samples()` is the same paced
frame as samples.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import CodecContext, Packet

from model.common.audio_constants import WEBRTC_FRAME, WEBRTC_FRAME_S
from voice.opus import TIME_BASE, primed_encoder, silence_packet, to_frame


RESYNC_S = 0.5  # when recv() falls this far behind real time, restart the clock (no burst)


@dataclass(eq=False)
class Segment:
    """A piece of agent audio in the queue."""

    turn: int
    text: str  # words spoken by this piece
    audio: np.ndarray = field(repr=False)  # (T,) float32 at 48 kHz
    sent: int = 0  # samples already handed to aiortc

    @property
    def done(self) -> bool:
        return self.sent >= len(self.audio)


class AgentTrack(MediaStreamTrack):
    """Real-time 48 kHz mono track fed from a queue of `Segment`s."""

    kind = "audio"

    def __init__(self, on_sent: Callable[[float, np.ndarray], None] | None = None) -> None:
        super().__init__()
        self._queue: deque[Segment] = deque()
        self._k = 0  # frames returned
        self._t0: float | None = None
        self.on_sent = on_sent  # called with (monotonic time, (960,) frame) for each frame
        self.idle = asyncio.Event()  # set while nothing is queued
        self.idle.set()
        self.paused = False  # hold: silent frames, the queue is kept (possible barge-in)
        self.underruns = 0  # frames returned more than one frame late
        self.streaming: int | None = None  # the turn whose reply the engine is generating (set by the session)
        self.starved: dict[int, int] = {}  # turn -> frames the queue could not fill while it streamed
        self._unfilled: dict[int, int] = {}  # turn -> such frames since its last piece (gaps if more follows)
        self._opus: CodecContext | None = None
        self._silent_frames = 0  # silent frames sent in a row (from the second on: one cached packet)

    # -- control (event loop thread) ---------------------------------------------------------
    def enqueue(self, turn: int, audio: np.ndarray, text: str = "") -> Segment:
        seg = Segment(turn, text, np.ascontiguousarray(audio, dtype=np.float32).reshape(-1))
        if len(seg.audio):
            if turn in self._unfilled:  # more of this reply: the silence before it was a gap
                self.starved[turn] = self.starved.get(turn, 0) + self._unfilled.pop(turn)
            self._queue.append(seg)
            self.idle.clear()
        return seg

    def flush(self) -> list[Segment]:
        """Drop everything queued (the next frame is silent); returns the dropped segments."""
        dropped = list(self._queue)
        self._queue.clear()
        self.idle.set()
        self.streaming = None  # a barge-in's silence is no gap
        self._unfilled.clear()
        return dropped

    def pause(self) -> None:
        """Hold the queue: the next frame is silent, nothing is consumed until `resume()`."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def gap_frames(self, turn: int) -> int:
        """Frames of silence heard inside `turn`'s reply (forgets the turn)."""
        self._unfilled.pop(turn, None)
        return self.starved.pop(turn, 0)

    def queued_turns(self) -> set[int]:
        return {s.turn for s in self._queue}

    # -- aiortc ------------------------------------------------------------------------------
    def _take(self) -> np.ndarray:
        out = np.zeros(WEBRTC_FRAME, dtype=np.float32)
        i = 0
        while i < WEBRTC_FRAME and self._queue:
            seg = self._queue[0]
            n = min(WEBRTC_FRAME - i, len(seg.audio) - seg.sent)
            out[i : i + n] = seg.audio[seg.sent : seg.sent + n]
            seg.sent += n
            i += n
            if seg.done:
                self._queue.popleft()
        if i < WEBRTC_FRAME and self.streaming is not None:
            self._unfilled[self.streaming] = self._unfilled.get(self.streaming, 0) + 1
        if not self._queue:
            self.idle.set()
        return out

    async def next_samples(self) -> np.ndarray:
        """The next 20 ms frame (960,) float32, returned at its real-time slot."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._k * WEBRTC_FRAME_S
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > RESYNC_S:  # the loop stalled: continue from now instead of bursting
            self._t0 = now - self._k * WEBRTC_FRAME_S
        elif now - due > WEBRTC_FRAME_S:
            self.underruns += 1
        if self.readyState != "live":
            raise MediaStreamError
        x = np.zeros(WEBRTC_FRAME, np.float32) if self.paused else self._take()
        self._k += 1
        if self.on_sent is not None:
            self.on_sent(time.monotonic(), x)
        return x

    async def recv(self) -> Packet:
        x = await self.next_samples()
        k = self._k - 1
        silent = not x.any()
        if silent and self._silent_frames > 0:  # the encoder's look-ahead tail went out in the last packet
            packet = Packet(silence_packet())  # the same bytes a steady encoder makes of silence
            packet.time_base = TIME_BASE
            self._opus = None  # the next speech starts on a fresh encoder, as the decoder heard silence
        else:
            if self._opus is None:
                self._opus = primed_encoder()
            packets = self._opus.encode(to_frame(x, k))
            if not packets:  # libopus returns one packet per frame; never seen empty
                raise MediaStreamError("opus encoder returned no packet")
            packet = packets[0]
        self._silent_frames = self._silent_frames + 1 if silent else 0
        packet.pts = k * WEBRTC_FRAME  # the RTP clock from 0 (libopus starts at -312)
        return packet

    def stop(self) -> None:
        self.flush()
        super().stop()


def played_text(segments: list[Segment]) -> str:
    """The words the user actually heard: whole segments sent, plus the sent fraction of the
    interrupted one (cut at a word boundary, proportionally to its samples)."""
    parts: list[str] = []
    for s in segments:
        if s.done:
            parts.append(s.text.strip())
        elif s.sent > 0:
            words = s.text.split()
            k = int(len(words) * s.sent / max(1, len(s.audio)))
            parts.append(" ".join(words[:k]))
            break
        else:
            break
    return " ".join(p for p in parts if p)
