"""`parley bench tts`: piper joe through onnxruntime one sentence at a time vs torch batched
(model/bench/tts.py). Registered by voice/cli/bench.py beside the other areas."""

from __future__ import annotations

import argparse

from model.common.errors import ParleyError


def register_tts(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("tts", help="piper joe: onnxruntime one sentence at a time vs torch batched (audio s/s)")
    p.add_argument("--device", default="cpu", help="torch device of the batched path (cpu, cuda)")
    p.add_argument("--batch", default="1,8,32", help="comma-separated torch batch sizes (sentences per call)")
    p.add_argument("--n", type=int, default=32, help="sentences per timed pass")
    p.add_argument("--decoder-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="the HiFi-GAN decoder's dtype (the rest stays float32, so the durations are onnxruntime's)")
    p.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads (default 1: a distill TTS process)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: --ort-threads)")
    p.add_argument("--rounds", type=int, default=2, help="timed passes per row (the best is reported)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.set_defaults(func=tts_cmd)


def tts_cmd(args: argparse.Namespace) -> int:
    from model.bench.tts import TtsBenchConfig, run_bench
    from voice.cli.bench import _ints  # (loaded: it registers this command)

    batches = _ints(args.batch, "--batch")
    if not batches or min(batches) < 1 or args.n < 1 or args.rounds < 1:
        raise ParleyError("--batch, --n and --rounds must be positive")
    return run_bench(TtsBenchConfig(device=args.device, batches=batches, n=args.n, decoder_dtype=args.decoder_dtype,
                                    ort_threads=args.ort_threads, threads=args.threads, rounds=args.rounds,
                                    json_path=args.json))
