"""`parley bench model`: per-frame step time of the direct speech model vs batch size.

For each device (this CPU; CUDA when present) and batch size (1, 8, 64 by default) it runs the
generator's full per-frame step (temporal Llama step + text head + K depth passes + sampling)
with every slot active, and prints the median step time, its share of the codec frame
(CODEC_FRAME_MS: 40 ms for codec v2), and the memory-bandwidth floor: (weights read once + the KV cache read up to the current positions) /
the device's measured copy bandwidth. On CUDA the step runs as one CUDA graph; the eager step is
the baseline column. Weights: random (timing does not depend on values) unless --weights.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from model.common.audio_constants import CODEC_FRAME_MS


@dataclass(frozen=True)
class StepBenchConfig:
    """What `parley bench model` measures (built from argparse in voice/cli/bench.py)."""

    device: str = "all"  # cpu, cuda or all (available ones)
    batches: tuple[int, ...] = (1, 8, 64)
    context: int = 128  # frames already in each session's context
    steps: int = 0  # timed steps (0: 50 on CUDA, 5 on CPU)
    cpu_dtype: str = "float32"
    threads: int = 0  # CPU threads (0: torch's default)
    tiny: bool = False  # tiny dimensions (smoke test)
    audio_heads: tuple[str, ...] = ("depth",)  # model.speech.AudioHead values
    gguf: str | None = None  # SmolLM2 GGUF for the backbone's shape (default: bundled)
    json_path: str | None = None


def _copy_bandwidth(device, n_bytes: int = 1 << 28) -> float:
    """Measured bytes/s of a large copy, counting bytes read + written."""
    import torch

    n = n_bytes // 4
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    times = []
    for _ in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        b.copy_(a)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * n * 4 / statistics.median(times[1:])


def run_bench(bench: StepBenchConfig) -> int:
    """Prints one row per (device, audio head, batch) and a markdown table; returns 0."""
    import json

    import torch

    from model.generator import SpeechGenerator
    from model.speech_sampling import SpeechSamplingParams
    from model.speech import SpeechModel

    if bench.threads:
        torch.set_num_threads(bench.threads)
    devices = []
    if bench.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if bench.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if bench.device == "cuda" and not torch.cuda.is_available():
        from model.common.errors import ParleyError

        raise ParleyError("--device cuda: no CUDA device here")
    from model.presets import full_speech_config, tiny_speech_config

    heads, batches = bench.audio_heads, bench.batches
    rows = []
    import os

    hw = {"cpu": f"{torch.get_num_threads()} CPU threads (load avg {os.getloadavg()[0]:.1f} at start)"}
    if torch.cuda.is_available():
        hw["cuda"] = torch.cuda.get_device_name()
    for dev, head in [(d, h) for d in devices for h in heads]:
        if bench.tiny:
            cfg = tiny_speech_config(audio_head=head)
        else:
            cfg = full_speech_config(gguf=bench.gguf, audio_head=head)
        dtype = torch.bfloat16 if dev.type == "cuda" else getattr(torch, bench.cpu_dtype)
        torch.manual_seed(0)
        model = SpeechModel(cfg)
        from model.lora import merge_lora

        merge_lora(model.backbone)  # serving: adapters folded into the weights
        bw = _copy_bandwidth(dev)
        n_steps = bench.steps or (50 if dev.type == "cuda" else 5)
        w_bytes = sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8
        bb = cfg.backbone
        kv_per_frame = 2 * bb.n_layers * bb.n_kv_heads * (bb.dim // bb.n_heads) * torch.finfo(dtype).bits // 8
        for B in batches:
            modes = [("graph", True), ("eager", False)] if dev.type == "cuda" else [("eager", False)]
            res = {}
            for mode, graph in modes:
                gen = SpeechGenerator(model, max_batch=B, max_frames=bench.context + n_steps + 16,
                                      sampling=SpeechSamplingParams(), device=dev, dtype=dtype, cuda_graph=graph)
                slots = [gen.join() for _ in range(B)]
                gen.pos.fill_(bench.context)  # as if each session had been talking for a while
                frame = {s: torch.randint(0, cfg.layout.card, (cfg.layout.n_q,)).numpy() for s in slots}
                for _ in range(3):
                    gen.step(frame)
                times = []
                for _ in range(n_steps):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    gen.step(frame)  # includes the host copies of the outputs, as in serving
                    times.append(time.perf_counter() - t)
                res[mode] = statistics.median(times) * 1e3
                del gen
            floor_ms = (w_bytes + B * (bench.context + n_steps // 2) * kv_per_frame) / bw * 1e3
            main = res.get("graph", res["eager"])
            rows.append({
                "device": hw[dev.type], "head": head, "dtype": str(dtype).replace("torch.", ""), "batch": B,
                "step_ms": round(main, 3), "eager_ms": round(res["eager"], 3),
                "frame_pct": round(100 * main / CODEC_FRAME_MS, 2), "floor_ms": round(floor_ms, 3),
                "x_floor": round(main / floor_ms, 1), "copy_GBps": round(bw / 1e9, 1),
            })
            print(rows[-1], flush=True)
        del model
    print()
    print(f"| device | audio head | dtype | batch | step ms | eager ms | % of {CODEC_FRAME_MS} ms frame "
          "| bandwidth floor ms | x floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['head']} | {r['dtype']} | {r['batch']} | {r['step_ms']} | {r['eager_ms']} | "
              f"{r['frame_pct']} | {r['floor_ms']} | {r['x_floor']} |")
    if bench.json_path:
        with open(bench.json_path, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
