"""`parley bench judge`: the end-of-turn judge alone, no server: where its time goes on this machine.

Whisper's transcription, the head's score and Smart Turn of the bench's spoken questions (whole), one
judgement at a time after a warm-up, then `concurrent` at once (sessions whose pauses coincide), with
`load` busy threads beside it (Python threads that hold the GIL as a server's event loop and frame clock
do). In the server the same judgement measured ~125 ms on an H200 (Whisper ~85, the head ~43; GPU run 3):
this bench says how much of that is the models and how much the process they share.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JudgeBenchConfig:
    device: str = "cpu"
    asr_backend: str = "ct2"
    rule: str = "text"
    reps: int = 5  # judgements of every question, one at a time
    concurrent: int = 8  # then this many at once
    load: int = 0  # busy Python threads beside the judge (GIL contention)
    audio: str | None = None  # question folder (default: the bench's questions, flite)


def _busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(1000):
            x += 1


def _pcts(xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=float)
    return {"n": len(a), "p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


async def _judge_all(judge, clips: list[np.ndarray]) -> list[dict]:  # noqa: ANN001
    async def one(x: np.ndarray) -> dict:
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        await judge.judge_async(x, times=times)
        return {**times, "total": 1000 * (time.perf_counter() - t0)}

    return list(await asyncio.gather(*(one(x) for x in clips)))


def run_judge_bench(cfg: JudgeBenchConfig) -> dict:
    """-> {"settings", "one_at_a_time": {stage: pcts}, "concurrent": {stage: pcts}}."""
    import soxr  # noqa: PLC0415

    from voice.bench.utterances import default_utterances, load_utterances  # noqa: PLC0415
    from voice.engines.turn_judge import JudgeConfig, TurnJudge  # noqa: PLC0415

    utts = load_utterances(cfg.audio) if cfg.audio else default_utterances()
    clips = [soxr.resample(u.audio[u.bounds.start: u.bounds.end], 48000, 16000).astype(np.float32) for u in utts]
    judge = TurnJudge(JudgeConfig(device=cfg.device, asr_backend=cfg.asr_backend, rule=cfg.rule))
    stop = threading.Event()
    busy = [threading.Thread(target=_busy, args=(stop,), daemon=True) for _ in range(cfg.load)]
    try:
        judge.warm_up()
        for t in busy:
            t.start()
        seq = [r for _ in range(cfg.reps) for x in clips for r in asyncio.run(_judge_all(judge, [x]))]
        par = []
        for _ in range(cfg.reps):
            batch = [clips[i % len(clips)] for i in range(cfg.concurrent)]
            par += asyncio.run(_judge_all(judge, batch))
    finally:
        stop.set()
        judge.close()
    stages = sorted({k for r in seq for k in r})
    return {"settings": cfg.__dict__, "date": time.strftime("%Y-%m-%d %H:%M"),
            "one_at_a_time": {k: _pcts([r[k] for r in seq if k in r]) for k in stages},
            "concurrent": {k: _pcts([r[k] for r in par if k in r]) for k in stages}}


def format_judge_report(rep: dict) -> str:
    s = rep["settings"]
    lines = [f"judge on {s['device']} ({s['asr_backend']} Whisper, rule {s['rule']}, {s['load']} busy threads), "
             f"{rep['date']}", f"{'':22s} {'stage':7s} {'n':>4s} {'p50 ms':>8s} {'p90 ms':>8s} {'max ms':>8s}"]
    for mode in ("one_at_a_time", "concurrent"):
        label = "one at a time" if mode == "one_at_a_time" else f"{s['concurrent']} at once"
        for k, v in rep[mode].items():
            lines.append(f"{label:22s} {k:7s} {v['n']:4d} {v['p50']:8.1f} {v['p90']:8.1f} {v['max']:8.1f}")
    return "\n".join(lines)
