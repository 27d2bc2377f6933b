"""`parley bench codec`: speed and latency.

CPU (one thread): streaming encode + decode, one frame at a time (what the direct engine does),
real-time factor = compute time / audio time, with per-frame p50 / p99, for the torch reference and
the fast path (`codec/fast.py`: ONNX Runtime, and the same step graph in torch), interleaved in
rounds so that the shared machine's load hits every path alike (RTF from wall time, and from
the thread's CPU time, which other jobs on a shared machine inflate less); the full (offline) pass of the
same audio; and as baseline EnCodec 24 kHz (the `encodec` package, random weights, same
architecture family at 75 Hz, no streaming state) on the same duration.
GPU: batched bf16 full-pass encode + decode, hours of audio per second; and the serving step:
streaming encode + decode of one frame for B sessions in one batch, fp32 and bf16.
Algorithmic latency: the encoder needs a whole frame (hop) of input before it emits the frame's
codes and the decoder emits that frame's hop of audio at once, so latency = 1 frame.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import types

import numpy as np


STREAM_PATHS = ("torch", "onnx", "fast-torch")  # reference, FastCodec ONNX Runtime, FastCodec torch


def _stream_paths(model, paths: tuple[str, ...]) -> dict:  # type: ignore[no-untyped-def]
    from codec.fast import FastCodec

    out = {}
    for p in paths:
        out[p] = model if p == "torch" else FastCodec(model, "onnx" if p == "onnx" else "torch")
    return out


def _cpu(model, seconds: float, rounds: int = 3, batch: int = 1,  # type: ignore[no-untyped-def]
         paths: tuple[str, ...] = STREAM_PATHS) -> dict:
    """Streaming encode+decode per frame for each path, interleaved: every round streams the same
    audio through every path in turn (rotating the order), so a load change hits all paths alike."""
    import os

    import torch

    torch.set_num_threads(1)
    hop, sr = model.hop_length, model.sample_rate
    n_frames = int(seconds * model.frame_rate)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, n_frames * hop, generator=g) * 0.1
    runners = _stream_paths(model, paths)
    per_frame: dict[str, list[float]] = {p: [] for p in paths}  # wall seconds
    cpu_frame: dict[str, list[float]] = {p: [] for p in paths}  # this thread's CPU seconds
    load = [os.getloadavg()[0]]
    with torch.no_grad():
        for r in range(rounds):
            for p in paths[r % len(paths):] + paths[: r % len(paths)]:
                m = runners[p]
                with m.streaming(batch):  # warm-up, then a fresh stream
                    for i in range(3):
                        m.decode(m.encode(x[..., i * hop : (i + 1) * hop]))
                with m.streaming(batch):
                    for i in range(n_frames):
                        t, c = time.perf_counter(), time.thread_time()
                        m.decode(m.encode(x[..., i * hop : (i + 1) * hop]))
                        per_frame[p].append(time.perf_counter() - t)
                        cpu_frame[p].append(time.thread_time() - c)
        t = time.perf_counter()
        model.decode(model.encode(x))
        full = time.perf_counter() - t
    load.append(os.getloadavg()[0])
    frame_s = hop / sr
    res: dict = {"batch": batch, "rounds": rounds, "load_avg_1min": load, "full_rtf": full / (n_frames * frame_s)}
    for p, ts in per_frame.items():
        pf = np.array(ts)
        res[p] = {"stream_rtf": float(pf.mean() / frame_s), "frame_ms_p50": float(np.median(pf) * 1e3),
                  "frame_ms_p99": float(np.percentile(pf, 99) * 1e3),
                  "stream_rtf_cpu": float(np.mean(cpu_frame[p]) / frame_s)}
    return res


def _encodec_baseline(seconds: float) -> float | None:
    import torch

    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # encodec imports it at top
    try:
        from encodec.model import EncodecModel
    except ImportError:
        return None
    torch.manual_seed(0)
    ref = EncodecModel._get_model([1.5, 3.0, 6.0, 12.0, 24.0], 24000, 1, causal=True, model_norm="weight_norm")
    ref.set_target_bandwidth(1.5)
    ref.eval()
    x = torch.randn(1, 1, int(seconds * 24000)) * 0.1
    with torch.no_grad():
        for layer in ref.quantizer.vq.layers:  # skip k-means init: random codebooks
            layer._codebook.inited.fill_(1)
        ref(x[..., :24000])
        t = time.perf_counter()
        ref(x)
        return (time.perf_counter() - t) / seconds


def _gpu(model, batch: int) -> dict:  # type: ignore[no-untyped-def]
    import torch

    model = model.cuda()
    out = {}
    for B in sorted({16, batch}):
        x = torch.randn(B, 1, model.sample_rate * 10, device="cuda") * 0.1
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            for _ in range(2):
                model.decode(model.encode(x))
            torch.cuda.synchronize()
            t = time.perf_counter()
            n = 5
            for _ in range(n):
                model.decode(model.encode(x))
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / n
        out[B] = {"s_per_batch": dt, "audio_hours_per_s": B * 10 / 3600 / dt}
    return out


def _gpu_stream(model, batches: tuple[int, ...] = (1, 64, 256), n: int = 50) -> dict:  # type: ignore[no-untyped-def]
    """Streaming: one frame for B sessions per call (the serving step), fp32 and bf16 eager, fp32 as CUDA
    graphs (codec/graph.py, as the frame clock serves it: its audio against eager fp32's in `max_abs_diff`)."""
    import copy

    import torch

    from codec.graph import GraphedCodec

    out: dict = {}
    ref: dict[int, list] = {}  # eager fp32's audio per batch
    for name, dtype in (("fp32", torch.float32), ("fp32_graph", torch.float32), ("bf16", torch.bfloat16)):
        m = copy.deepcopy(model).to("cuda", dtype)
        for B in batches:
            x = torch.randn(B, 1, model.hop_length, device="cuda", dtype=dtype,
                            generator=torch.Generator("cuda").manual_seed(B)) * 0.1
            times, wavs = [], []
            with torch.no_grad(), m.streaming(B):
                g = GraphedCodec(m, B) if name.endswith("graph") else None
                for i in range(n + 5):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    wav = g.decode(g.encode(x)) if g is not None else m.decode(m.encode(x))
                    end.record()
                    torch.cuda.synchronize()
                    if i < 10:
                        wavs.append(wav.float().clone())
                    if i >= 5:  # warm-up
                        times.append(start.elapsed_time(end))
            r = out[f"{name}_b{B}"] = {"ms_p50": float(np.median(times)), "ms_p99": float(np.percentile(times, 99))}
            if name == "fp32":
                ref[B] = wavs
            elif name == "fp32_graph":
                r["max_abs_diff"] = max(float((a - b).abs().max()) for a, b in zip(wavs, ref[B]))
    return out


def run_bench(weights: str | None, seconds: float = 10.0, device: str = "cpu", batch: int = 64,
              rounds: int = 3, stream_batch: int = 1) -> dict:
    import torch

    from codec.io import load_codec

    model = load_codec(weights)
    res: dict = {"date": time.strftime("%Y-%m-%d"), "host": platform.processor() or platform.machine(),
                 "torch": torch.__version__,
                 "algorithmic_latency_ms": 1000 * model.hop_length / model.sample_rate}
    if device == "cpu":
        res["cpu"] = _cpu(model, seconds, rounds=rounds, batch=stream_batch)
        res["encodec24_full_rtf_1thread"] = _encodec_baseline(seconds)
        c, b = res["cpu"], res["encodec24_full_rtf_1thread"]
        frame = f"{res['algorithmic_latency_ms']:.0f} ms"
        print(f"Parley codec ({model.frame_rate:g} Hz), {seconds:g} s of audio x {rounds} interleaved rounds, "
              f"CPU 1 thread ({res['host']}, torch {res['torch']}), batch {stream_batch}, "
              f"load avg {c['load_avg_1min'][0]:.2f} -> {c['load_avg_1min'][1]:.2f}")
        print("| mode | RTF wall (lower is better) | RTF CPU time | per-frame wall p50 / p99 |")
        print("|---|---|---|---|")
        names = {"torch": "torch (reference)", "onnx": "FastCodec, ONNX Runtime", "fast-torch": "FastCodec, torch"}
        for p in STREAM_PATHS:
            r = c[p]
            print(f"| streaming encode+decode, 1 frame ({frame}) per call: {names[p]} | {r['stream_rtf']:.3f} | "
                  f"{r['stream_rtf_cpu']:.3f} | {r['frame_ms_p50']:.2f} / {r['frame_ms_p99']:.2f} ms |")
        print(f"| full pass encode+decode (torch) | {c['full_rtf']:.3f} | - | - |")
        if stream_batch > 1:
            print(f"(batch {stream_batch}: one call streams {stream_batch} sessions' frames; RTF per session = "
                  f"RTF / {stream_batch}: ONNX {c['onnx']['stream_rtf'] / stream_batch:.3f})")
        if b is not None:
            print(f"| baseline: EnCodec 24 kHz full pass (random weights, 1.5 kbps) | {b:.3f} | - | - |")
            print(f"streaming RTF / EnCodec full-pass RTF: torch {c['torch']['stream_rtf'] / b:.2f}, "
                  f"ONNX {c['onnx']['stream_rtf'] / b:.2f}")
    else:
        res["gpu"] = _gpu(model, batch)
        res["gpu_stream"] = _gpu_stream(model, (1, batch, 256))
        res["gpu_name"] = torch.cuda.get_device_name()
        print(f"GPU {res['gpu_name']}, bf16, batched full-pass encode+decode of 10 s items")
        for B, r in res["gpu"].items():
            print(f"| batch {B} | {r['s_per_batch'] * 1e3:.1f} ms | {r['audio_hours_per_s']:.2f} h audio / s |")
        frame_ms = 1000 * model.hop_length / model.sample_rate
        print(f"streaming, one {frame_ms:.0f} ms frame for B sessions per call (encode+decode; eager, or fp32_graph: "
              "CUDA graphs, its audio vs eager fp32's over 10 frames)")
        print("| precision, batch | p50 ms | p99 ms | max abs diff |")
        print("|---|---|---|---|")
        for k, r in res["gpu_stream"].items():
            d = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-"
            print(f"| {k} | {r['ms_p50']:.2f} | {r['ms_p99']:.2f} | {d} |")
    print(f"algorithmic latency: {res['algorithmic_latency_ms']:.0f} ms (one frame)")
    print(json.dumps(res))
    return res
