"""`parley bench distill`: traces per minute for 1 and 2 workers here, and the time per stage.

Each configuration generates the same N traces (same seed) into a fresh folder. ``steady``
traces/min leaves out the start-up (model loading in every worker): it counts the traces after
the first K results (K = workers) over the time since the K-th result arrived.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from distill.stages import StagesSpec

STAGES = ("user_speech", "asr", "llm", "agent_tts")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_bench(n: int = 8, workers: list[int] | tuple[int, ...] = (1, 2), stages: StagesSpec | str = "real",
              keep: Path | None = None, seed: int = 1234, threads: int = 1) -> str:
    from distill.runner import GenConfig, generate

    rows = []
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="parley-distill-bench-"))
    try:
        for k in workers:
            out = base / f"w{k}"
            if out.exists():
                shutil.rmtree(out)
            stamps: list[float] = []
            recs: list[dict] = []

            def on_write(t, stamps=stamps, recs=recs) -> None:
                stamps.append(time.time())
                recs.append(t.record)

            t0 = time.time()
            s = generate(out, n, GenConfig(seed=seed, stages=stages), workers=k, progress=False, on_write=on_write,
                         threads=threads)
            wall = time.time() - t0
            steady = 60 * (len(stamps) - k) / (stamps[-1] - stamps[k - 1]) if len(stamps) > k and stamps[-1] > stamps[k - 1] else float("nan")
            per_stage = {st: [] for st in STAGES}
            turns = 0
            audio_s = 0.0
            for r in recs:
                for t in r["turns"]:
                    turns += 1
                    audio_s += t["user_dur_s"] + (t.get("agent_dur_s") or 0)
                    for st in STAGES:
                        if st in t["timings_ms"]:
                            per_stage[st].append(t["timings_ms"][st])
            rows.append({"workers": k, "traces": s["written"], "turns": turns, "wall": wall,
                         "startup": (stamps[k - 1] - t0) if len(stamps) >= k else float("nan"),
                         "steady": steady, "overall": 60 * s["written"] / wall, "audio_min": audio_s / 60,
                         "stage": {st: float(np.mean(v)) if v else float("nan") for st, v in per_stage.items()}})
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    base_rate = rows[0]["steady"] if rows else float("nan")
    head = (f"distill bench ({stages} stages), {time.strftime('%Y-%m-%d')}, {_cpu()}, {os.cpu_count()} CPU core(s), "
            f"N={n} traces per row, {threads} thread(s) per worker, load average before: "
            f"{os.getloadavg()[0]:.1f}\n\n")
    lines = ["| workers | traces (turns) | wall s | start-up s | traces/min steady | vs 1 worker | traces/min overall "
             "| audio min/min | user TTS+aug ms/turn | ASR ms/turn | LLM ms/turn | agent TTS ms/turn |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = r["stage"]
        lines.append(f"| {r['workers']} | {r['traces']} ({r['turns']}) | {r['wall']:.1f} | {r['startup']:.1f} | "
                     f"{r['steady']:.2f} | {r['steady'] / base_rate:.2f}x | {r['overall']:.2f} | "
                     f"{r['audio_min'] / (r['wall'] / 60):.2f} | {st['user_speech']:.0f} | {st['asr']:.0f} | "
                     f"{st['llm']:.0f} | {st['agent_tts']:.0f} |")
    return head + "\n".join(lines)
