"""`parley bench model`: per-frame step time of the direct speech model vs batch size.

For each device (this CPU; CUDA when present) and batch size (1, 8, 64 by default) it runs the
generator's full per-frame step (temporal Llama step + text head + K depth passes + sampling)
with every slot active, and prints the median step time, its share of the codec frame
(CODEC_FRAME_MS: 40 ms for codec v2), and the memory-bandwidth floor: (weights read once + the KV cache read up to the current positions) /
the device's measured copy bandwidth. On CUDA the step runs as one CUDA graph; the eager step is
the baseline column. On a CPU each ``--cpu-step`` gets its rows in the same run: ``exact`` (the
reference modules in ``--cpu-dtype``), ``fast`` / ``quant`` (``model/cpu_step.py``: fused, bf16 /
4-8-bit weights). Weights: the SmolLM2 backbone of the GGUF with random speech parts (``gguf``,
default: the quantized step stores the GGUF's Q4_1 matrices losslessly in int4 only when they are
the real ones), ``random`` (all random), or a trained folder (``weights/s2s``).
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
    cpu_dtype: str = "bfloat16"  # of the exact CPU step (the served default)
    cpu_steps: tuple[str, ...] = ("exact", "quant")  # model.cpu_step.CpuStep values, rows side by side
    weights: str = "gguf"  # gguf (SmolLM2 backbone + random speech parts), random, or a trained folder
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


def _model(bench: StepBenchConfig, head: str):  # noqa: ANN202 - a SpeechModel, LoRA merged
    import torch

    from model.lora import merge_lora
    from model.presets import full_speech_config, tiny_speech_config
    from model.speech import SpeechModel
    from model.speech_ckpt import build_model, load_speech_model

    torch.manual_seed(0)
    if bench.tiny:
        model = SpeechModel(tiny_speech_config(audio_head=head))
    elif bench.weights in ("gguf", "random"):
        cfg = full_speech_config(gguf=bench.gguf, audio_head=head)
        model = build_model(cfg, gguf_path=bench.gguf, pretrained=bench.weights == "gguf")
    else:
        model = load_speech_model(bench.weights, gguf_path=bench.gguf)
    merge_lora(model.backbone)  # serving: adapters folded into the weights
    return model.eval()


def run_bench(bench: StepBenchConfig) -> int:
    """Prints one row per (device, audio head, CPU step, batch) and a markdown table; returns 0."""
    import copy
    import json

    import torch

    from model.cpu_step import CpuStep
    from model.generator import SpeechGenerator
    from model.speech_sampling import SpeechSamplingParams

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
    heads, batches = bench.audio_heads, bench.batches
    rows = []
    import os

    hw = {"cpu": f"{torch.get_num_threads()} CPU threads (load avg {os.getloadavg()[0]:.1f} at start)"}
    if torch.cuda.is_available():
        hw["cuda"] = torch.cuda.get_device_name()
    for dev, head in [(d, h) for d in devices for h in heads]:
        model = _model(bench, head)
        cfg = model.cfg
        bw = _copy_bandwidth(dev)
        n_steps = bench.steps or (50 if dev.type == "cuda" else 5)
        bb = cfg.backbone
        steps = [CpuStep(c) for c in bench.cpu_steps] if dev.type == "cpu" else [CpuStep.EXACT]
        dtype = torch.bfloat16 if dev.type == "cuda" else getattr(torch, bench.cpu_dtype)
        modes = [("graph", True), ("eager", False)] if dev.type == "cuda" else [("eager", False)]
        for B in batches:
            # every variant of this batch size side by side, timed in turns (a shared machine's
            # load changes during a run: interleaving keeps the comparison fair)
            gens, frames = {}, {}
            for cpu_step, (mode, graph) in [(c, m) for c in steps for m in modes]:
                gen = SpeechGenerator(copy.deepcopy(model), max_batch=B, max_frames=bench.context + n_steps + 16,
                                      sampling=SpeechSamplingParams(), device=dev, dtype=dtype, cuda_graph=graph,
                                      cpu_step=cpu_step)
                slots = [gen.join() for _ in range(B)]
                gen.pos.fill_(bench.context)  # as if each session had been talking for a while
                frames[cpu_step, mode] = {s: torch.randint(0, cfg.layout.card, (cfg.layout.n_q,)).numpy()
                                          for s in slots}
                for _ in range(3):
                    gen.step(frames[cpu_step, mode])
                gens[cpu_step, mode] = gen
            times: dict = {key: [] for key in gens}
            for _ in range(n_steps):
                for key, gen in gens.items():
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    gen.step(frames[key])  # includes the host copies of the outputs, as in serving
                    times[key].append(time.perf_counter() - t)
            for cpu_step in steps:
                res = {mode: statistics.median(times[cpu_step, mode]) * 1e3 for mode, _ in modes}
                gen = gens[cpu_step, modes[0][0]]
                w_bytes = gen.fused.nbytes() if gen.fused else sum(p.numel() * p.element_size()
                                                                    for p in gen.model.parameters())
                kv_bytes = 2 * bb.n_layers * bb.n_kv_heads * bb.head_dim * gen.model.backbone.cache.k.element_size()
                floor_ms = (w_bytes + B * (bench.context + n_steps // 2) * kv_bytes) / bw * 1e3
                main = res.get("graph", res["eager"])
                rows.append({
                    "device": hw[dev.type], "head": head, "cpu_step": cpu_step.value if dev.type == "cpu" else "-",
                    "dtype": gen.fused.storage() if gen.fused else str(dtype).replace("torch.", ""), "batch": B,
                    "weights": "tiny" if bench.tiny else bench.weights,
                    "step_ms": round(main, 3), "eager_ms": round(res["eager"], 3),
                    "frame_pct": round(100 * main / CODEC_FRAME_MS, 2), "floor_ms": round(floor_ms, 3),
                    "x_floor": round(main / floor_ms, 1), "copy_GBps": round(bw / 1e9, 1),
                })
                print(rows[-1], flush=True)
            del gens
        del model
    print()
    print(f"| device | audio head | cpu step | weights stored | batch | step ms | eager ms | % of {CODEC_FRAME_MS} ms "
          "frame | bandwidth floor ms | x floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['head']} | {r['cpu_step']} | {r['dtype']} | {r['batch']} | {r['step_ms']} | "
              f"{r['eager_ms']} | {r['frame_pct']} | {r['floor_ms']} | {r['x_floor']} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if bench.json_path:
        with open(bench.json_path, "w") as f:
            json.dump(rows, f, indent=1)
    return 0
