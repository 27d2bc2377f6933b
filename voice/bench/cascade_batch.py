"""`parley bench components --cascade-batch 1,4,8`: K concurrent cascade requests, one by one vs batched.

For each K, K new sessions send one spoken question at the same moment; each request runs the
cascade's ASR, then its LLM reply (no TTS), through the engine's own calls (``transcribe_async``,
``start_reply``): on an engine with batching off (the thread pool, each model taking one call at
a time under its lock) and on one with batching on (one batched Whisper pass per group of clips,
one continuous-batching decode loop), both on the same loaded models, in the same run. Times are
ms since the K requests were sent: ASR done, first reply piece, whole reply. Per K and mode: p50
and max of each, the wall time, reply pieces (~tokens) per second over all K, the batch sizes
the batchers actually ran, the kept-cache copies per reply, and how many replies are the same
text in both modes (greedy; fp16/bf16 batched matmuls may round differently from batch 1).
Each K runs twice: "ASR+LLM" from the audio, and "LLM" alone on the transcripts (the decode
loop's own gain, without the ASR in front of it).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class BatchBenchConfig:
    ks: tuple[int, ...] = (1, 4, 8)  # concurrent requests per measurement
    device: str = "cpu"
    asr_backend: str = "torch"  # the batched Whisper pass (ct2 transcribes a batch clip by clip)
    max_new_tokens: int = 48  # the cascade's default
    audio: str | None = None  # question WAV/FLAC folder (default: flite-synthesized questions)
    threads: int = 0  # torch CPU threads (0: torch's default)
    json_path: str | None = None


@dataclass
class ReqResult:
    asr_ms: float
    first_ms: float | None
    full_ms: float
    heard: str
    reply: str
    pieces: int


class _SilentTTS:
    """The engine's warm-up speaks once; this bench measures ASR + LLM only."""

    sample_rate = 16000

    def synthesize(self, text: str) -> np.ndarray:
        return np.zeros(160, np.float32)


async def _request(engine, audio: np.ndarray, t0: float, heard: str | None) -> ReqResult:  # noqa: ANN001
    """One cascade request as CascadeSession.respond runs it, up to the reply's last piece
    (``heard`` given: the LLM alone, on that transcript)."""
    loop = asyncio.get_running_loop()
    if heard is None:
        heard = await engine.transcribe_async(audio)
    t_asr = time.perf_counter()
    session = engine.session()
    session.history.append({"role": "user", "content": heard or "Hello?"})
    q: asyncio.Queue = asyncio.Queue()
    emit = lambda p: loop.call_soon_threadsafe(q.put_nowait, p)  # noqa: E731 - as CascadeSession._pipeline
    cancel = engine.start_reply(session.messages(), session.llm_state, emit)
    pieces: list[str] = []
    first = None
    try:
        while (p := await q.get()) is not None:
            if isinstance(p, BaseException):
                raise p
            if first is None:
                first = time.perf_counter()
            pieces.append(p)
    finally:
        cancel()
    ms = lambda t: 1000 * (t - t0)  # noqa: E731
    return ReqResult(ms(t_asr), ms(first) if first else None, ms(time.perf_counter()), heard, "".join(pieces),
                     len(pieces))


async def _run_k(engine, clips: list[np.ndarray], k: int, texts: list[str] | None  # noqa: ANN001
                 ) -> tuple[list[ReqResult], float]:
    t0 = time.perf_counter()
    res = await asyncio.gather(*(_request(engine, clips[i % len(clips)], t0, texts and texts[i % len(texts)])
                                 for i in range(k)))
    return list(res), time.perf_counter() - t0


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def _row(k: int, stage: str, mode: str, res: list[ReqResult], wall: float, batches: str, copy: str,
         same: str) -> dict:
    firsts = [r.first_ms for r in res if r.first_ms is not None]
    return {"k": k, "stage": stage, "mode": mode,
            "asr_p50_ms": _pct([r.asr_ms for r in res], 50), "asr_max_ms": max(r.asr_ms for r in res),
            "first_p50_ms": _pct(firsts, 50), "first_max_ms": max(firsts, default=float("nan")),
            "full_p50_ms": _pct([r.full_ms for r in res], 50), "full_max_ms": max(r.full_ms for r in res),
            "wall_s": wall, "pieces_per_s": sum(r.pieces for r in res) / wall, "batches": batches,
            "kv_copy": copy, "same_reply": same}


def _clips(cfg: BatchBenchConfig) -> list[np.ndarray]:
    import soxr  # noqa: PLC0415

    from model.common.audio_constants import SPEECH_SR, WEBRTC_SR  # noqa: PLC0415
    from voice.bench.utterances import default_utterances, load_utterances  # noqa: PLC0415

    utts = load_utterances(cfg.audio) if cfg.audio else default_utterances()
    return [soxr.resample(u.audio, WEBRTC_SR, SPEECH_SR).astype(np.float32) for u in utts]


