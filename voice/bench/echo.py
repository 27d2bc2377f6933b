"""Echo guard and echo hints, offline (`parley bench echo`): what the numbers in voice/README.md
("Echo hint") come from.

The server's `TurnDetector` + `EchoGuard` on Silero, chunk by chunk on a simulated clock: the
agent's reply (piper speech at 0.08 RMS) leaves in 20 ms frames from t = 0, held while the
detector is STARTING and stopped at a TurnStart (as `voice.server.session` does); the microphone
hears that output `delay_s` later at `echo_db` (the echo path gain) and/or a recorded prompt
(the user) from `user_at_s`, `user_db` relative to the agent's level. Two questions:

* a wrong hint: the client says "cancelled" / "near_field" but the echo is loud: does the agent
  interrupt itself (a TurnStart), how often is it held (a stutter)?
* the early barge-in: when is a user who talks 400 ms into the reply confirmed, per hint?

Piper's synthesis is random (noise_scale), so the reply differs from run to run. 2026-12-01:
a wrong `cancelled` / `near_field` over a -10 or -20 dB echo 50-500 ms late: no TurnStart, 1-2
holds; a user 400 ms into the reply was confirmed at 1.12-1.47 s with `near_field` (0 to -25 dB
under the agent), 1.15-1.47 s with `cancelled` (0 to -15 dB; -20 dB and softer 2.62 s), 2.62-2.66 s
without a hint (0 to -25 dB).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from model.common.audio_constants import SPEECH_SR, VAD_CHUNK, WEBRTC_FRAME, WEBRTC_SR
from voice.server.echo_guard import EchoGuard, EchoHint, level_db
from voice.server.turns import (SoundGone, SoundOnset, TurnCancel, TurnConfig, TurnDetector, TurnPhase, TurnStart,
                                VadChange)

REPLY = ("Sure. The weather today is sunny and warm, with a light breeze from the west "
         "and no rain expected until the weekend.")
USER_PROMPT = "auth-incorrect"  # an asterisk prompt (model.samples)
LEVEL_RMS = 0.08  # the agent's reply and the user at 0 dB


@dataclass(frozen=True)
class EchoCase:
    hint: EchoHint
    echo_db: float | None = None  # echo path gain; None: no echo comes back
    delay_s: float = 0.12  # output sent -> echo heard
    user_db: float | None = None  # the user relative to the agent; None: the user says nothing
    user_at_s: float = 0.4  # when the user's prompt starts, after the reply's first audio
    seconds: float = 3.0


@dataclass(frozen=True)
class EchoResult:
    case: EchoCase
    start_s: float | None  # first TurnStart (a barge-in; with no user: the agent interrupted itself)
    holds: int  # holds while the agent talked (SoundOnset or STARTING: its audio held until TurnCancel / SoundGone)


def load_audio_pair() -> tuple[np.ndarray, np.ndarray]:
    """(agent reply at 48 kHz, user prompt at 16 kHz), both at LEVEL_RMS. The reply is the same every run:
    piper's VITS draws noise from onnxruntime's generator, seeded here (unseeded, one rendering in
    many made the NEAR_FIELD case hold 4 times instead of 1-2)."""
    import onnxruntime  # noqa: PLC0415

    from model.audio import load_audio, resample  # noqa: PLC0415
    from model.components.tts import load_voice  # noqa: PLC0415
    from model.samples import prompt_wav  # noqa: PLC0415

    onnxruntime.set_seed(0)  # before the session is made: its random ops take their seeds then
    v = load_voice("joe")
    x = v.synthesize(REPLY)
    agent = resample(x * LEVEL_RMS / np.sqrt(np.mean(x**2)), v.sample_rate, WEBRTC_SR).astype(np.float32)
    u, _ = load_audio(prompt_wav(USER_PROMPT), SPEECH_SR)
    return agent, (u * LEVEL_RMS / np.sqrt(np.mean(u**2))).astype(np.float32)


def run_case(case: EchoCase, agent: np.ndarray, user: np.ndarray, vad,  # noqa: ANN001 - SileroVAD
             cfg: TurnConfig = TurnConfig()) -> EchoResult:
    """One reply: the session's hold / stop on the agent's output, echo and user on the input."""
    from model.audio import resample  # noqa: PLC0415

    guard = EchoGuard(cfg, case.hint)
    det, stream = TurnDetector(cfg, guard), vad.stream()
    n_in = int(SPEECH_SR * case.seconds) // VAD_CHUNK * VAD_CHUNK
    mic = np.zeros(n_in, np.float32)
    if case.user_db is not None:
        i0 = int(SPEECH_SR * case.user_at_s)
        u = user[: max(0, n_in - i0)] * 10 ** (case.user_db / 20)
        mic[i0 : i0 + len(u)] += u
    out = np.zeros(int(WEBRTC_SR * (case.seconds + 1.0)), np.float32)  # what was sent, by send time
    gain = 0.0 if case.echo_db is None else 10 ** (case.echo_db / 20)
    k = pos = 0
    held = stopped = False
    start_s, holds = None, 0
    for j in range(n_in // VAD_CHUNK):
        t = (j + 1) * VAD_CHUNK / SPEECH_SR
        while (k + 1) * WEBRTC_FRAME <= len(out) and k * WEBRTC_FRAME / WEBRTC_SR <= t:
            frame = np.zeros(WEBRTC_FRAME, np.float32)
            if not held and not stopped and pos < len(agent):
                frame[: len(agent[pos : pos + WEBRTC_FRAME])] = agent[pos : pos + WEBRTC_FRAME]
                pos += WEBRTC_FRAME
            out[k * WEBRTC_FRAME : (k + 1) * WEBRTC_FRAME] = frame
            guard.note_output(k * WEBRTC_FRAME / WEBRTC_SR, frame)
            k += 1
        chunk = mic[j * VAD_CHUNK : (j + 1) * VAD_CHUNK].copy()
        s0 = int((t - VAD_CHUNK / SPEECH_SR - case.delay_s) * WEBRTC_SR)
        if gain and s0 >= 0:
            chunk += gain * resample(out[s0 : s0 + 3 * VAD_CHUNK], WEBRTC_SR, SPEECH_SR)[:VAD_CHUNK]
        for e in det.push(stream.push(chunk), level_db(chunk), t):
            onset = isinstance(e, SoundOnset) or (isinstance(e, VadChange) and e.state is TurnPhase.STARTING)
            if onset and not stopped and not held:
                held, holds = True, holds + 1
            elif isinstance(e, (TurnCancel, SoundGone)):
                held = False
            elif isinstance(e, TurnStart) and start_s is None:
                start_s, stopped = round(e.t, 3), True
    return EchoResult(case, start_s, holds)


def default_cases() -> list[EchoCase]:
    wrong = [EchoCase(h, echo_db=e, delay_s=d) for h in (EchoHint.CANCELLED, EchoHint.NEAR_FIELD)
             for e in (-10.0, -20.0) for d in (0.05, 0.12, 0.2, 0.3, 0.5)]
    early = [EchoCase(h, user_db=u) for u in (0.0, -6.0, -10.0, -15.0, -20.0, -25.0)
             for h in (EchoHint.UNKNOWN, EchoHint.CANCELLED, EchoHint.NEAR_FIELD)]
    return wrong + early


def run_echo_bench(out: str | None = None, cases: list[EchoCase] | None = None) -> list[EchoResult]:
    """Run the cases, print one line each; `out`: also a JSON file."""
    from model.components.vad import SileroVAD  # noqa: PLC0415

    agent, user = load_audio_pair()
    vad = SileroVAD.load()
    results = []
    for c in cases or default_cases():
        r = run_case(c, agent, user, vad)
        results.append(r)
        what = (f"echo {c.echo_db:+.0f} dB after {1000 * c.delay_s:.0f} ms" if c.echo_db is not None else "no echo")
        who = f"user {c.user_db:+.0f} dB at {c.user_at_s:.1f} s" if c.user_db is not None else "no user"
        print(f"{c.hint.value:>10}  {what:<24} {who:<22} turn start {r.start_s if r.start_s is not None else '-':>6}"
              f"  holds {r.holds}", flush=True)
    if out:
        rows = [{**asdict(r.case), "hint": r.case.hint.value, "start_s": r.start_s, "holds": r.holds} for r in results]
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)
    return results
