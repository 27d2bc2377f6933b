"""`parley bench asr`: the cascade's ASR, short window vs faster-whisper's 30 s window.

Clips: the first 8 questions of `voice.bench.facts` spoken by the 5 user voices (joe + flite
kal16/awb/rms/slt) and the 10 short real asterisk prompts (one US voice). Reported per variant:
latency (p50/p90, the variants interleaved clip by clip so machine load hits them alike), WER
against the questions' text (synthetic clips) and the word difference to the 30 s window (all).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AsrBenchConfig:
    questions: int = 8  # first N of voice.bench.facts.FACTS, in every user voice
    repeats: int = 1  # passes over the clips (timing)
    out: str | None = None  # JSON report


def load_clips(questions: int) -> list[tuple[str, str | None, np.ndarray]]:
    """[(name, reference text or None, 16 kHz audio)]: spoken questions + real prompts."""
    from model.audio import load_audio  # noqa: PLC0415
    from model.common.audio_constants import SPEECH_SR  # noqa: PLC0415
    from model.samples import SHORT_PROMPTS, have_prompts, prompt_wav  # noqa: PLC0415
    from voice.bench.facts import FACTS, USER_VOICES, spoken_questions  # noqa: PLC0415

    clips = [(f"{v}:{i}", f.question, a) for i, (f, v, a) in enumerate(spoken_questions(USER_VOICES, FACTS[:questions]))]
    if have_prompts():
        clips += [(f"asterisk:{n}", None, load_audio(prompt_wav(n), SPEECH_SR)[0].astype(np.float32))
                  for n in SHORT_PROMPTS]
    return clips


def _pct(xs: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(xs, q)), 1)


def run_asr_bench(cfg: AsrBenchConfig) -> dict:
    from model.components.asr_ct2 import load_asr  # noqa: PLC0415
    from voice.bench.facts import wer  # noqa: PLC0415

    variants = {"full_30s": load_asr("tiny.en", short_window=False), "short_window": load_asr("tiny.en")}
    clips = load_clips(cfg.questions)
    for asr in variants.values():  # first calls are slow
        asr.transcribe(clips[0][2])
    times: dict[str, list[float]] = {k: [] for k in variants}
    texts: dict[str, list[str]] = {k: [] for k in variants}
    load = [os.getloadavg()[0]]
    for rep in range(cfg.repeats):
        for _, _, audio in clips:
            for k, asr in variants.items():
                t = time.perf_counter()
                text = asr.transcribe(audio)
                times[k].append(time.perf_counter() - t)
                if rep == 0:
                    texts[k].append(text)
    load.append(os.getloadavg()[0])
    report: dict = {"clips": len(clips), "repeats": cfg.repeats, "load_avg_1m": load, "variants": {}}
    for k in variants:
        e = n = d = nd = 0
        for (_, ref, _), hyp, base in zip(clips, texts[k], texts["full_30s"]):
            if ref:
                a, b = wer(ref, hyp)
                e, n = e + a, n + b
            a, b = wer(base, hyp)
            d, nd = d + a, nd + b
        report["variants"][k] = {"p50_ms": _pct(times[k], 50), "p90_ms": _pct(times[k], 90),
                                 "wer_synthetic": round(e / max(n, 1), 4), "diff_to_full": round(d / max(nd, 1), 4)}
    report["differences"] = [{"clip": c[0], "full_30s": a, "short_window": b}
                             for c, a, b in zip(clips, texts["full_30s"], texts["short_window"]) if a != b]
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump(report, f, indent=1)
    return report
