"""Turn taking: the VAD state machine (synthetic probabilities), the echo guard, the output
history truncation; then Silero on real speech: prompts are one turn each, bursts of
real speech and coughs shorter than 200 ms are no turn."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from model.common.audio_constants import VAD_CHUNK_S, WEBRTC_FRAME
from voice.server.echo_guard import ECHO_HINT_CANCELS, ECHO_LEARN_CHUNKS, EchoGuard, EchoHint
from voice.server.turns import TurnCancel, TurnConfig, TurnDetector, TurnEnd, TurnPhase, TurnStart, VadChange

LOUD = -20.0  # dB level of a speech chunk
QUIET = -90.0


def run(det: TurnDetector, probs, levels=None, t0: float = 0.0):
    """Push chunks; returns [(chunk index, event)]."""
    levels = [LOUD if p >= 0.35 else QUIET for p in probs] if levels is None else levels
    out = []
    for i, (p, db) in enumerate(zip(probs, levels)):
        for e in det.push(p, db, t0 + (i + 1) * VAD_CHUNK_S):
            out.append((i, e))
    return out


def of(evs, kind):
    return [(i, e) for i, e in evs if isinstance(e, kind)]


def test_turn_start_and_end_timing() -> None:
    cfg = TurnConfig()
    det = TurnDetector(cfg)
    probs = [0.0] * 5 + [0.9] * 40 + [0.05] * 40
    evs = run(det, probs)
    starts, ends = of(evs, TurnStart), of(evs, TurnEnd)
    assert len(starts) == 1 and len(ends) == 1
    assert starts[0][0] == 5 + cfg.chunks(cfg.start_ms) - 1  # confirmed after start_ms of speech
    i_end, end = ends[0]
    assert i_end == 45 + cfg.chunks(cfg.stop_ms) - 1  # stop_ms of silence
    assert end.t_speech_end == pytest.approx(45 * VAD_CHUNK_S)  # end of the last speech chunk
    assert end.speech_s == pytest.approx(40 * VAD_CHUNK_S)
    states = [e.state for _, e in evs if hasattr(e, "state")]
    assert states == [TurnPhase.STARTING, TurnPhase.SPEAKING, TurnPhase.STOPPING, TurnPhase.QUIET]


def test_short_sounds_are_not_turns() -> None:
    cfg = TurnConfig()
    n = cfg.chunks(cfg.start_ms)
    for k in range(1, n):  # every burst shorter than start_ms
        det = TurnDetector(cfg)
        evs = run(det, [0.0] * 3 + [0.95] * k + [0.0] * 30)
        assert not of(evs, TurnStart), k
        assert len(of(evs, TurnCancel)) == 1
        assert det.state is TurnPhase.QUIET


def test_lingering_probability_after_a_sound_does_not_count() -> None:
    """Silero stays high ~2 chunks after a sound ends; those chunks are quiet, not speech."""
    cfg = TurnConfig()
    n = cfg.chunks(cfg.start_ms)
    probs = [0.0] * 3 + [0.95] * (n - 1) + [0.9] * 3 + [0.0] * 20
    levels = [QUIET] * 3 + [LOUD] * (n - 1) + [QUIET] * 23
    assert not of(run(TurnDetector(cfg), probs, levels), TurnStart)
    assert of(run(TurnDetector(cfg), probs), TurnStart)  # the same probabilities, loud: a turn


def test_hysteresis_and_inner_pauses_keep_one_turn() -> None:
    cfg = TurnConfig()
    pause = cfg.chunks(cfg.stop_ms) - 2
    probs = [0.9] * 20 + [0.4] * 10 + [0.9] * 10 + [0.1] * pause + [0.9] * 10 + [0.0] * 30
    evs = run(TurnDetector(cfg), probs)
    assert len(of(evs, TurnStart)) == 1 and len(of(evs, TurnEnd)) == 1


def test_max_turn_length_cuts_a_turn() -> None:
    cfg = TurnConfig(max_turn_s=2.0)
    evs = run(TurnDetector(cfg), [0.9] * 200)
    assert len(of(evs, TurnEnd)) >= 2


def test_echo_guard_rejects_echo_and_passes_the_user() -> None:
    cfg = TurnConfig()
    g = EchoGuard(cfg)
    frame = (0.3 * np.sin(np.arange(WEBRTC_FRAME) / 5.0)).astype(np.float32)  # ~ -13.5 dB
    out_db = 10 * np.log10(np.mean(frame**2))
    for k in range(50):
        g.note_output(k * 0.02, frame)
    t = 50 * 0.02
    assert not g.is_user(t, out_db - 10.0)  # echo at -10 dB
    assert not g.is_user(t, out_db - 7.0)
    assert g.is_user(t, out_db)  # a user as loud as the agent
    assert g.is_user(t + 1.0, out_db - 30.0)  # the agent stopped long ago: anything goes
    det = TurnDetector(cfg, g)
    evs = [e for i in range(12) for e in det.push(0.95, out_db - 10.0, t + i * VAD_CHUNK_S)]
    assert not any(isinstance(e, TurnStart) for e in evs)
    assert TurnDetector(TurnConfig(echo_guard=False), EchoGuard(TurnConfig(echo_guard=False))).guard.is_user(
        t, out_db - 10.0)


def _talking_guard(cfg: TurnConfig, hint: EchoHint) -> tuple[EchoGuard, float, float]:
    """A guard that has heard the agent talk for 1 s (frames at ~-13.5 dB): (guard, t, out_db)."""
    g = EchoGuard(cfg, hint)
    frame = (0.3 * np.sin(np.arange(WEBRTC_FRAME) / 5.0)).astype(np.float32)
    for k in range(50):
        g.note_output(k * 0.02, frame)
    return g, 50 * 0.02, float(10 * np.log10(np.mean(frame**2)))


def test_echo_hint_sets_the_starting_gain_and_learning_takes_over() -> None:
    cfg = TurnConfig()
    start = {EchoHint.UNKNOWN: -10.0, EchoHint.FAR_FIELD: -10.0, EchoHint.CANCELLED: -30.0,
             EchoHint.NEAR_FIELD: -40.0}
    for hint, gain in start.items():
        g, t, out_db = _talking_guard(cfg, hint)
        assert g.gain_db() == gain, hint
        assert g.is_user(t, out_db - 20.0) == (gain < -24.0), hint  # a soft user 20 dB under the agent
        for i in range(ECHO_LEARN_CHUNKS):  # then ~1 s of a -18 dB echo: learned, whatever the hint
            g.observe(t + i * 0.001, out_db - 18.0)
        assert g.gain_db() == pytest.approx(-18.0), hint
        for i in range(200):  # a louder echo than the worst case: the gain never goes above it
            g.observe(t + i * 0.001, out_db)
        assert g.gain_db() == -10.0, hint
    assert EchoGuard(TurnConfig(echo_cancelled_gain_db=0.0), EchoHint.CANCELLED).gain_db() == -10.0  # capped
    g = EchoGuard(cfg)
    g.set_hint(EchoHint.NEAR_FIELD)
    assert g.gain_db() == -40.0
    assert EchoHint.parse("cancelled") is EchoHint.CANCELLED
    with pytest.raises(ValueError, match="near_field"):
        EchoHint.parse("headphones")


def test_a_wrong_hint_costs_holds_not_an_interruption() -> None:
    """A -10 dB echo under a 'cancelled' hint passes as speech: the start needs start_ms + the probe
    while the agent is held; the echo dies out, the start is cancelled; the second such start
    drops the hint, and the same echo is then rejected chunk by chunk, as without a hint."""
    cfg = TurnConfig()
    g, t, out_db = _talking_guard(cfg, EchoHint.CANCELLED)
    det = TurnDetector(cfg, g)
    n_echo = cfg.chunks(cfg.start_ms) + 3  # the echo outlasts start_ms (a long echo delay)
    frame = (0.3 * np.sin(np.arange(WEBRTC_FRAME) / 5.0)).astype(np.float32)
    for burst in range(3):
        t0 = t + burst * 0.8
        for k in range(20):  # the agent talks again (resumed after the hold)
            g.note_output(t0 - 0.4 + k * 0.02, frame)
        evs = [e for i in range(n_echo) for e in det.push(0.95, out_db - 10.0, t0 + i * VAD_CHUNK_S)]
        evs += [e for i in range(n_echo, n_echo + 5) for e in det.push(0.1, -80.0, t0 + i * VAD_CHUNK_S)]
        assert not any(isinstance(e, TurnStart) for e in evs), burst
        held = any(isinstance(e, VadChange) and e.state is TurnPhase.STARTING for e in evs)
        assert held == (burst < ECHO_HINT_CANCELS), burst  # then rejected: no hold
        assert g.hint_dropped == (burst >= ECHO_HINT_CANCELS - 1), burst
    assert g.gain_db() == pytest.approx(-10.0, abs=0.1)  # the worst case, or learned from the echo


def test_a_start_that_needs_the_hint_is_confirmed_after_the_probe() -> None:
    cfg = TurnConfig()
    n, probe = cfg.chunks(cfg.start_ms), cfg.chunks(cfg.echo_probe_ms)
    for level, need in ((-20.0, n + probe), (0.0, n)):  # a soft user (hint-only), a loud one
        g, t, out_db = _talking_guard(cfg, EchoHint.NEAR_FIELD)
        det = TurnDetector(cfg, g)
        evs = [(i, e) for i in range(40) for e in det.push(0.95, out_db + level, t + i * VAD_CHUNK_S)]
        starts = [i for i, e in evs if isinstance(e, TurnStart)]
        assert starts == [need - 1], (level, starts)
    g, t, out_db = _talking_guard(cfg, EchoHint.UNKNOWN)  # no hint: the soft user is echo
    det = TurnDetector(cfg, g)
    assert not [e for i in range(18) for e in det.push(0.95, out_db - 20.0, t + i * VAD_CHUNK_S)]  # < 600 ms


# ------------------------------------------------------------------ real speech (Silero)
@pytest.fixture(scope="module")
def vad():
    from model.components.vad import SileroVAD

    return SileroVAD.load()


def _turns(vad, x16: np.ndarray, cfg: TurnConfig = TurnConfig()) -> tuple[int, int]:
    det = TurnDetector(cfg)
    st = vad.stream()
    n = len(x16) // 512
    starts = ends = 0
    for i in range(n):
        c = x16[i * 512 : (i + 1) * 512]
        db = 10 * np.log10(np.mean(c.astype(np.float64) ** 2) + 1e-12)
        for e in det.push(st.push(c), db, (i + 1) * VAD_CHUNK_S):
            starts += isinstance(e, TurnStart)
            ends += isinstance(e, TurnEnd)
    return starts, ends


def _prompts(names):
    from model.audio import load_audio
    from model.samples import have_prompts, prompt_wav

    if not have_prompts():
        pytest.skip("asterisk-core-sounds-en-g722 not installed")
    return [load_audio(prompt_wav(n), 16000)[0] for n in names]


def _pad(x: np.ndarray, lead: float = 0.5, tail: float = 1.5, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    y = np.concatenate([np.zeros(int(lead * 16000)), x, np.zeros(int(tail * 16000))]).astype(np.float32)
    return y + np.random.default_rng(seed).normal(0, noise, len(y)).astype(np.float32)


@pytest.mark.slow
def test_real_prompts_are_one_turn_each(vad) -> None:
    from model.samples import SHORT_PROMPTS

    for name, x in zip(SHORT_PROMPTS, _prompts(SHORT_PROMPTS)):
        assert _turns(vad, _pad(x)) == (1, 1), name


def cough(ms: float, seed: int) -> np.ndarray:
    """A cough-like burst: noise through a vocal-tract-ish resonance, fast attack, decay."""
    rng = np.random.default_rng(seed)
    n = int(ms * 16)
    t = np.arange(n) / 16000
    noise = rng.standard_normal(n)
    # resonances ~500 Hz and ~1500 Hz (crude formants) by two-pole filters
    y = np.zeros(n)
    for f, r in ((500, 0.97), (1500, 0.95)):
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / 16000), r * r
        z = np.zeros(n)
        for i in range(n):
            z[i] = noise[i] - a1 * (z[i - 1] if i else 0) - a2 * (z[i - 2] if i > 1 else 0)
        y += z
    env = np.minimum(1, t / 0.01) * np.exp(-t / (ms / 1000 / 3))
    y = y * env
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


@pytest.mark.slow
def test_short_bursts_of_real_speech_and_coughs_are_not_turns(vad) -> None:
    from model.samples import SHORT_PROMPTS

    rng = np.random.default_rng(0)
    tried = 0
    for x in _prompts(SHORT_PROMPTS[:6]):
        hop = 160
        db = 10 * np.log10(np.array([np.mean(x[i : i + hop] ** 2) for i in range(0, len(x) - hop, hop)]) + 1e-12)
        loud = np.flatnonzero(db > np.percentile(db, 95) - 20)
        for ms in (100, 150, 180):
            n = int(ms * 16)
            i = int(rng.choice(loud[loud * hop + n < len(x)])) * hop
            burst = x[i : i + n].copy()
            burst[:80] *= np.linspace(0, 1, 80)
            burst[-80:] *= np.linspace(1, 0, 80)
            assert _turns(vad, _pad(burst))[0] == 0, (ms, i)
            tried += 1
    for k, ms in enumerate((80, 120, 160, 190)):
        assert _turns(vad, _pad(cough(ms, k)))[0] == 0, ms
    assert tried == 18


@pytest.mark.slow
def test_vad_batcher_matches_separate_streams(vad) -> None:
    """Sessions' chunks batched into one Silero call give each stream its own probabilities."""
    from concurrent.futures import ThreadPoolExecutor

    from model.samples import SHORT_PROMPTS
    from voice.server.inputs import VadBatcher

    xs = [_pad(x, tail=0.2) for x in _prompts(SHORT_PROMPTS[:3])]
    n = min(len(x) for x in xs) // 512
    ref = []
    for x in xs:
        st = vad.stream()
        ref.append([st.push(x[i * 512 : (i + 1) * 512]) for i in range(n)])

    async def main() -> tuple[list[list[float]], VadBatcher]:
        b = VadBatcher(vad, ThreadPoolExecutor(1))
        streams = [vad.stream() for _ in xs]

        async def one(k: int) -> list[float]:
            return [await b.push(streams[k], xs[k][i * 512 : (i + 1) * 512]) for i in range(n)]

        return list(await asyncio.gather(*(one(k) for k in range(len(xs))))), b

    got, b = asyncio.run(main())
    np.testing.assert_allclose(np.array(got), np.array(ref), atol=1e-4)
    assert b.steps == n * len(xs) and b.batches < b.steps  # really batched


