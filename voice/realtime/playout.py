"""Where the client's playback of the agent's audio is, on the input-audio clock.

Over a WebSocket the server sends audio faster than real time and the client plays it. Parley
assumes the client starts playing each piece when it arrives (or when the previous piece ends)
and plays in real time, on the clock of the microphone audio it streams (seconds of input audio
received). That gives, without any client help:
  * the echo guard's reference: every 20 ms frame "played" is handed to `on_frame(t, frame)`
    as the input clock passes it (`advance`), like the WebRTC output track does;
  * what the user heard when they interrupt (`Piece.played(t)`), for the history the engine
    keeps. A client's `conversation.item.truncate` (audio_end_ms) overrides the estimate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voice.realtime.protocol import REALTIME_SR

FRAME = REALTIME_SR // 50  # 20 ms


@dataclass(eq=False)
class Piece:
    """One piece of agent speech sent to the client (a clause for the cascade)."""

    text: str
    audio: np.ndarray = field(repr=False)  # (T,) float32 at 24 kHz
    t_start: float  # input clock (s) at which the client starts playing it
    t_stop: float = math.inf  # playback cut here (barge-in)
    noted: int = 0  # samples handed to the echo guard

    @property
    def t_end(self) -> float:
        return self.t_start + len(self.audio) / REALTIME_SR

    def played(self, t: float) -> int:
        """Samples the client has played by input time t."""
        s = (min(t, self.t_stop) - self.t_start) * REALTIME_SR
        return int(max(0, min(len(self.audio), s)))


class Playout:
    def __init__(self, on_frame: Callable[[float, np.ndarray], None] | None = None) -> None:
        self.on_frame = on_frame
        self.t_end = 0.0  # when everything sent so far has been played
        self._live: deque[Piece] = deque()  # pieces not yet fully handed to the echo guard

    def add(self, text: str, audio: np.ndarray, t: float) -> Piece:
        """A piece sent at input time t; it plays after what is already queued."""
        p = Piece(text, np.ascontiguousarray(audio, dtype=np.float32).reshape(-1), max(t, self.t_end))
        if len(p.audio):
            self.t_end = p.t_end
            self._live.append(p)
        return p

    def playing(self, t: float) -> bool:
        return t < self.t_end

    def advance(self, t: float) -> None:
        """The input clock reached t: feed the echo guard the frames played until then."""
        while self._live:
            p = self._live[0]
            limit = p.played(t)
            while p.noted < limit:
                frame = p.audio[p.noted : p.noted + FRAME]
                if self.on_frame is not None:
                    self.on_frame(p.t_start + p.noted / REALTIME_SR, frame)
                p.noted += len(frame)
            if p.noted >= len(p.audio) or t >= p.t_stop:
                self._live.popleft()
            else:
                break

    def cut(self, t: float) -> None:
        """The client stops playback at t (barge-in): nothing after t is ever played."""
        self.advance(t)
        for p in self._live:
            p.t_stop = min(p.t_stop, t)
        self._live.clear()
        self.t_end = min(self.t_end, t)


def played_samples(pieces: list[Piece], t: float | None = None, audio_end_ms: int | None = None) -> list[int]:
    """Samples of each piece the user heard: by input time t, or the first `audio_end_ms` of
    the item's audio (the pieces back to back, as `conversation.item.truncate` counts)."""
    if audio_end_ms is None:
        return [p.played(math.inf if t is None else t) for p in pieces]
    left = audio_end_ms * REALTIME_SR // 1000
    out = []
    for p in pieces:
        n = min(left, len(p.audio))
        out.append(n)
        left -= n
    return out
