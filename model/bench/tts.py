"""`parley bench tts`: piper joe through onnxruntime one sentence at a time vs torch batched.

The same sentences (agent-style replies, 1.5-6 s each) as phoneme ids, noise_scale = noise_w = 0
(as distill's agent speech): the baseline is onnxruntime on the CPU, one sentence per call with
``ort_threads`` threads (1: one distill TTS process); then `TorchPiper.infer_ids` on ``device``
with ``max_batch`` = each batch size. Phonemization (espeak, the same for both) is not timed. Each
row is the best of ``rounds`` passes after a warm-up; the parity columns compare each torch
sentence with onnxruntime's (same length: max abs difference; else counted as a length mismatch).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

SENTENCES = (
    "Sure, I can help you with that.",
    "The capital of France is Paris, which is also its largest city.",
    "It will be sunny tomorrow, with a high of twenty four degrees.",
    "Here is a simple recipe: boil the pasta, then toss it with olive oil, garlic and a little parmesan.",
    "That sounds like a great plan!",
    "The moon is about three hundred and eighty four thousand kilometers away from the Earth.",
    "I'm sorry, I didn't catch that.",
    "Could you tell me a bit more about what you are looking for, so I can give you a better answer?",
    "Your appointment is on Tuesday at half past three.",
    "Cats sleep for twelve to sixteen hours a day, mostly to save energy for hunting.",
    "Yes, absolutely.",
    "The train to Amsterdam leaves every hour from platform six, and the trip takes about three hours.",
)


@dataclass(frozen=True)
class TtsBenchConfig:
    """What `parley bench tts` measures (built from argparse in voice/cli/bench.py)."""

    device: str = "cpu"  # torch device of the batched path
    batches: tuple[int, ...] = (1, 8, 32)  # torch sentences per infer call
    n: int = 32  # sentences per pass (SENTENCES repeated)
    decoder_dtype: str = "float32"  # the torch decoder's dtype (the rest stays float32: onnxruntime's durations)
    ort_threads: int = 1  # onnxruntime intra-op threads of the baseline
    threads: int = 0  # torch CPU threads (0: ort_threads, the baseline's cores)
    rounds: int = 2  # timed passes per row (the best is reported)
    json_path: str | None = None


def _best(fn, rounds: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(max(1, rounds)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_bench(cfg: TtsBenchConfig) -> int:
    """Prints a markdown table: audio seconds per wall second, onnxruntime one by one vs torch batched."""
    import onnxruntime
    import torch
    from piper import PiperVoice, SynthesisConfig

    from model.components.piper_batch import TorchPiper
    from model.components.tts import joe_paths

    torch.set_num_threads(cfg.threads or cfg.ort_threads)  # OpenMP threads on a busy CPU only spin
    model, config = joe_paths()
    ort = PiperVoice.load(model, config_path=config)
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = cfg.ort_threads, 1
    ort.session = onnxruntime.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    tts = TorchPiper.load(model, config, device=cfg.device, decoder_dtype=getattr(torch, cfg.decoder_dtype))
    load_s = time.perf_counter() - t0
    ids = [s[1] for text in SENTENCES for s in tts.sentences(text)]
    ids = [ids[i % len(ids)] for i in range(cfg.n)]
    syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0)
    sr = tts.sample_rate

    ort.phoneme_ids_to_audio(ids[0], syn)  # warm-up
    wall, ref = _best(lambda: [ort.phoneme_ids_to_audio(x, syn) for x in ids], cfg.rounds)
    audio_s = sum(len(a) for a in ref) / sr
    dev = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"# parley bench tts  {time.strftime('%Y-%m-%d %H:%M')}  {dev}, {os.cpu_count()} cores, load avg "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__} ({cfg.device}, decoder {cfg.decoder_dtype}, "
          f"{torch.get_num_threads()} CPU threads), onnxruntime {onnxruntime.__version__} ({cfg.ort_threads} "
          f"thread(s)); {cfg.n} sentences, {audio_s:.1f} s of audio; torch load {load_s:.1f} s; "
          f"best of {cfg.rounds}")
    print("| path | batch | wall s | audio s / wall s | x onnxruntime | max abs diff to onnxruntime | length mismatches |")
    print("|---|---|---|---|---|---|---|")
    rows = [{"path": "onnxruntime", "batch": 1, "wall_s": wall, "audio_per_s": audio_s / wall}]
    print(f"| onnxruntime one by one | 1 | {wall:.2f} | {audio_s / wall:.1f} | 1.00 | - | - |", flush=True)
    for b in cfg.batches:
        tts.max_batch = b
        tts.infer_ids(ids[:b], 0.0, 1.0, 0.0)  # warm-up (TorchScript, cuDNN)
        t, out = _best(lambda: tts.infer_ids(ids, 0.0, 1.0, 0.0), cfg.rounds)
        same = [(o.audio, r) for o, r in zip(out, ref) if len(o.audio) == len(r)]
        diff = max(float(np.abs(o - r).max()) for o, r in same) if same else float("nan")
        mism = len(ref) - len(same)
        moved_ms = max(abs(len(o.audio) - len(r)) for o, r in zip(out, ref)) / sr * 1000
        rows.append({"path": f"torch {cfg.device}", "batch": b, "wall_s": t, "audio_per_s": audio_s / t,
                     "max_abs_diff": diff, "length_mismatches": mism, "max_len_diff_ms": moved_ms})
        print(f"| torch {cfg.device} {cfg.decoder_dtype} | {b} | {t:.2f} | {audio_s / t:.1f} | {wall / t:.2f} | "
              f"{diff:.1e} | {mism} (<= {moved_ms:.0f} ms) |", flush=True)
    if cfg.json_path:
        with open(cfg.json_path, "w") as f:
            json.dump({"config": cfg.__dict__, "audio_s": audio_s, "rows": rows}, f, indent=1)
    return 0