def test_pause_event_once_per_pause_and_force_end() -> None:
    from voice.server.turns import TurnPause

    cfg = TurnConfig(pause_ms=192.0, stop_ms=800.0)
    det = TurnDetector(cfg)
    # speech, a 400 ms pause (one TurnPause, no end), speech again, then silence
    probs = [0.9] * 20 + [0.05] * 12 + [0.9] * 10 + [0.05] * 30
    evs = run(det, probs)
    pauses = of(evs, TurnPause)
    assert [i for i, _ in pauses] == [20 + cfg.chunks(192.0) - 1, 42 + cfg.chunks(192.0) - 1]
    assert len(of(evs, TurnEnd)) == 1  # the fallback (800 ms) ended it, after the second pause
    det = TurnDetector(cfg)
    run(det, [0.9] * 20 + [0.05] * 7)
    assert det.state is TurnPhase.STOPPING
    ends = [e for e in det.force_end(1.0) if isinstance(e, TurnEnd)]
    assert len(ends) == 1 and det.state is TurnPhase.QUIET
    assert det.force_end(1.1) == []  # only while STOPPING




def test_echo_bench_wrong_hints_do_not_interrupt_and_right_ones_help() -> None:
    """`parley bench echo` cases (offline: Silero, piper's reply, the session's hold simulated)."""
    pytest.importorskip("piper")
    from model.components.vad import SileroVAD
    from model.samples import have_prompts
    from voice.bench.echo import EchoCase, load_audio_pair, run_case

    if not have_prompts():
        pytest.skip("asterisk-core-sounds-en-g722 not installed")
    agent, user = load_audio_pair()
    vad = SileroVAD.load()
    for hint, delay in ((EchoHint.CANCELLED, 0.2), (EchoHint.NEAR_FIELD, 0.5)):  # wrong: a -10 dB echo
        r = run_case(EchoCase(hint, echo_db=-10.0, delay_s=delay), agent, user, vad)
        assert r.start_s is None and r.holds <= ECHO_HINT_CANCELS, r
    soft = {h: run_case(EchoCase(h, user_db=-15.0), agent, user, vad).start_s for h in EchoHint}
    assert soft[EchoHint.NEAR_FIELD] is not None and soft[EchoHint.CANCELLED] is not None, soft
    assert soft[EchoHint.UNKNOWN] is None or soft[EchoHint.UNKNOWN] > soft[EchoHint.CANCELLED] >= soft[EchoHint.NEAR_FIELD], soft


