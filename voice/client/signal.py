"""Level-based speech detection for the benchmark: pure numpy, no models.

Two questions are answered here, on two different signals:

* on the **clean source file** the user plays: where does the speech start and end?
  (`speech_bounds`), the reference for voice-to-voice latency, independent of the server's VAD;
* on the **audio received from the agent**: when does the agent start to be heard
  (`detect_onset`, first level above the noise floor held for a confirmation window) and when
  does it fall silent (`detect_offset`, last loud hop before a silence of `hold_ms`)?

Levels are RMS in dBFS over short hops (`HOP_MS`); positions are returned in samples. The
detectors work on hop levels (`onset_in_levels`, `offset_in_levels`, `floor_in_levels`, in hops),
so that the client's `Recorder` can keep the levels as audio arrives instead of recomputing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOP_MS = 5.0  # analysis hop: 5 ms = 240 samples at 48 kHz (onset resolution)
SILENCE_DB = -100.0  # level given to digital silence
SOURCE_REL_DB = 30.0  # source speech = hops within 30 dB of the loud (p95) level ...
SOURCE_MIN_DB = -60.0  # ... and above -60 dBFS
SOURCE_GAP_MS = 100.0  # loud stretches closer than this are one segment
SOURCE_MIN_SEG_MS = 80.0  # shorter isolated segments are clicks, not speech
AGENT_MIN_DB = -50.0  # agent audio must be above -50 dBFS ...
AGENT_FLOOR_MARGIN_DB = 12.0  # ... and 12 dB above the measured noise floor
CONFIRM_MS = 30.0  # onset confirmed when the next 30 ms ...
CONFIRM_FRACTION = 0.8  # ... are loud in at least 80% of their hops
HOLD_MS = 400.0  # the agent is silent once 400 ms pass without a loud hop


def hop_size(sr: int, hop_ms: float = HOP_MS) -> int:
    return max(1, int(round(sr * hop_ms / 1000.0)))


def hop_levels_db(x: np.ndarray, sr: int, hop_ms: float = HOP_MS) -> np.ndarray:
    """RMS level (dBFS) of consecutive hops; the last partial hop is dropped.  (T,) -> (T // hop,)"""
    hop = hop_size(sr, hop_ms)
    n = len(x) // hop
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    frames = np.asarray(x[: n * hop], dtype=np.float64).reshape(n, hop)  # (n, hop)
    ms = np.mean(frames * frames, axis=1)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(ms)
    return np.maximum(db, SILENCE_DB)


@dataclass(frozen=True)
class SpeechBounds:
    """Speech inside a source file, in samples of that file."""

    start: int  # first sample of the first loud hop
    end: int  # one past the last sample of the last loud hop
    threshold_db: float


def speech_bounds(x: np.ndarray, sr: int, hop_ms: float = 10.0) -> SpeechBounds:
    """Start and end of the speech in a clean source recording (energy, not a VAD model).

    The threshold is relative to the loud level of the file (95th percentile of hop levels),
    so quiet and loud recordings are treated alike; trailing breaths and fades below it
    are not speech. Loud hops less than `SOURCE_GAP_MS` apart form segments; segments
    shorter than `SOURCE_MIN_SEG_MS` (clicks, lip noise) are ignored.
    """
    db = hop_levels_db(x, sr, hop_ms)
    if len(db) == 0 or db.max() <= SOURCE_MIN_DB:
        raise ValueError("no speech found in the source audio (silent or too short)")
    loud = float(np.percentile(db, 95))
    thr = max(loud - SOURCE_REL_DB, SOURCE_MIN_DB)
    idx = np.flatnonzero(db > thr)
    gap = max(1, int(round(SOURCE_GAP_MS / hop_ms)))
    min_len = max(1, int(round(SOURCE_MIN_SEG_MS / hop_ms)))
    segments: list[tuple[int, int]] = []  # [first, last] loud hop of each segment
    for i in idx:
        if segments and i - segments[-1][1] <= gap:
            segments[-1] = (segments[-1][0], int(i))
        else:
            segments.append((int(i), int(i)))
    kept = [s for s in segments if s[1] - s[0] + 1 >= min_len] or segments
    hop = hop_size(sr, hop_ms)
    return SpeechBounds(start=kept[0][0] * hop, end=(kept[-1][1] + 1) * hop, threshold_db=thr)


def floor_in_levels(db: np.ndarray) -> float:
    """Noise floor of hop levels (dBFS): their 20th percentile (`SILENCE_DB` when empty)."""
    if len(db) == 0:
        return SILENCE_DB
    return float(np.percentile(db, 20))


def noise_floor_db(x: np.ndarray, sr: int, hop_ms: float = HOP_MS) -> float:
    """Noise floor of a received stretch: the 20th percentile of its hop levels."""
    return floor_in_levels(hop_levels_db(x, sr, hop_ms))


def agent_threshold_db(floor_db: float) -> float:
    return max(floor_db + AGENT_FLOOR_MARGIN_DB, AGENT_MIN_DB)


def onset_in_levels(
    db: np.ndarray, threshold_db: float, confirm_ms: float = CONFIRM_MS, hop_ms: float = HOP_MS
) -> int | None:
    """First hop of `db` (hop levels, dBFS) that is loud and confirmed; None if there is none yet.

    A hop is confirmed when at least `CONFIRM_FRACTION` of the `confirm_ms` of hops starting at
    it are loud; hops in the last `confirm_ms` of `db` cannot be confirmed yet. Vectorized: the
    loud count of every window comes from one cumulative sum.
    """
    k = max(1, int(round(confirm_ms / hop_ms)))
    loud = np.asarray(db) > threshold_db  # (n,)
    n = len(loud)
    if n < k:
        return None
    c = np.concatenate(([0], np.cumsum(loud, dtype=np.int64)))  # (n + 1,)
    count = c[k:] - c[: n - k + 1]  # loud hops in window [i, i + k), i = 0 .. n - k
    ok = loud[: n - k + 1] & (count / k >= CONFIRM_FRACTION)
    hits = np.flatnonzero(ok)
    return int(hits[0]) if len(hits) else None


def offset_in_levels(
    db: np.ndarray, threshold_db: float, hold_ms: float = HOLD_MS, hop_ms: float = HOP_MS
) -> int | None:
    """One past the last loud hop of `db` before `hold_ms` of quiet hops; None if no such quiet yet.

    0 when `db` starts with `hold_ms` of quiet. Vectorized: the last loud hop before every hop
    is a running maximum.
    """
    k = max(1, int(round(hold_ms / hop_ms)))
    loud = np.asarray(db) > threshold_db  # (n,)
    idx = np.arange(len(loud))
    last_loud = np.maximum.accumulate(np.where(loud, idx, -1))  # last loud hop at or before each
    hits = np.flatnonzero(~loud & (idx - last_loud >= k))
    return int(last_loud[hits[0]] + 1) if len(hits) else None


def detect_onset(
    x: np.ndarray,
    sr: int,
    threshold_db: float,
    confirm_ms: float = CONFIRM_MS,
    hop_ms: float = HOP_MS,
) -> int | None:
    """First sample where the level rises above `threshold_db` and stays there.

    A hop counts as an onset when it is loud and at least `CONFIRM_FRACTION` of the hops of
    the following `confirm_ms` (this hop included) are loud too, so that codec clicks or a
    single noisy hop are ignored. Returns the first sample of that hop, or None.
    """
    h = onset_in_levels(hop_levels_db(x, sr, hop_ms), threshold_db, confirm_ms, hop_ms)
    return None if h is None else h * hop_size(sr, hop_ms)


def detect_offset(
    x: np.ndarray,
    sr: int,
    threshold_db: float,
    hold_ms: float = HOLD_MS,
    hop_ms: float = HOP_MS,
) -> int | None:
    """Where the audio falls silent: one past the last loud hop before `hold_ms` of quiet.

    Scans from the beginning of `x`; returns 0 when `x` starts with `hold_ms` of quiet,
    None when no such silence exists yet (still talking, or too little audio to tell).
    """
    h = offset_in_levels(hop_levels_db(x, sr, hop_ms), threshold_db, hold_ms, hop_ms)
    return None if h is None else h * hop_size(sr, hop_ms)
