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

* with a pause (`pause_ms`, speculative engines) the turn's silence is timed from the energy end:
  a chunk more than `end_drop_db` below the turn's peak is silence even while Silero's probability
  lingers (~58 ms p50), so the pause, the speculative reply and its end-of-turn judge come that
  much sooner; speech must be loud again to resume the turn;
* barge-in onsets: while the agent talks the session holds it on STARTING, and even sooner on
  `SoundOnset`: a QUIET chunk `onset_db` over the quiet floor that the echo guard cannot explain
  (Silero, 32 ms chunks, calls an onset speech one to four chunks later). When the sound goes quiet
  again before STARTING (a click, a knock: two chunks) or lasts `onset_hold_ms` without becoming speech,
  `SoundGone` lets the agent go on; the next onset may come a second later (typing stutters the agent
  at most once a second).

Echo guard (`voice.server.echo_guard`): while the agent talks (or just did), a chunk counts as user
speech only if it is speech AND `echo_margin_db` louder than the loudest echo the agent's recent
output can cause.

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

from model.common.audio_constants import VAD_CHUNK_MS, VAD_CHUNK_S
from voice.server.echo_guard import EchoGuard


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
    energy_end: bool = True  # with a pause: silence is timed from the energy end (False: Silero's)
    onset_hold_ms: float = 320.0  # a SoundOnset holds the agent at most this long unless Silero
    #                               confirms speech (STARTING); 0 = hold on STARTING only
    onset_db: float = 15.0  # an onset chunk is this far above the quiet floor (the quietest chunk
    #                         of the last second) ...
    onset_min_db: float = -50.0  # ... and above this level (dBFS)
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


@dataclass(frozen=True)
class SoundOnset:
    t: float  # QUIET: a sound the echo guard cannot explain began (maybe the user; Silero decides)


@dataclass(frozen=True)
class SoundGone:
    t: float  # that sound went quiet, or did not become speech within onset_hold_ms (no STARTING)


TurnEvent = VadChange | TurnStart | TurnEnd | TurnPause | TurnCancel | SoundOnset | SoundGone
FLOOR_CHUNKS = 31  # the quiet floor: the quietest QUIET chunk of the last ~1 s ...
FLOOR_MIN_CHUNKS = 4  # ... known once this many were heard (no onset before)
ONSET_HYST_DB = 6.0  # a pending onset is gone once chunks fall this far under the level that started it ...
ONSET_QUIET_CHUNKS = 2  # ... this many in a row (a noise just before speech must not let the agent go on)


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
        self._level_end = self._n_pause > 0 and cfg.energy_end  # silence timed from the energy end (speculative)
        self._n_onset = cfg.chunks(cfg.onset_hold_ms) if cfg.onset_hold_ms > 0 else 0
        self._floor: deque[float] = deque(maxlen=FLOOR_CHUNKS)  # levels of QUIET chunks
        self._onset: tuple[float, float, bool, float] | None = None  # a pending SoundOnset: t, dB, hint only, threshold
        self._onset_n = self._onset_quiet = 0  # chunks since it; quiet ones in a row
        self._onset_block = 0  # chunks before the next onset may count (after a SoundGone)
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
        if self._level_end and s in (TurnPhase.SPEAKING, TurnPhase.STOPPING):
            silence = silence or not loud
        if s is TurnPhase.QUIET:
            if not speech:
                self._quiet_chunk(chunk_db, user, t, out)
            else:
                self._onset = None  # STARTING holds the agent from here
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
                if self._n_pause == 1:  # pause_ms <= one chunk: the turn may end as soon as the score says so
                    out.append(TurnPause(t, self.t_speech_end))
            elif loud:
                self.t_speech_end = t
        elif s is TurnPhase.STOPPING:
            self._chunks += 1
            if prob >= cfg.start_threshold and (loud or not self._level_end):
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

    def sound(self, db: float, t: float) -> list[TurnEvent]:
        """An input frame's level as it arrives (before its chunk is complete): a SoundOnset as soon
        as it is heard (~10 ms sooner than at the chunk, on average, with 20 ms frames)."""
        out: list[TurnEvent] = []
        if self.state is TurnPhase.QUIET and self._onset is None and self._onset_block == 0:
            user = self.guard is None or self.guard.is_user(t, db)
            self._maybe_onset(db, user, t, min(self._floor, default=-120.0), out)
        return out

    def _quiet_chunk(self, chunk_db: float, user: bool, t: float, out: list) -> None:
        """A QUIET chunk that is not speech: the floor, a SoundOnset, or a pending one gone."""
        if self._onset is not None:
            self._onset_n += 1
            t0, db, hinted, thr = self._onset
            self._onset_quiet = self._onset_quiet + 1 if chunk_db < thr - ONSET_HYST_DB else 0
            if self._onset_quiet >= ONSET_QUIET_CHUNKS or self._onset_n >= self._n_onset:  # quiet again, too long
                self._onset, self._onset_block = None, FLOOR_CHUNKS
                out.append(SoundGone(t))
                if self.guard is not None:  # as a start that vanished (an echo the hint let through)
                    self.guard.start_cancelled(t, hinted, [(t0, db)])
            return
        floor = min(self._floor, default=-120.0)
        self._floor.append(chunk_db)
        if self._onset_block > 0:
            self._onset_block -= 1
        else:
            self._maybe_onset(chunk_db, user, t, floor, out)

    def _maybe_onset(self, db: float, user: bool, t: float, floor: float, out: list) -> None:
        known = len(self._floor) >= FLOOR_MIN_CHUNKS
        thr = max(floor + self.cfg.onset_db, self.cfg.onset_min_db)
        if self._n_onset and known and user and db >= thr:
            self._onset, self._onset_n, self._onset_quiet = (t, db, self._hint_only(t, db), thr), 0, 0
            out.append(SoundOnset(t))

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
