"""Turn taking: a VAD hysteresis state machine with an echo guard.

Input: one Silero speech probability per 32 ms chunk of user audio (16 kHz, 512 samples),
the chunk's level and its arrival time. States (as pipecat / LiveKit):

    QUIET --p>=start--> STARTING --speech for start_ms--> SPEAKING --p<stop--> STOPPING
      ^                    | (more than start_gap_ms below `stop`)  ^   p>=start  |
      +--------------------+                                        +-------------+
      ^                                        silence for stop_ms                |
      +---------------------------------------------------------------------------+

* a turn starts (TurnStart, the barge-in trigger) when STARTING has seen `start_ms` of speech:
  coughs, clicks and other sounds shorter than that never become a turn. Silero's probability
  stays high for ~2 chunks after a sound stops, so in STARTING a chunk also needs a level
  within `start_drop_db` of the loudest chunk so far (the sound is still going on);
* a turn ends (TurnEnd) after `stop_ms` of silence. The end of speech is the end of the last
  chunk that was speech and still loud (within `end_drop_db` of the turn's peak), so the
  reported VAD endpoint delay includes Silero's lag and is `stop_ms` + ~30-90 ms.

Echo guard: with loudspeakers the agent's own voice comes back through the microphone, and
Silero rightly calls it speech. `EchoGuard` remembers the level of every frame the agent sent
and predicts the loudest echo the microphone can hold now: the loudest agent frame sent in the
last `echo_window_ms` (any echo delay up to that) times the echo path gain (worst case
`echo_gain_db`, then learned from what the microphone hears while the agent talks).
While the agent talks (or just did), a chunk counts as user speech only if it is speech AND
`echo_margin_db` louder than that prediction. The user's voice on top of the echo passes,
the echo alone does not. Browsers' echo cancellation (requested by the demo page) removes most
echo before it reaches us; the guard is for what is left. A client that knows its echo path
says so (`EchoHint`): with echo cancellation or a headset the guard starts at
`echo_cancelled_gain_db` / `echo_near_field_gain_db` instead of the worst case, so the user can
interrupt the first reply early; echo that contradicts the hint sends it back to the worst case.

Defaults were tuned on real speech (150 asterisk prompts, one US female voice; 2026-11-23):
inner pauses (hysteresis 0.5/0.35) were p95 288 ms, max 352 ms, so stop_ms 544 keeps every
prompt in one turn; the end of speech by energy precedes Silero's end by p50 58 ms (p90 87).
Bursts of real speech cut to 100/150/190 ms reach at most 4/6/7 speech chunks with the level
rule (8 without it), so start_ms 256 (8 chunks) rejects every burst under 200 ms (7 chunks
let a 180 ms burst through in tests/test_server_turns.py); whole prompts are confirmed
~270 ms after their energy onset, which is also the barge-in decision time.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from model.common.audio_constants import VAD_CHUNK_MS, VAD_CHUNK_S


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


class TurnPhase(str, enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True)
class TurnConfig:
    start_threshold: float = 0.5  # speech probability that starts / resumes speech
    stop_threshold: float = 0.35  # below this a chunk is silence (hysteresis)
    start_ms: float = 256.0  # speech needed (in STARTING) to confirm a turn; shorter = noise
    start_gap_ms: float = 64.0  # silence tolerated inside STARTING before giving up
    start_drop_db: float = 25.0  # in STARTING a chunk this far below the loudest one is not
    #                              speech (Silero's probability lingers ~60 ms after a sound)
    stop_ms: float = 544.0  # silence that ends a turn
    pause_ms: float = 192.0  # silence after which TurnPause is sent: a speculative engine's reply
    #                          (started at the first silent chunk) may end the turn here; 0 = never
    semantic_stop_ms: float = 800.0  # stop_ms with a speculative engine (its end-of-turn score
    #                                  ends complete turns at the pause; this is the fallback)
    eot_threshold: float | None = None  # end-of-turn score that ends the turn at the pause; None:
    #                                     the engine's own (EndOfTurn.threshold: the cascade's head
    #                                     or end-token mass, chosen by parley bench eot)
    end_drop_db: float = 30.0  # the end of speech is the last chunk within this of the peak
    preroll_ms: float = 320.0  # audio kept before the first speech chunk (soft onsets)
    max_turn_s: float = 30.0  # a turn is cut here even without a pause
    hold_on_start: bool = True  # the agent holds its audio while a sound during its speech is
    #                              being confirmed (STARTING); resumes if it was noise
    echo_guard: bool = True
    echo_gain_db: float = -10.0  # loudest echo expected, relative to the agent's output
    echo_cancelled_gain_db: float = -30.0  # starting gain for EchoHint.CANCELLED (client AEC on;
    #                                        10 dB of room for residual echo, see voice/README.md)
    echo_near_field_gain_db: float = -40.0  # starting gain for EchoHint.NEAR_FIELD (a headset, no
    #                                         loudspeaker: what the guard learns from no echo)
    echo_margin_db: float = 4.0  # user speech must exceed the predicted echo by this much
    echo_window_ms: float = 600.0  # echo delays considered (output sent -> input arrived)
    echo_probe_ms: float = 256.0  # extra speech a start needs when only a hint let it through:
    #                               the agent is held meanwhile, so an echo dies out (<= ~450 ms)

    def chunks(self, ms: float) -> int:
        return max(1, math.ceil(ms / VAD_CHUNK_MS - 1e-9))


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


@dataclass(frozen=True)
class VadChange:
    state: TurnPhase
    t: float


@dataclass(frozen=True)
class TurnStart:
    t: float  # decision time
    t_speech_start: float  # arrival time of the first speech chunk's start


@dataclass(frozen=True)
class TurnEnd:
    t: float  # decision time
    t_speech_end: float  # arrival time of the end of the last speech chunk
    speech_s: float  # speech start -> speech end


@dataclass(frozen=True)
class TurnPause:
    t: float  # pause_ms of silence inside a turn: the user may be done (or may go on)
    t_speech_end: float


@dataclass(frozen=True)
class TurnCancel:
    t: float  # STARTING fell back to QUIET: it was noise (no TurnStart was sent)


TurnEvent = VadChange | TurnStart | TurnEnd | TurnPause | TurnCancel


class TurnDetector:
    """Per-session hysteresis state machine: `push(prob, chunk_db, t) -> [events]`."""

    def __init__(self, cfg: TurnConfig = TurnConfig(), guard: EchoGuard | None = None) -> None:
        self.cfg = cfg
        self.guard = guard
        self.state = TurnPhase.QUIET
        self._n_start = cfg.chunks(cfg.start_ms)
        self._n_probe = cfg.chunks(cfg.echo_probe_ms) if cfg.echo_probe_ms > 0 else 0
        self._n_gap = cfg.chunks(cfg.start_gap_ms)
        self._n_stop = cfg.chunks(cfg.stop_ms)
        self._n_pause = cfg.chunks(cfg.pause_ms) if cfg.pause_ms > 0 else 0
        self._n_max = cfg.chunks(cfg.max_turn_s * 1000.0)
        self._speech = 0  # speech chunks in STARTING
        self._hinted = False  # a chunk of this start passed only thanks to the echo hint
        self._heard: list[tuple[float, float]] = []  # (t, dB) of the chunks heard in STARTING
        self._peak_db = -120.0  # loudest chunk since STARTING began (this turn)
        self._silence = 0  # consecutive silent chunks (STARTING / STOPPING)
        self._chunks = 0  # chunks since the turn started
        self.t_speech_start = 0.0
        self.t_speech_end = 0.0

    def reset(self) -> None:
        self.__init__(self.cfg, self.guard)  # type: ignore[misc]

    def _set(self, state: TurnPhase, t: float, out: list) -> None:
        if state is not self.state:
            self.state = state
            out.append(VadChange(state, t))

    def push(self, prob: float, chunk_db: float, t: float) -> list[TurnEvent]:
        """One 32 ms chunk whose last sample arrived at time t."""
        cfg = self.cfg
        out: list[TurnEvent] = []
        guarded = self.guard is not None and self.state in (TurnPhase.QUIET, TurnPhase.STARTING)
        if guarded and self.state is TurnPhase.QUIET:
            self.guard.observe(t, chunk_db)
        user = (not guarded) or self.guard.is_user(t, chunk_db)
        s = self.state
        if s is TurnPhase.QUIET:
            self._peak_db = chunk_db
        else:
            self._peak_db = max(self._peak_db, chunk_db)
        if s in (TurnPhase.QUIET, TurnPhase.STARTING):
            user = user and chunk_db >= self._peak_db - cfg.start_drop_db
        loud = chunk_db >= self._peak_db - cfg.end_drop_db
        speech = prob >= cfg.start_threshold and user
        silence = prob < cfg.stop_threshold or not user
        if s is TurnPhase.QUIET:
            if speech:
                self._speech, self._silence = 1, 0
                self._heard = [(t, chunk_db)]
                self._hinted = self._hint_only(t, chunk_db)
                self.t_speech_start = t - VAD_CHUNK_S
                self._set(TurnPhase.STARTING, t, out)
                if self._speech >= self._n_start:
                    self._confirm(t, out)
        elif s is TurnPhase.STARTING:
            self._heard.append((t, chunk_db))
            if speech:
                self._speech += 1
                self._silence = 0
                self._hinted = self._hinted or self._hint_only(t, chunk_db)
                if self._speech >= self._n_start:
                    self._confirm(t, out)
            elif silence:
                self._silence += 1
                if self._silence > self._n_gap:
                    self._set(TurnPhase.QUIET, t, out)
                    out.append(TurnCancel(t))
                    if self.guard is not None:
                        self.guard.start_cancelled(t, self._hinted, self._heard)
        elif s is TurnPhase.SPEAKING:
            self._chunks += 1
            if silence:
                self._silence = 1
                self._set(TurnPhase.STOPPING, t, out)
            elif loud:
                self.t_speech_end = t
        elif s is TurnPhase.STOPPING:
            self._chunks += 1
            if prob >= cfg.start_threshold:
                self._silence = 0
                if loud:
                    self.t_speech_end = t
                self._set(TurnPhase.SPEAKING, t, out)
            else:
                self._silence += 1
                if self._silence == self._n_pause and self._n_pause < self._n_stop:
                    out.append(TurnPause(t, self.t_speech_end))
                if self._silence >= self._n_stop:
                    self._end(t, out)
        if self.state in (TurnPhase.SPEAKING, TurnPhase.STOPPING) and self._chunks >= self._n_max:
            if self.state is TurnPhase.SPEAKING:
                self.t_speech_end = t
            self._end(t, out)
        return out

    def force_end(self, t: float) -> list[TurnEvent]:
        """End the turn now (a semantic end-of-turn decision during a pause); [] unless STOPPING."""
        out: list[TurnEvent] = []
        if self.state is TurnPhase.STOPPING:
            self._end(t, out)
        return out

    def _hint_only(self, t: float, chunk_db: float) -> bool:
        return self.guard is not None and self.guard.hint_only(t, chunk_db)

    def _confirm(self, t: float, out: list) -> None:
        if self._hinted and self._speech < self._n_start + self._n_probe:
            return  # the agent is held: an echo the hint underestimated dies out meanwhile
        self._silence = 0
        self._chunks = 0
        self.t_speech_end = t
        self._set(TurnPhase.SPEAKING, t, out)
        out.append(TurnStart(t, self.t_speech_start))

    def _end(self, t: float, out: list) -> None:
        self._set(TurnPhase.QUIET, t, out)
        out.append(TurnEnd(t, self.t_speech_end, max(0.0, self.t_speech_end - self.t_speech_start)))
        self._chunks = 0
        self._silence = 0
