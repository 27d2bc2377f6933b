"""`parley bench distill`: traces/min and audio hours/min for 1 CPU core, all cores and cores + GPU.

Each arm generates the same N traces (same seed) into a fresh folder:
- ``1 core``: one worker process, one thread (the one-by-one path);
- ``all cores``: one worker per core (``--workers K``), each with the whole cascade;
- ``cores + GPU`` (when CUDA is present): the batched path (distill/batched.py, distill/flow.py),
  Whisper and the LLM batched on the GPU, TTS on cores-1 worker processes, all N traces in flight.
``steady`` leaves out the start-up (model loading): it counts the results after the first K
arrivals (K workers, or K TTS processes on the batched path) over the time since.
Stage columns are ms per turn: wall ms of one item on the per-trace paths and the TTS workers,
the batch's wall time divided by its items for batched Whisper / LLM. ``CPU busy``: CPU seconds of
the run (driver + worker processes) / (wall x cores): where it is far below 100%, cores idle.
``TTS / LLM busy`` (batched arms): the TTS processes' item time / (processes x wall) and the LLM
calls' time / wall, both over the whole run (model loading included).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from distill.batched import BatchSpec
    from distill.stages import StagesSpec

STAGES = ("user_speech", "asr", "llm", "agent_tts")


@dataclass(frozen=True)
class BenchArm:
    name: str
    workers: int = 1
    batch: BatchSpec | None = None


def default_arms(n: int, cores: int | None = None, gpu: bool | None = None, speak_only: bool = False) -> list[BenchArm]:
    """1 core, all cores, and cores + GPU when CUDA is present. ``speak_only``: every arm on the
    batched path (speak-only data is made there), the CPU arms with the LLM on the CPU."""
    from distill.batched import BatchSpec

    cores = cores or os.cpu_count() or 1
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    if speak_only:
        arms = [BenchArm("1 core", 1, BatchSpec(device="cpu", tts_workers=0, block=n))]
        if cores > 1:
            arms.append(BenchArm(f"all {cores} cores", 1, BatchSpec(device="cpu", tts_workers=cores, block=n)))
    else:
        arms = [BenchArm("1 core", 1)]
        if cores > 1:
            arms.append(BenchArm(f"all {cores} cores", cores))
    if gpu:
        arms.append(BenchArm(f"{cores} cores + GPU", 1, BatchSpec(device="cuda", tts_workers=max(1, cores - 1),
                                                               block=n)))
    return arms


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _run_arm(arm: BenchArm, out: Path, n: int, stages, seed: int, threads: int, speak_only: bool = False) -> dict:
    from distill.runner import GenConfig, generate

    stamps: list[float] = []
    recs: list[dict] = []

    def on_write(t) -> None:
        stamps.append(time.time())
        recs.append(t.record)

    def cpu_s() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    c0, t0 = cpu_s(), time.time()
    cfg = GenConfig(seed=seed, stages=stages, speak_only=speak_only, real_frac=0.0 if speak_only else 0.35)
    s = generate(out, n, cfg, workers=arm.workers, progress=False, on_write=on_write,
                 threads=threads, batch=arm.batch)
    wall = time.time() - t0
    cpu = cpu_s() - c0  # worker processes are counted once they exit (generate shuts them down)
    first = max(1, arm.batch.tts_workers) if arm.batch is not None else arm.workers  # the first arrivals
    k = min(first, len(stamps))
    steady = (60 * (len(stamps) - k) / (stamps[-1] - stamps[k - 1])
              if len(stamps) > k and stamps[-1] > stamps[k - 1] else float("nan"))
    per_stage: dict[str, list[float]] = {st: [] for st in STAGES}
    turns, audio_s, agent_s, tts_ms, llm_ms = 0, 0.0, 0.0, 0.0, 0.0
    for r in recs:
        for t in r["turns"]:
            turns += 1
            audio_s += t["user_dur_s"] + (t.get("agent_dur_s") or 0)
            agent_s += t.get("agent_dur_s") or 0
            tts_ms += t["timings_ms"].get("user_speech", 0.0) + t["timings_ms"].get("agent_tts", 0.0)
            llm_ms += t["timings_ms"].get("llm", 0.0)  # batched: each row's share of its call's wall time
            for st in STAGES:
                if st in t["timings_ms"]:
                    per_stage[st].append(t["timings_ms"][st])
    return {"arm": arm.name, "traces": s["written"], "turns": turns, "wall": wall,
            "startup": (stamps[k - 1] - t0) if k else float("nan"), "steady": steady,
            "overall": 60 * s["written"] / wall, "audio_h_min": audio_s / 3600 / (wall / 60),
            "agent_h_min": agent_s / 3600 / (wall / 60), "cpu_busy": cpu / (wall * (os.cpu_count() or 1)),
            "busy": (tts_ms / 1000 / (max(1, arm.batch.tts_workers) * wall), llm_ms / 1000 / wall)
            if arm.batch is not None else None,
            "stage": {st: float(np.mean(v)) if v else float("nan") for st, v in per_stage.items()}}


def run_bench(n: int = 8, arms: list[BenchArm] | None = None, stages: StagesSpec | str = "real",
              keep: Path | None = None, seed: int = 1234, threads: int = 1, speak_only: bool = False) -> str:
    """-> a markdown table (one row per arm). ``speak_only``: speak-only traces (`generate --speak-only`)."""
    arms = arms if arms is not None else default_arms(n, speak_only=speak_only)
    rows = []
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="parley-distill-bench-"))
    try:
        for i, arm in enumerate(arms):
            out = base / f"arm{i}"
            if out.exists():
                shutil.rmtree(out)
            rows.append(_run_arm(arm, out, n, stages, seed, threads, speak_only))
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    base_rate = rows[0]["steady"] if rows else float("nan")
    head = (f"distill bench ({stages} stages{', speak-only' if speak_only else ''}), {time.strftime('%Y-%m-%d')}, {_cpu()}, {os.cpu_count()} CPU core(s), "
            f"N={n} traces per row, {threads} thread(s) per worker, load average before: "
            f"{os.getloadavg()[0]:.1f}\n\n")
    lines = ["| arm | traces (turns) | wall s | start-up s | traces/min steady | vs 1 core | traces/min overall "
             "| audio h/min | agent speech h/min | CPU busy | TTS / LLM busy | user TTS+aug ms/turn | ASR ms/turn "
             "| LLM ms/turn | agent TTS ms/turn |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = r["stage"]
        busy = "-" if r["busy"] is None else f"{100 * r['busy'][0]:.0f}% / {100 * r['busy'][1]:.0f}%"
        lines.append(f"| {r['arm']} | {r['traces']} ({r['turns']}) | {r['wall']:.1f} | {r['startup']:.1f} | "
                     f"{r['steady']:.2f} | {r['steady'] / base_rate:.2f}x | {r['overall']:.2f} | "
                     f"{r['audio_h_min']:.4f} | {r['agent_h_min']:.4f} | {100 * r['cpu_busy']:.0f}% | {busy} | "
                     f"{st['user_speech']:.0f} | {st['asr']:.0f} | "
                     f"{st['llm']:.0f} | {st['agent_tts']:.0f} |")
    return head + "\n".join(lines)
