"""A real-time "microphone" for aiortc that plays utterances on demand, silence in between.

The track emits 20 ms frames of 48 kHz mono s16. Frame k holds samples [k*960, (k+1)*960) of
the sent stream and is returned by `recv()` when its last sample would have been captured by
a real microphone: at t0 + (k+1) * 20 ms on the monotonic clock. The actual return time of
every frame is logged, so `sample_time(n)` gives the wall time at which sample n of the sent
stream was "spoken", even when the event loop is late (a stall over 100 ms restarts the clock
rather than sending a burst):

    sample_time(n) = emit_time[k] - ((k + 1) * 960 - n) / 48000,   k = n // 960

Utterances queued with `play()` start at the next frame boundary; `play()` returns a handle
whose `start` (first sample index in the sent stream) is known once playback begins.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from model.common.audio_constants import WEBRTC_FRAME, WEBRTC_FRAME_S, WEBRTC_SR

RESYNC_S = 0.1  # a sender this late restarts its clock instead of sending a burst


@dataclass
class Playback:
    """One utterance queued on the player."""

    audio: np.ndarray  # (T,) float32 at 48 kHz
    started: asyncio.Future = field(repr=False)  # -> int: first sample index in the sent stream
    finished: asyncio.Future = field(repr=False)  # -> int: one past its last sample index

    @property
    def start(self) -> int:
        return int(self.started.result())


class UtterancePlayer(MediaStreamTrack):
    """Sends queued utterances in real time, silence (zeros) when idle."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[Playback] = deque()
        self._current: Playback | None = None
        self._pos = 0  # position inside the current utterance
        self._t0: float | None = None
        self.emit_times: list[float] = []  # monotonic time frame k was returned by recv()
        self.max_lag = 0.0  # worst lateness of a frame against its real-time slot (s)

    # -- control -----------------------------------------------------------------------------
    def play(self, audio: np.ndarray) -> Playback:
        loop = asyncio.get_running_loop()
        pb = Playback(
            audio=np.asarray(audio, dtype=np.float32),
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
    def _next_samples(self, k: int) -> np.ndarray:
        out = np.zeros(WEBRTC_FRAME, dtype=np.float32)
        filled = 0
        while filled < WEBRTC_FRAME:
            if self._current is None:
                if not self._queue:
                    break
                self._current = self._queue.popleft()
                self._pos = 0
                if not self._current.started.done():
                    self._current.started.set_result(k * WEBRTC_FRAME + filled)
            pb = self._current
            n = min(WEBRTC_FRAME - filled, len(pb.audio) - self._pos)
            out[filled : filled + n] = pb.audio[self._pos : self._pos + n]
            filled += n
            self._pos += n
            if self._pos >= len(pb.audio):
                if not pb.finished.done():
                    pb.finished.set_result(k * WEBRTC_FRAME + filled)
                self._current = None
        return out

    async def recv(self) -> AudioFrame:
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
        samples = self._next_samples(k)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, WEBRTC_FRAME), format="s16", layout="mono")
        frame.sample_rate = WEBRTC_SR
        frame.pts = k * WEBRTC_FRAME
        frame.time_base = fractions.Fraction(1, WEBRTC_SR)
        t = time.monotonic()
        self.emit_times.append(t)
        if self._current is not None or np.any(samples):  # lateness matters while speaking
            self.max_lag = max(self.max_lag, t - due)
        return frame
