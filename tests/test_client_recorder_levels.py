"""The Recorder's incremental hop levels and the ClientPeer polls that read them.

Checked against the full recomputation the polls used to do on every call
(`detect_onset(rec.audio[i0:], ...)` etc.): same answers within one 5 ms hop.
"""

from __future__ import annotations

import fractions

import numpy as np
from av import AudioFrame

from model.common.audio_constants import WEBRTC_FRAME, WEBRTC_FRAME_S, WEBRTC_SR
from voice.client import signal as sig
from voice.client.peer import ClientPeer
from voice.client.recorder import PREFETCH, Recorder

SR = WEBRTC_SR
HOP_S = sig.hop_size(SR) / SR
T_RECV0 = 100.0  # monotonic time the first frame is received


def frame(x: np.ndarray, pts: int) -> AudioFrame:
    """A decoded frame as aiortc hands it over: packed s16 mono."""
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    f = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = SR, pts, fractions.Fraction(1, SR)
    return f


def agent_audio() -> np.ndarray:
    """1 s of -70 dBFS noise, 0.6 s of a tone, 0.8 s of noise again."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(int(2.4 * SR)) * 10 ** (-70 / 20)).astype(np.float32)
    t = np.arange(int(0.6 * SR)) / SR
    x[SR : SR + len(t)] += (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return x


def feed(rec: Recorder, x: np.ndarray, n: int, lost: frozenset[int] = frozenset()) -> None:
    """Frames of n samples in order (those in `lost` never arrive), one per n / sr seconds."""
    for k in range(len(x) // n):
        if k not in lost:
            rec._add(frame(x[k * n : (k + 1) * n], k * n), T_RECV0 + k * n / SR)  # noqa: SLF001


def peer_with(rec: Recorder) -> ClientPeer:
    p = ClientPeer("http://127.0.0.1:1")
    p.recorder = rec
    p.floor_db = sig.floor_in_levels(rec.levels_db[:80])  # the first 400 ms
    p.threshold_db = sig.agent_threshold_db(p.floor_db)
    return p


# the polls as they were: levels recomputed from the sample playing at t_from
def old_onset(p: ClientPeer, t_from: float) -> float | None:
    rec = p.recorder
    i0 = rec.index_at(t_from)
    i = sig.detect_onset(rec.audio[i0:], SR, p.threshold_db)
    return None if i is None else rec.sample_time(i0 + i)


def old_offset(p: ClientPeer, t_from: float) -> float | None:
    rec = p.recorder
    i0 = rec.index_at(t_from)
    i = sig.detect_offset(rec.audio[i0:], SR, p.threshold_db)
    return None if i is None else rec.sample_time(i0 + i)


def old_loud(p: ClientPeer, t_from: float, t_to: float) -> bool:
    rec = p.recorder
    db = sig.hop_levels_db(rec.audio[rec.index_at(t_from) : rec.index_at(t_to)], SR)
    return bool(len(db)) and bool((db > p.threshold_db).any())


def test_levels_are_kept_as_frames_arrive() -> None:
    x = agent_audio()
    rec = Recorder(track=None)
    n = 500  # frames that do not end on hop boundaries: a hop is levelled once complete
    for k in range(len(x) // n):
        if k in (7, 300):  # lost packets: zeros
            continue
        rec._add(frame(x[k * n : (k + 1) * n], k * n), T_RECV0 + k * n / SR)  # noqa: SLF001
        if k == 150:  # a duplicate and an out-of-order frame: ignored
            rec._add(frame(np.ones(n, np.float32), k * n), 0.0)  # noqa: SLF001
            rec._add(frame(np.ones(n, np.float32), (k - 3) * n), 0.0)  # noqa: SLF001
        assert len(rec.levels_db) == len(rec.audio) // rec.hop
        np.testing.assert_array_equal(rec.levels_db, sig.hop_levels_db(rec.audio, SR))
    assert rec.levels_db[7 * n // rec.hop + 1] == sig.SILENCE_DB  # inside the lost packet


def test_levels_grow_past_the_first_buffer() -> None:
    rec = Recorder(track=None)
    n_frames = int(61.0 / WEBRTC_FRAME_S)  # the buffer starts at 60 s
    z = np.zeros(WEBRTC_FRAME, np.float32)
    for k in range(n_frames):
        rec._add(frame(z + (0.1 if k == n_frames - 1 else 0.0), k * WEBRTC_FRAME), float(k))  # noqa: SLF001
    assert len(rec.levels_db) == n_frames * WEBRTC_FRAME // rec.hop
    assert rec.levels_db[-1] > -30 and rec.levels_db[-5] == sig.SILENCE_DB


def test_polls_on_levels_match_full_recomputation() -> None:
    x = agent_audio()
    rec = Recorder(track=None)
    # lost packets: one in the noise before the onset, one in the tone, one in the tail
    feed(rec, x, WEBRTC_FRAME, lost=frozenset({20, 60, 100}))
    p = peer_with(rec)
    play0 = T_RECV0 - PREFETCH * WEBRTC_FRAME_S  # playout time of sample 0 (estimated arrival)
    # t_from off the hop grid, before the onset, and just after it
    for t_from in (play0 + 0.3 + 0.0007, play0 + 0.8123, play0 + 1.0021):
        new, old = p.onset_after(t_from), old_onset(p, t_from)
        assert new is not None and old is not None
        assert abs(new - old) <= HOP_S + 1e-9, (t_from, new, old)
        off_new, off_old = p.offset_after(t_from), old_offset(p, t_from)
        assert off_new is not None and off_old is not None
        assert abs(off_new - off_old) <= HOP_S + 1e-9, (t_from, off_new, off_old)
    assert abs(p.onset_after(play0 + 0.5) - (play0 + 1.0)) <= HOP_S + 1e-9
    assert abs(p.offset_after(play0 + 1.1) - (play0 + 1.6)) <= HOP_S + 1e-9
    for a, b in [(0.5, 0.9), (0.9003, 1.1), (1.55, 1.7), (1.7, 2.3), (1.2, 1.2041), (0.99, 1.0)]:
        assert p.loud_between(play0 + a, play0 + b) == old_loud(p, play0 + a, play0 + b), (a, b)
    # nothing confirmed after the tone; a window in the future reads nothing
    assert p.onset_after(play0 + 1.7) is None and old_onset(p, play0 + 1.7) is None
    assert not p.loud_between(play0 + 5.0, play0 + 6.0)


def test_onset_not_reported_before_its_hops_are_in() -> None:
    x = agent_audio()
    rec = Recorder(track=None)
    p = None
    n = WEBRTC_FRAME
    for k in range(len(x) // n):
        rec._add(frame(x[k * n : (k + 1) * n], k * n), T_RECV0 + k * n / SR)  # noqa: SLF001
        if k == 25:
            p = peer_with(rec)
        if p is None:
            continue
        t_from = T_RECV0 - PREFETCH * WEBRTC_FRAME_S + 0.5003
        new, old = p.onset_after(t_from), old_onset(p, t_from)
        if new is not None:  # confirmed only with the whole confirmation window received
            assert old is not None and abs(new - old) <= HOP_S + 1e-9
            assert rec.last_play_end >= new + sig.CONFIRM_MS / 1000 - 1e-9
        if old is not None and (k + 1) * n >= SR + 2 * n:
            assert new is not None  # at most a frame later than the recomputation
