"""`parley bench eot-pauses`: what a shorter pause costs on real speech (recorded prompts with inner pauses).

`parley bench eot` cuts TTS sentences at one 300-700 ms pause. Real speakers pause inside a turn too, for
breath and phrasing (the asterisk prompts, one US speaker: inner pauses p95 288 ms), and a speculative
server judges the turn at every one of them: with `--pause-ms 32` a judgement that says "done" at a
120 ms breath ends the turn there. Here each recorded prompt (a whole turn) runs through the server's own
turn detector (`voice.server.turns`, Silero, energy end, the speculative config); at every silence onset the
judge (Whisper + the end-of-turn head, as `TurnJudge`'s "text" rule) scores the audio so far, and its pause
is timed until the speech resumes or the turn ends.

For each pause setting P and judge latency J (ms after the silence onset when the score is known):
* false cut-in: an inner pause (the speaker goes on) whose score reaches the threshold and that lasts at
  least max(P, J) -> the prompt would have been cut there (counted once per prompt);
* ended at the pause: the final silence onset's score reaches the threshold (the turn ends at max(P, J),
  not at the 800 ms fallback).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EotPausesConfig:
    n_prompts: int = 120  # the first N prompts (sorted names) of the recorded set
    pauses_ms: tuple[float, ...] = (32.0, 64.0, 96.0, 128.0, 192.0)
    judge_ms: tuple[float, ...] = (30.0, 130.0)  # judge latencies: graphed on an H200 / eager (GPU run 3)
    threshold: float | None = None  # default: the head's
    out_json: str | None = None


@dataclass
class Pause:
    prompt: str
    final: bool  # the turn's last silence (the speaker is done)
    length_ms: float  # silence onset -> speech again (inf for the final one)
    heard: str
    score: float


def _pauses(name: str, x16: np.ndarray, vad, judge) -> list[Pause]:  # noqa: ANN001
    from model.common.audio_constants import VAD_CHUNK_S  # noqa: PLC0415
    from voice.server.turns import TurnConfig, TurnDetector, TurnEnd, TurnPhase, VadChange  # noqa: PLC0415

    det = TurnDetector(TurnConfig(pause_ms=32.0, stop_ms=800.0))  # speculative: energy end, like the server
    st = vad.stream()
    out: list[Pause] = []
    onset: tuple[float, int] | None = None  # (time, samples so far) of the open silence
    pad = np.concatenate([np.zeros(8000, np.float32), x16, np.zeros(16000, np.float32)])
    pad = pad + np.random.default_rng(0).normal(0, 1e-3, len(pad)).astype(np.float32)
    for i in range(len(pad) // 512):
        c = pad[i * 512: (i + 1) * 512]
        t = (i + 1) * VAD_CHUNK_S
        db = 10 * np.log10(np.mean(c.astype(np.float64) ** 2) + 1e-12)
        for e in det.push(st.push(c), db, t):
            if isinstance(e, VadChange) and e.state is TurnPhase.STOPPING:
                onset = (t, (i + 1) * 512)
                continue
            resumed = isinstance(e, VadChange) and e.state is TurnPhase.SPEAKING
            if onset is None or not (resumed or isinstance(e, TurnEnd)):
                continue
            score, heard = judge(pad[8000 - 320 * 16: onset[1]])  # from 320 ms before the speech (preroll)
            out.append(Pause(name, not resumed, 1000 * (t - onset[0]) if resumed else float("inf"), heard, score))
            onset = None
    return out


def run_eot_pauses(cfg: EotPausesConfig) -> dict:
    """Judges every silence onset of the prompts; -> report with one row per (pause, judge latency)."""
    import asyncio  # noqa: PLC0415

    from model.audio import load_audio  # noqa: PLC0415
    from model.common.paths import ASTERISK_EN_PROMPTS  # noqa: PLC0415
    from model.components.vad import SileroVAD  # noqa: PLC0415
    from model.samples import have_prompts, prompt_wav  # noqa: PLC0415
    from voice.engines.turn_judge import TurnJudge  # noqa: PLC0415

    from model.common.errors import ParleyError  # noqa: PLC0415

    if not have_prompts():
        raise ParleyError("needs the recorded prompts: apt-get install asterisk-core-sounds-en-g722 ffmpeg")
    names = sorted(p.stem for p in ASTERISK_EN_PROMPTS.glob("*.g722"))[: cfg.n_prompts]
    vad, tj = SileroVAD.load(), TurnJudge()
    thr = tj.threshold if cfg.threshold is None else cfg.threshold

    def judge(audio: np.ndarray) -> tuple[float, str]:
        prob, text = asyncio.run(tj.judge_async(audio))
        return prob, text or ""

    pauses: list[Pause] = []
    try:
        for k, name in enumerate(names):
            pauses += _pauses(name, load_audio(prompt_wav(name), 16000)[0], vad, judge)
            if (k + 1) % 20 == 0:
                print(f"  {k + 1}/{len(names)} prompts, {len(pauses)} silences judged", flush=True)
    finally:
        tj.close()
    rows = []
    inner = [p for p in pauses if not p.final]
    finals = [p for p in pauses if p.final]
    for j in cfg.judge_ms:
        for pm in cfg.pauses_ms:
            at = max(pm, j)
            cut = {p.prompt for p in inner if p.score >= thr and p.length_ms >= at}
            rows.append({"pause_ms": pm, "judge_ms": j, "decided_at_ms": at,
                         "false_cut_in": len(cut) / max(1, len(names)),
                         "ended_at_pause": float(np.mean([p.score >= thr for p in finals])) if finals else 0.0})
    lengths = [p.length_ms for p in inner]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "prompts": len(names), "threshold": thr,
              "inner_pauses": len(inner), "inner_pause_ms_p50_p90_max":
                  [float(np.percentile(lengths, q)) for q in (50, 90, 100)] if lengths else [],
              "inner_scored_done": sum(p.score >= thr for p in inner), "rows": rows,
              "pauses": [p.__dict__ for p in pauses]}
    if cfg.out_json:
        with open(cfg.out_json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def format_pauses_report(rep: dict) -> str:
    lines = [f"{rep['prompts']} recorded prompts, {rep['inner_pauses']} inner pauses (p50/p90/max ms "
             f"{', '.join(f'{v:.0f}' for v in rep['inner_pause_ms_p50_p90_max'])}), {rep['inner_scored_done']} of them "
             f"scored >= {rep['threshold']:.2f}; {rep['date']}",
             f"{'pause ms':>8s} {'judge ms':>8s} {'decided at':>10s} {'prompts cut':>11s} {'ended at pause':>14s}"]
    for r in rep["rows"]:
        lines.append(f"{r['pause_ms']:8.0f} {r['judge_ms']:8.0f} {r['decided_at_ms']:10.0f} "
                     f"{100 * r['false_cut_in']:9.1f} % {100 * r['ended_at_pause']:12.1f} %")
    return "\n".join(lines)