def test_sound_onset_holds_before_silero_and_goes_when_it_is_not_speech() -> None:
    from voice.server.turns import SoundGone, SoundOnset

    cfg = TurnConfig()
    n_hold = cfg.chunks(cfg.onset_hold_ms)
    # a loud chunk Silero does not call speech yet, then speech: SoundOnset first, STARTING one chunk later
    evs = run(TurnDetector(cfg), [0.0] * 5 + [0.1] + [0.9] * 10, [QUIET] * 5 + [-30.0] + [LOUD] * 10)
    onsets = of(evs, SoundOnset)
    starting = [i for i, e in evs if isinstance(e, VadChange) and e.state is TurnPhase.STARTING]
    assert [i for i, _ in onsets] == [5] and starting == [6] and not of(evs, SoundGone)
    # a sustained sound, never speech -> SoundGone after onset_hold_ms; no second onset while the floor adapts
    evs = run(TurnDetector(cfg), [0.0] * 20, [QUIET] * 5 + [-30.0] * 15)
    assert [i for i, _ in of(evs, SoundOnset)] == [5]
    assert [i for i, _ in of(evs, SoundGone)] == [5 + n_hold] and not of(evs, TurnStart)
    # a click: gone two chunks after it went quiet; speech Silero confirms late (4 chunks) stays held till then
    evs = run(TurnDetector(cfg), [0.0] * 20, [QUIET] * 5 + [-30.0] + [QUIET] * 14)
    assert [i for i, _ in of(evs, SoundOnset)] == [5] and [i for i, _ in of(evs, SoundGone)] == [7]
    evs = run(TurnDetector(cfg), [0.0] * 5 + [0.2] * 4 + [0.9] * 10, [QUIET] * 5 + [-25.0] * 14)
    assert [i for i, _ in of(evs, SoundOnset)] == [5] and not of(evs, SoundGone) and of(evs, TurnStart)
    # too soft (under onset_min_db) or too close to the floor: no onset
    assert not of(run(TurnDetector(cfg), [0.0] * 10, [QUIET] * 5 + [-55.0] * 5), SoundOnset)
    assert not of(run(TurnDetector(cfg), [0.0] * 10, [-45.0] * 5 + [-35.0] * 5), SoundOnset)
    assert not of(run(TurnDetector(TurnConfig(onset_hold_ms=0.0)), [0.0] * 10, [QUIET] * 5 + [-30.0] * 5), SoundOnset)


