"""Records the agent's audio as received by the client, with a time for every sample.

Where the times come from (one clock: `time.monotonic()`):

* **packet arrival**: the RTP receiver is wrapped so that the arrival time of the first packet
  of every RTP timestamp is logged *before* aiortc's jitter buffer. aiortc's audio jitter
  buffer (capacity 16, prefetch 4) releases a frame only when the packet four frames later
  has arrived, i.e. it adds a constant ~80 ms that a browser would not add in the same way;
  timing the decoded frames at `recv()` would charge that to the server. When a frame cannot
  be matched to a packet (it should not happen), its arrival is estimated as
  `recv time - PREFETCH * 20 ms`.
* **heard**: sample i of frame k is taken to be heard at `play[k] + i / sr`, where
  `play[k] = max(arrival[k], play[k-1])`: the moment it reached the client, as by a player
  with no buffering of its own (a browser adds its jitter buffer, typically 20-80 ms, on top).
  Onsets and offsets are timed on this clock. (A player that never plays faster than real
  time would carry every past hiccup of the network or the server into all later turns; real
  players shrink their buffer again, so that is not what a user hears either.)
* **underruns**: counted against a player with a fixed jitter buffer of `jitter_s`: frame k
  is due at `arrival[0] + jitter_s + (pts[k] - pts[0]) / sr`; a frame arriving after its slot
  is an underrun and shifts the schedule by its lateness (as a real player would).

Decoded frames are placed in a growing buffer by their pts, so lost packets leave zeros.
The 5 ms hop levels (`signal.hop_levels_db`, hops aligned to the first received sample) are
kept as frames arrive, so that onset / offset polls do not recompute them: a hop gets its level
once all of its samples are in (frames only append, so a received sample never changes).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from model.common.audio_constants import WEBRTC_FRAME_S, WEBRTC_SR
from voice.client import signal as sig


PREFETCH = 4  # aiortc audio JitterBuffer(capacity=16, prefetch=4)


@dataclass(frozen=True)
class RecvFrame:
    start: int  # first sample index in the received stream (pts - first pts)
    n: int  # samples in the frame
    arrival: float  # monotonic time its packet arrived
    play: float  # monotonic time its first sample is heard (arrival, kept non-decreasing)
    matched: bool  # arrival taken from the packet log (not estimated)


class Recorder:
    """Consumes a remote audio track; keeps the audio (48 kHz mono float32) and frame times."""

    def __init__(self, track: MediaStreamTrack, receiver: object | None = None) -> None:
        self.track = track
        self.frames: list[RecvFrame] = []
        self._starts: list[int] = []  # frame starts, for bisect
        self._plays: list[float] = []  # frame play times, for bisect
        self._buf = np.zeros(WEBRTC_SR * 60, dtype=np.float32)
        self._len = 0
        self.hop = sig.hop_size(WEBRTC_SR)  # samples per level hop (240)
        self._db = np.zeros(len(self._buf) // self.hop, dtype=np.float64)  # hop levels, dBFS
        self._nhops = 0  # hops complete and levelled
        self._pts0: int | None = None
        self._ts0: int | None = None
        self._arrivals: dict[int, float] = {}
        self._task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        if receiver is not None:
            self._wrap_receiver(receiver)

    # -- packet arrival log ------------------------------------------------------------------
    def _wrap_receiver(self, receiver: object) -> None:
        original = receiver._handle_rtp_packet  # type: ignore[attr-defined]
        arrivals = self._arrivals

        async def handle(packet, arrival_time_ms):  # noqa: ANN001 - aiortc's signature
            t = time.monotonic()
            if self._ts0 is None:
                self._ts0 = packet.timestamp
            rel = (packet.timestamp - self._ts0) & 0xFFFFFFFF
            if rel not in arrivals:
                arrivals[rel] = t
            await original(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = handle  # type: ignore[attr-defined]

    # -- consuming ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self._add(frame, time.monotonic())
        except MediaStreamError:
            pass
        finally:
            self.ended.set()

    def _add(self, frame, recv_time: float) -> None:  # noqa: ANN001 - av.AudioFrame
        pcm = frame.to_ndarray()  # (1, n*ch) packed s16 or (ch, n) planar
        channels = len(frame.layout.channels)
        if frame.format.is_planar:
            x = pcm.astype(np.float32).mean(axis=0)
        else:
            x = pcm.reshape(-1, channels).astype(np.float32).mean(axis=1)
        if frame.format.name.startswith("s16"):
            x /= 32768.0
        if frame.sample_rate != WEBRTC_SR:
            raise RuntimeError(f"unexpected received sample rate {frame.sample_rate}")
        pts = int(frame.pts)
        if self._pts0 is None:
            self._pts0 = pts
        start = pts - self._pts0
        if self.frames and start < self.frames[-1].start + self.frames[-1].n:
            return  # duplicate / out of order: ignore
        arrival = self._arrivals.pop(pts, None)
        matched = arrival is not None
        if arrival is None:
            arrival = recv_time - PREFETCH * WEBRTC_FRAME_S
        if self.frames:
            prev = self.frames[-1]
            play = max(arrival, prev.play)
        else:
            play = arrival
        end = start + len(x)
        if end > len(self._buf):
            grow = np.zeros(max(end, 2 * len(self._buf)), dtype=np.float32)
            grow[: self._len] = self._buf[: self._len]
            self._buf = grow
        self._buf[start:end] = x
        self._len = max(self._len, end)
        self._add_levels()
        rf = RecvFrame(start=start, n=len(x), arrival=arrival, play=play, matched=matched)
        self.frames.append(rf)
        self._starts.append(start)
        self._plays.append(play)

    def _add_levels(self) -> None:
        """Levels of the hops completed by the last frame (and of any gap before it)."""
        h0, h1 = self._nhops, self._len // self.hop
        if h1 <= h0:
            return
        if h1 > len(self._db):
            grow = np.zeros(max(h1, 2 * len(self._db)), dtype=np.float64)
            grow[:h0] = self._db[:h0]
            self._db = grow
        self._db[h0:h1] = sig.hop_levels_db(self._buf[h0 * self.hop : h1 * self.hop], WEBRTC_SR)
        self._nhops = h1

    # -- queries -----------------------------------------------------------------------------
    @property
    def levels_db(self) -> np.ndarray:
        """Levels (dBFS) of the complete hops received; hop h is samples [h * hop, (h + 1) * hop)."""
        return self._db[: self._nhops]

    def levels_between(self, t_from: float, t_to: float | None = None) -> tuple[int, np.ndarray]:
        """Hop levels from the first hop at or after the sample playing at `t_from`.

        Up to the last complete hop before the sample playing at `t_to` (None: all received).
        Returns (first sample of the first hop, levels); a view, not a copy.
        """
        h0 = -(-self.index_at(t_from) // self.hop)  # ceil
        h1 = self._nhops if t_to is None else min(self._nhops, self.index_at(t_to) // self.hop)
        return h0 * self.hop, self._db[h0 : max(h0, h1)]

    @property
    def audio(self) -> np.ndarray:
        return self._buf[: self._len]

    @property
    def last_play_end(self) -> float | None:
        if not self.frames:
            return None
        f = self.frames[-1]
        return f.play + f.n / WEBRTC_SR

    def sample_time(self, n: int) -> float:
        """Playout time of received sample n."""
        k = max(0, bisect.bisect_right(self._starts, n) - 1)
        f = self.frames[k]
        return f.play + (n - f.start) / WEBRTC_SR

    def index_at(self, t: float) -> int:
        """Index of the received sample playing at time t (clipped to what was received)."""
        if not self.frames:
            return 0
        k = bisect.bisect_right(self._plays, t) - 1
        if k < 0:
            return 0
        f = self.frames[k]
        return f.start + int(min(max(t - f.play, 0.0) * WEBRTC_SR, f.n))

    def underruns(self, t_from: float, t_to: float, jitter_s: float = 0.06) -> int:
        """Frames that missed their slot in a player with a `jitter_s` buffer, between two times."""
        if not self.frames:
            return 0
        base = self.frames[0].arrival + jitter_s
        s0 = self.frames[0].start
        count = 0
        for f in self.frames:
            due = base + (f.start - s0) / WEBRTC_SR
            late = f.arrival - due
            if late > 0:
                base += late
                if t_from <= f.arrival <= t_to:
                    count += 1
        return count

    @property
    def match_rate(self) -> float:
        """Fraction of frames timed from their packet arrival (1.0 when the hook works)."""
        if not self.frames:
            return 0.0
        return sum(f.matched for f in self.frames) / len(self.frames)

    def frames_between(self, t_from: float, t_to: float) -> int:
        """Frames that arrived between two times."""
        return sum(t_from <= f.arrival <= t_to for f in self.frames)
