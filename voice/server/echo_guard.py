"""The echo guard: the agent's recent output levels predict the loudest echo its microphone can hold.

With loudspeakers the agent's own voice comes back through the microphone, and Silero rightly calls
it speech. `EchoGuard` remembers the level of every frame the agent sent and predicts the loudest
echo the microphone can hold now: the loudest agent frame sent in the last `echo_window_ms` (any echo
delay up to that) times the echo path gain (worst case `echo_gain_db`, then learned from what the
microphone hears while the agent talks). While the agent talks (or just did), a chunk counts as user
speech only if it is speech AND `echo_margin_db` louder than that prediction (`TurnDetector` asks).
A client that knows its echo path says so (`EchoHint`).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from voice.server.turns import TurnConfig

ECHO_HISTORY_CHUNKS = 94  # echo gain learned over the last ~3 s of agent speech
ECHO_LEARN_CHUNKS = 31  # ~1 s heard before the learned gain replaces the worst case
ECHO_PERCENTILE = 90.0  # the learned gain: this percentile of (input - loudest output) dB
ECHO_MIN_GAIN_DB = -40.0  # the learned echo gain never goes below this
ECHO_MIN_REF_DB = -50.0  # output quieter than this teaches nothing about the echo path
ECHO_HINT_CANCELS = 2  # starts that only the hint let through and that vanished: the hint is wrong


class EchoHint(str, enum.Enum):
    """What a client says about its echo path (sets the echo guard's starting gain)."""

    UNKNOWN = "unknown"  # assume the worst (a loudspeaker next to the microphone)
    CANCELLED = "cancelled"  # the client cancels its echo (a browser's getSettings().echoCancellation)
    NEAR_FIELD = "near_field"  # a close-talking microphone: a headset, or no loudspeaker at all
    FAR_FIELD = "far_field"  # an open loudspeaker and a far-field microphone, no cancellation

    @property
    def low_echo(self) -> bool:
        return self in (EchoHint.CANCELLED, EchoHint.NEAR_FIELD)

    @classmethod
    def parse(cls, value: object) -> "EchoHint":
        """An EchoHint from its name; ValueError naming the allowed ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"echo hint must be one of {[h.value for h in cls]}, not {value!r}") from None



def level_db(x: np.ndarray) -> float:
    """Mean-square level of a chunk in dBFS (full-scale sine = -3 dB); -120 for silence."""
    ms = float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
    return 10.0 * math.log10(ms + 1e-12)



class EchoGuard:
    """Remembers the agent's recent output levels; predicts the loudest possible echo.

    The echo path gain starts at the worst case `echo_gain_db` (or, when the client's
    `EchoHint` says its echo is cancelled or it uses a headset, at `echo_cancelled_gain_db` /
    `echo_near_field_gain_db`) and adapts: while the agent talks, the input level relative to
    the loudest recent output is recorded, and once `ECHO_LEARN_CHUNKS` are known the gain is their 90th percentile (never
    above the worst case, never below `ECHO_MIN_GAIN_DB`; speech has pauses and the echo
    arrives late, so a high percentile, not the median). Only chunks heard while the VAD is
    QUIET teach it (not a user starting to talk). With headphones or browser echo cancellation
    the learned gain is low and a soft-spoken user can still interrupt; with a loud speaker it
    stays near the worst case.

    A wrong hint must not let the agent's echo interrupt it. An echo the hint underestimates
    passes as a possible start of speech, the session holds the agent's audio, and the "speech"
    stops with it; such a start (one only the hint let through, `hint_only`) needs
    `echo_probe_ms` more speech to be confirmed, so the echo dies out first. Before the gain is
    learned, `ECHO_HINT_CANCELS` such starts that fell back to quiet (`start_cancelled`) drop
    the hint: the worst case until learned, i.e. the behaviour without a hint. What such a start
    heard is learned as echo when it vanishes (`held`: its loud chunks were never heard in QUIET,
    so the learned gain would otherwise miss the echo). One hesitant start or cough is forgiven.
    """

    def __init__(self, cfg: TurnConfig, hint: EchoHint = EchoHint.UNKNOWN) -> None:
        self.cfg = cfg
        self.hint = hint
        self.hint_dropped = False  # the input contradicted the hint: the worst case until learned
        self._cancels = 0  # hint-only starts that vanished
        self._sent: deque[tuple[float, float]] = deque()  # (monotonic time, level dB)
        self._ratios: deque[float] = deque(maxlen=ECHO_HISTORY_CHUNKS)  # input - output dB

    def set_hint(self, hint: EchoHint) -> None:
        """A new hint from the client (what was learned is kept)."""
        if hint is not self.hint:
            self.hint, self.hint_dropped, self._cancels = hint, False, 0

    @property
    def learned(self) -> bool:
        return len(self._ratios) >= ECHO_LEARN_CHUNKS

    def start_gain_db(self) -> float:
        """The gain used until it is learned: the hint's, or the worst case."""
        if self.hint_dropped or not self.hint.low_echo:
            return self.cfg.echo_gain_db
        cfg = self.cfg
        hinted = cfg.echo_cancelled_gain_db if self.hint is EchoHint.CANCELLED else cfg.echo_near_field_gain_db
        return min(cfg.echo_gain_db, hinted)

    def observe(self, t: float, chunk_db: float) -> None:
        """An input chunk heard while (maybe) the agent talked: learn the echo path gain."""
        ref = self._ref_db(t)
        if ref is not None and ref > ECHO_MIN_REF_DB:
            self._ratios.append(max(chunk_db - ref, ECHO_MIN_GAIN_DB - 20.0))

    def start_cancelled(self, t: float, hinted: bool, held: list[tuple[float, float]]) -> None:
        """A possible start of speech fell back to quiet; `hinted`: only the hint let it through;
        `held`: its chunks (time, level dB)."""
        if hinted and self._trusting() and self._ref_db(t) is not None:
            for tc, db in held:  # it vanished with the agent's audio: it was the echo
                self.observe(tc, db)
            self._cancels += 1
            self.hint_dropped = self._cancels >= ECHO_HINT_CANCELS

    def hint_only(self, t: float, chunk_db: float) -> bool:
        """True when a chunk passes as the user only thanks to the hint (echo at the worst case)."""
        if not self._trusting() or not self.cfg.echo_guard:
            return False
        ref = self._ref_db(t)
        return ref is not None and chunk_db < ref + self.cfg.echo_gain_db + self.cfg.echo_margin_db

    def _trusting(self) -> bool:
        return self.hint.low_echo and not self.hint_dropped and not self.learned

    def gain_db(self) -> float:
        if not self.learned:
            return self.start_gain_db()
        learned = float(np.percentile(np.fromiter(self._ratios, float), ECHO_PERCENTILE))
        return min(self.cfg.echo_gain_db, max(ECHO_MIN_GAIN_DB, learned))

    def note_output(self, t: float, frame: np.ndarray) -> None:
        """An output frame was handed to the transport at time t."""
        db = level_db(frame)
        if db > -90.0:
            self._sent.append((t, db))
        self._trim(t)

    def _trim(self, t: float) -> None:
        horizon = t - self.cfg.echo_window_ms / 1000.0 - 0.1
        while self._sent and self._sent[0][0] < horizon:
            self._sent.popleft()

    def _ref_db(self, t: float) -> float | None:
        lo = t - self.cfg.echo_window_ms / 1000.0
        levels = [db for ts, db in self._sent if lo <= ts <= t]
        return max(levels) if levels else None

    def predicted_echo_db(self, t: float) -> float | None:
        """Loudest echo the input chunk arriving at t may contain; None when the agent was quiet."""
        ref = self._ref_db(t)
        return None if ref is None else ref + self.gain_db()

    def is_user(self, t: float, chunk_db: float) -> bool:
        """True when a speech chunk cannot be explained by echo alone."""
        if not self.cfg.echo_guard:
            return True
        echo = self.predicted_echo_db(t)
        return echo is None or chunk_db >= echo + self.cfg.echo_margin_db