def test_an_echo_explains_a_loud_chunk_no_onset() -> None:
    from voice.server.turns import SoundOnset

    cfg = TurnConfig()
    guard = EchoGuard(cfg)  # worst case: echo at -10 dB of what was sent
    det = TurnDetector(cfg, guard)
    for k in range(60):
        guard.note_output(k * 0.02, np.full(WEBRTC_FRAME, 0.3, np.float32))  # ~ -10 dBFS sent
    evs = run(det, [0.0] * 10, [QUIET] * 5 + [-25.0] * 5, t0=0.5)  # -25 dB: under the -20 dB echo + margin
    assert not of(evs, SoundOnset)


def test_with_a_pause_silence_is_timed_from_the_energy_end() -> None:
    from voice.server.turns import TurnPause

    cfg = TurnConfig(pause_ms=192.0, stop_ms=800.0)
    # Silero lingers 2 chunks after the sound stops (prob high, level down 60 dB)
    probs = [0.9] * 20 + [0.9] * 2 + [0.05] * 30
    levels = [LOUD] * 20 + [QUIET] * 32
    pauses = of(run(TurnDetector(cfg), probs, levels), TurnPause)
    assert [i for i, _ in pauses] == [20 + cfg.chunks(192.0) - 1]  # from the first quiet chunk
    # without a pause (silence-ended engines) Silero's end still counts
    ends = of(run(TurnDetector(TurnConfig(pause_ms=0.0)), probs, levels), TurnEnd)
    assert [i for i, _ in ends] == [22 + cfg.chunks(TurnConfig().stop_ms) - 1]
    # a quiet chunk inside a word does not end the pause count early: loud speech resumes the turn
    probs2 = [0.9] * 20 + [0.9] + [0.9] * 5 + [0.05] * 30
    levels2 = [LOUD] * 20 + [QUIET] + [LOUD] * 5 + [QUIET] * 30
    pauses2 = of(run(TurnDetector(cfg), probs2, levels2), TurnPause)
    assert [i for i, _ in pauses2] == [26 + cfg.chunks(192.0) - 1]


def test_a_frame_level_onset_comes_before_its_chunk() -> None:
    from voice.server.turns import SoundOnset

    det = TurnDetector(TurnConfig())
    run(det, [0.0] * 6)  # the quiet floor is known
    assert det.sound(-60.0, 0.3) == [] and det.state is TurnPhase.QUIET  # under onset_min_db
    (e,) = det.sound(-30.0, 0.31)
    assert isinstance(e, SoundOnset) and e.t == 0.31
    assert det.sound(-30.0, 0.33) == []  # one onset pending at a time
    assert not of(run(det, [0.1], [-30.0], t0=0.32), SoundOnset)  # its chunk does not repeat it
