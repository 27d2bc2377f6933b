"""The input audio buffer: PCM16 24 kHz appends -> 16 kHz VAD chunks on the input clock.

`feed(pcm)` resamples (one soxr stream per connection, no clicks between appends) and yields
512-sample chunks with their input time `t` (seconds of audio received, end of the chunk).
Chunks not yet committed are kept with their arrival time (monotonic) so that a committed turn
can tell the engine when its speech ended on the server clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import numpy as np

from model.common.audio_constants import SPEECH_SR as VAD_SR
from model.common.audio_constants import VAD_CHUNK
from model.common.audio_constants import VAD_CHUNK_S as CHUNK_S
from voice.realtime.protocol import REALTIME_SR


class InputBuffer:
    def __init__(self) -> None:
        self.t = 0.0  # input clock: end of the last chunk
        self._rs = None  # soxr.ResampleStream 24 kHz -> 16 kHz
        self._tail = np.zeros(0, np.float32)  # < one chunk at 16 kHz
        self._chunks: deque[tuple[float, float, np.ndarray]] = deque()  # (input t, monotonic t, chunk)

    def feed(self, pcm: np.ndarray) -> Iterator[tuple[np.ndarray, float]]:
        import soxr  # noqa: PLC0415

        if self._rs is None:
            self._rs = soxr.ResampleStream(REALTIME_SR, VAD_SR, 1, dtype="float32")
        y = self._rs.resample_chunk(pcm.astype(np.float32) / 32768.0)
        buf = np.concatenate([self._tail, y]) if len(self._tail) else y
        n = len(buf) // VAD_CHUNK * VAD_CHUNK
        self._tail = buf[n:].copy()
        t_wall = time.monotonic()
        for i in range(0, n, VAD_CHUNK):
            self.t += CHUNK_S
            chunk = np.ascontiguousarray(buf[i : i + VAD_CHUNK])
            self._chunks.append((self.t, t_wall, chunk))
            yield chunk, self.t

    def keep_last(self, n: int) -> None:
        while len(self._chunks) > n:
            self._chunks.popleft()

    def drop_until(self, t: float) -> None:
        """Forget chunks that end at or before input time t."""
        while self._chunks and self._chunks[0][0] <= t:
            self._chunks.popleft()

    def take(self, until: float | None = None, t_end: float | None = None) -> tuple[np.ndarray, float]:
        """Commit: the kept audio (chunks ending by `until`; all of it plus the partial chunk when
        None) and the arrival time of input time `t_end` (now when unknown). Empties the buffer."""
        chunks = [(t, tw, c) for t, tw, c in self._chunks if until is None or t <= until]
        parts = [c for _, _, c in chunks] + ([self._tail] if until is None else [])
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        t_wall = next((tw for t, tw, _ in chunks if t_end is not None and t >= t_end), time.monotonic())
        self.clear()
        return audio, t_wall

    def seconds(self) -> float:
        return (sum(len(c) for _, _, c in self._chunks) + len(self._tail)) / VAD_SR

    def clear(self) -> None:
        self._chunks.clear()
        self._tail = np.zeros(0, np.float32)
