"""A real-time "microphone" for aiortc that plays utterances on demand, silence in between.

The track emits 20 ms frames of 48 kHz mono audio as Opus packets (`voice.client.opus`: each
utterance is encoded once per process and its packets reused by every session; aiortc sends a packet
as it is). Frame k holds samples [k*960, (k+1)*960) of the sent stream and is returned by `recv()`
when its last sample would have been captured by a real microphone: at t0 + (k+1) * 20 ms on the
monotonic clock. The actual return time of every frame is logged, so `sample_time(n)` gives the wall
time at which sample n of the sent stream was "spoken", even when the event loop is late (a stall
over 100 ms restarts the clock rather than sending a burst):

    sample_time(n) = emit_time[k] - ((k + 1) * 960 - n) / 48000,   k = n // 960

Utterances queued with `play()` start at a frame boundary (the next free one: an utterance
occupies whole frames plus one that flushes the encoder); `play()` returns a handle whose `start`
(first sample index in the sent stream) is known once playback begins.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import Packet

from model.common.audio_constants import WEBRTC_FRAME, WEBRTC_FRAME_S, WEBRTC_SR
from voice.client.opus import OpusPackets, shared
from voice.opus import TIME_BASE

RESYNC_S = 0.1  # a sender this late restarts its clock instead of sending a burst


@dataclass
class Playback:
    """One utterance queued on the player."""

    audio: np.ndarray  # (T,) float32 at 48 kHz
    packets: list[bytes] = field(repr=False)  # its Opus frames (+ one that flushes the encoder)
    started: asyncio.Future = field(repr=False)  # -> int: first sample index in the sent stream
    finished: asyncio.Future = field(repr=False)  # -> int: one past its last sample index

    @property
    def start(self) -> int:
        return int(self.started.result())


class UtterancePlayer(MediaStreamTrack):
    """Sends queued utterances in real time, silence (zeros) when idle."""

    kind = "audio"

    def __init__(self, opus: OpusPackets | None = None) -> None:
        super().__init__()
        self.opus = opus or shared()
        self._queue: deque[Playback] = deque()
        self._current: Playback | None = None
        self._pos = 0  # next packet of the current utterance
        self._t0: float | None = None
        self.emit_times: list[float] = []  # monotonic time frame k was returned by recv()
        self.max_lag = 0.0  # worst lateness of a frame against its real-time slot (s)

    # -- control -----------------------------------------------------------------------------
    def play(self, audio: np.ndarray) -> Playback:
        loop = asyncio.get_running_loop()
        audio = np.asarray(audio, dtype=np.float32)
        pb = Playback(
            audio=audio,
            packets=self.opus.utterance(audio),  # encoded now (once per process), not in a frame's slot
            started=loop.create_future(),
            finished=loop.create_future(),
        )
        self._queue.append(pb)
        return pb

    def stop_all(self) -> None:
        """Drop queued utterances and cut the current one (used when a session ends)."""
        self._queue.clear()
        self._current = None

    @property
    def sent_samples(self) -> int:
        return len(self.emit_times) * WEBRTC_FRAME

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    def sample_time(self, n: int) -> float | None:
        """Monotonic time at which sample n of the sent stream was captured (None: not sent yet)."""
        k = n // WEBRTC_FRAME
        if k >= len(self.emit_times):
            return None
        return self.emit_times[k] - ((k + 1) * WEBRTC_FRAME - n) / WEBRTC_SR

    async def wait_sent(self, n: int) -> float:
        """Wait until sample n has been sent; return its capture time."""
        while (t := self.sample_time(n)) is None:
            if self.readyState != "live":
                raise MediaStreamError
            await asyncio.sleep(WEBRTC_FRAME_S / 2)
        return t

    # -- aiortc ------------------------------------------------------------------------------
    def _next_packet(self, k: int) -> bytes:
        """Frame k's packet: the current utterance's next one, or silence."""
        if self._current is None:
            if not self._queue:
                return self.opus.silence
            self._current = self._queue.popleft()
            self._pos = 0
            if not self._current.started.done():
                self._current.started.set_result(k * WEBRTC_FRAME)
        pb = self._current
        pkt = pb.packets[self._pos]
        self._pos += 1
        if self._pos * WEBRTC_FRAME >= len(pb.audio) and not pb.finished.done():
            pb.finished.set_result(pb.start + len(pb.audio))  # its last sample is in this frame
        if self._pos >= len(pb.packets):
            self._current = None
        return pkt

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        k = len(self.emit_times)
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now - WEBRTC_FRAME_S  # frame 0 is complete now
        due = self._t0 + (k + 1) * WEBRTC_FRAME_S
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > RESYNC_S:  # stalled (start-up, busy CPU): restart the clock, no burst
            self._t0 = now - (k + 1) * WEBRTC_FRAME_S
            due = now
        speaking = self._current is not None or bool(self._queue)
        packet = Packet(self._next_packet(k))
        packet.pts = k * WEBRTC_FRAME
        packet.time_base = TIME_BASE
        t = time.monotonic()
        self.emit_times.append(t)
        if speaking:  # lateness matters while speaking
            self.max_lag = max(self.max_lag, t - due)
        return packet
