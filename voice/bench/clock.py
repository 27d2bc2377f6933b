"""`parley bench clock`: the direct engine's frame clock alone (no WebRTC), per batch size.

For each batch size it builds the direct engine's ``FrameClock`` with that many slots, joins a
session in every slot, and runs ``ticks`` frames with random user audio in every slot (the warm-up
ticks, which include the CUDA graph capture on GPU, are not counted). Each row: p50/p99 ms of
the whole tick and of its stages (one batched codec encode, one generator step, one batched codec
decode), the tick's share of the frame period and the number of sessions that fit in real time
at the p99 (batch x frame / p99 tick, when the tick is within the frame). Say which weights
each row used: ``random`` / ``tiny`` (random init) or a trained folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClockBenchConfig:
    """What `parley bench clock` measures (built from argparse in voice/cli/bench.py)."""

    batches: tuple[int, ...] = (1, 8, 64)
    ticks: int = 20  # timed ticks per batch size
    warmup: int = 3
    weights: str = "tiny"  # DirectConfig.weights: tiny, random or a folder
    codec: str | None = "tiny"  # DirectConfig.codec: tiny or a folder (None: weights/codec)
    device: str | None = None  # cpu / cuda (default: cuda when present)
    threads: int = 0  # CPU threads (0: torch's default)
    json_path: str | None = None


def run_bench(cfg: ClockBenchConfig) -> int:
    """Prints one row per batch size and a markdown table; returns 0."""
    import numpy as np
    import torch

    from model.generator import SpeechGenerator
    from voice.engines.clock import FrameClock
    from voice.engines.direct import DirectConfig, _load_codec, _load_model, _streaming_codec

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dcfg = DirectConfig(weights=cfg.weights, codec=cfg.codec, device=cfg.device)
    dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _load_model(dcfg, dev)
    rows = []
    for B in cfg.batches:
        codec = _streaming_codec(_load_codec(dcfg).to(dev), dcfg, dev)
        gen = SpeechGenerator(model, max_batch=B, max_frames=2048, device=dev, dtype=getattr(torch, dcfg.dtype),
                              cpu_step=dcfg.cpu_step)  # as the engine serves
        clock = FrameClock(gen, codec, np.zeros(gen.layout.n_q, dtype=np.int64))
        slots = [clock.join(lambda f: None) for _ in range(B)]
        rng = np.random.default_rng(0)
        for i in range(cfg.warmup + cfg.ticks):
            if i == cfg.warmup:
                clock.reset_timing()
            x = (0.1 * rng.standard_normal((B, clock.hop))).astype(np.float32)
            for s in slots:
                clock.push(s, x[s])
            clock.tick()  # (ends with the outputs on the host: no extra synchronize needed)
        fc = clock.timing()
        clock.stop()
        p99 = fc["tick"]["p99_ms"]
        fit = int(B * fc["frame_ms"] / p99) if p99 <= fc["frame_ms"] else 0
        row = {"device": str(dev), "weights": cfg.weights, "codec": cfg.codec or "weights/codec",
               "codec_runtime": "torch" if isinstance(codec, torch.nn.Module) else "onnx",
               "dtype": str(gen.dtype).replace("torch.", ""),
               "cpu_step": gen.cpu_step.value if dev.type == "cpu" else "-",
               "graph": gen.use_graph, "batch": B,
               "threads": torch.get_num_threads(), **{k: fc[k] for k in ("tick", "encode", "step", "decode")},
               "missed": fc["missed"], "sessions_in_real_time_p99": fit}
        rows.append(row)
        print(f"batch {B}: tick {fc['tick']['p50_ms']:.1f}/{p99:.1f} ms p50/p99 "
              f"({fc['tick']['share_p99']:.0%} of the frame at p99); encode {fc['encode']['p50_ms']:.1f}, "
              f"step {fc['step']['p50_ms']:.1f}, decode {fc['decode']['p50_ms']:.1f} ms p50", flush=True)
        del clock, gen, codec
    print()
    print("| device | weights | codec | dtype | cpu step | graph | batch | tick p50 / p99 ms | share p50 / p99 | "
          "encode p50 / p99 | step p50 / p99 | decode p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    pp = lambda d: f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}"  # noqa: E731
    for r in rows:
        print(f"| {r['device']} | {r['weights']} | {r['codec']} | {r['dtype']} | {r['cpu_step']} | {r['graph']} | "
              f"{r['batch']} | "
              f"{pp(r['tick'])} | {r['tick']['share_p50']:.0%} / {r['tick']['share_p99']:.0%} | "
              f"{pp(r['encode'])} | {pp(r['step'])} | {pp(r['decode'])} |")
    if cfg.json_path:
        with open(cfg.json_path, "w") as f:
            json.dump({"config": asdict(cfg), "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, f, indent=1)
    return 0