def print_rows(rows: list[dict]) -> None:
    head = ("K", "stage", "mode", "ASR done p50 / max ms", "first token p50 / max ms", "full reply p50 / max ms",
            "wall s", "pieces/s", "batches run", "kept-cache copy", "same reply")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print(f"| {r['k']} | {r['stage']} | {r['mode']} | {r['asr_p50_ms']:.0f} / {r['asr_max_ms']:.0f} | "
              f"{r['first_p50_ms']:.0f} / {r['first_max_ms']:.0f} | {r['full_p50_ms']:.0f} / {r['full_max_ms']:.0f} | "
              f"{r['wall_s']:.2f} | {r['pieces_per_s']:.1f} | {r['batches']} | {r['kv_copy']} | {r['same_reply']} |")


def _measure(seq, bat, clips: list[np.ndarray], k: int, stage: str,  # noqa: ANN001 - two CascadeEngines
             texts: list[str] | None) -> list[dict]:
    """K requests on the one-by-one engine, then on the batched one: two rows; prints the gain."""
    r_seq, w_seq = asyncio.run(_run_k(seq, clips, k, texts))
    a0, g0 = replace(bat.asr_batcher.stats), replace(bat.llm_batcher.gen.stats)
    r_bat, w_bat = asyncio.run(_run_k(bat, clips, k, texts))
    a1, g1 = bat.asr_batcher.stats, bat.llm_batcher.gen.stats
    same = f"{sum(a.reply == b.reply for a, b in zip(r_seq, r_bat))}/{k}"
    n_asr, n_steps = a1.batches - a0.batches, g1.steps - g0.steps
    asr = f"ASR {n_asr} x {(a1.items - a0.items) / max(n_asr, 1):.1f}; " if texts is None else ""
    batches = f"{asr}LLM {n_steps} steps x {(g1.row_steps - g0.row_steps) / max(n_steps, 1):.1f} rows"
    copy = f"{1000 * (g1.copy_s - g0.copy_s) / k:.2f} ms/reply"
    rows = [_row(k, stage, "one by one", r_seq, w_seq, ("" if texts else f"ASR {k} x 1; ") + f"LLM {k} x 1 row",
                 "-", same),
            _row(k, stage, "batched", r_bat, w_bat, batches, copy, same)]
    s, b = rows
    print(f"K={k} {stage}: wall {s['wall_s']:.2f} -> {b['wall_s']:.2f} s (x{s['wall_s'] / b['wall_s']:.2f}), "
          f"full reply p50 {s['full_p50_ms']:.0f} -> {b['full_p50_ms']:.0f} ms, first token p50 "
          f"{s['first_p50_ms']:.0f} -> {b['first_p50_ms']:.0f} ms; same replies {same}; "
          f"e.g. {r_bat[0].heard!r} -> {r_bat[0].reply.strip()[:60]!r}", flush=True)
    return rows


def run_bench(cfg: BatchBenchConfig) -> int:
    """Prints the header, a row per K and mode and the speed-ups; returns 0."""
    import torch  # noqa: PLC0415

    from model.components.asr_ct2 import load_asr  # noqa: PLC0415
    from model.components.llm import load_llm  # noqa: PLC0415
    from voice.engines.cascade import CascadeConfig, CascadeEngine  # noqa: PLC0415

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    clips = _clips(cfg)
    t0 = time.perf_counter()
    base = CascadeConfig(device=cfg.device, asr_backend=cfg.asr_backend, max_new_tokens=cfg.max_new_tokens,
                         batch_rows=max(cfg.ks), asr_batch=max(16, min(max(cfg.ks), 64)))
    asr = load_asr(base.asr, device=cfg.device, backend=cfg.asr_backend)
    llm = load_llm(base.llm, device=cfg.device)
    load_s = time.perf_counter() - t0
    dev = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    print(f"# parley bench components --cascade-batch  {time.strftime('%Y-%m-%d %H:%M')}  {dev}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}; "
          f"ASR {base.asr} ({cfg.asr_backend}), LLM {base.llm}, {len(clips)} questions, {cfg.max_new_tokens} "
          f"new tokens at most; models loaded in {load_s:.1f} s", flush=True)
    seq = CascadeEngine(replace(base, batch=False), asr=asr, llm=llm, tts=_SilentTTS())
    bat = CascadeEngine(replace(base, batch=True), asr=asr, llm=llm, tts=_SilentTTS())
    rows: list[dict] = []
    try:
        seq.warm_up()
        bat.warm_up()
        texts = [seq.transcribe(c) for c in clips]  # the LLM-only rows' transcripts
        for k in cfg.ks:
            for stage, given in (("ASR+LLM", None), ("LLM", texts)):
                rows += _measure(seq, bat, clips, k, stage, given)
    finally:
        for e in (seq, bat):
            asyncio.run(e.close())
    print_rows(rows)
    if cfg.json_path:
        with open(cfg.json_path, "w") as f:
            json.dump({"config": asdict(cfg), "device": dev, "rows": rows}, f, indent=1)
    return 0
