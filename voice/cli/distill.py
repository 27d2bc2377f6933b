"""`parley distill ...`: generate / stats / tokenize (this module) and train / eval
(registered from voice/cli/distill_train.py). Registration is cheap."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from model.common.errors import ParleyError
from voice.cli import distill_train


def _generate(args: argparse.Namespace) -> int:
    from distill.runner import GenConfig, generate
    from distill.stages import StagesSpec

    real_frac = args.real_frac if args.real_frac is not None else (0.0 if args.speak_only else 0.35)
    cfg = GenConfig(seed=args.seed, eval_frac=args.eval_frac, real_frac=real_frac,
                    stages=StagesSpec.parse(args.stages), speak_only=args.speak_only)
    batch = None
    if args.batched:
        import torch

        from distill.batched import BatchSpec

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ParleyError(f"--device {args.device}: this torch has no CUDA device (pass --device cpu)")

        if args.tts_device.startswith("cuda") and not torch.cuda.is_available():
            raise ParleyError(f"--tts-device {args.tts_device}: this torch has no CUDA device")
        batch = BatchSpec(cfg.stages, device=args.device, tts_workers=args.tts_workers, asr_batch=args.asr_batch,
                          llm_batch=args.llm_batch, block=args.block, tts_device=args.tts_device,
                          tts_batch=args.tts_batch)
    import signal
    import sys
    import threading

    # SIGTERM (`timeout`, a job stopped) -> SystemExit: the shard writer commits and seals what was
    # written; raised inside a C callback (FLAC I/O) it is only printed, then the flag stops the run
    term = threading.Event()

    def on_term(*_) -> None:
        term.set()
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    summary = generate(args.out, args.n, cfg, workers=args.workers, ray_address=args.ray,
                       shard_traces=args.shard_traces, progress=not args.no_progress, threads=args.threads,
                       batch=batch, max_minutes=args.max_minutes, stop=term.is_set)
    print(json.dumps(summary))
    return 143 if summary.get("stopped") else 1 if summary["failed"] else 0


def _stats(args: argparse.Namespace) -> int:
    from distill.stats import compute_stats, format_stats

    st = compute_stats(args.dir)
    print(json.dumps(st, indent=1) if args.json else format_stats(st))
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from distill.tokenize import tokenize

    print(json.dumps(tokenize(args.dir, args.codec, out=args.out, with_clean=args.with_clean,
                              include_open=args.include_open, device=args.device,
                              batch_s=args.batch_s if args.batch_s is not None else
                              (300.0 if args.device.startswith("cuda") else 0.0),
                              follow=args.follow, until=args.until, poll_s=args.poll_s)))
    return 0


def _pack_tokens(args: argparse.Namespace) -> int:
    from distill.token_pack import pack_summary, pack_tokens

    print(pack_summary(pack_tokens(args.src, args.dest, args.max_mib)))
    return 0


def _unpack_tokens(args: argparse.Namespace) -> int:
    from distill.token_pack import unpack_tokens

    print(unpack_tokens(args.carried, args.dest, args.codec).line(args.carried.name))
    return 0


def _add_token_pack(sub) -> None:
    p = sub.add_parser("pack-tokens", help="a token folder's sealed shards -> tar.gz parts + sha256 index, each "
                                           "part small enough to come back from a GPU call (distill/token_pack.py)")
    p.add_argument("src", type=Path, help="token folder (or the trace folder holding tokens/)")
    p.add_argument("dest", type=Path, help="output folder (its earlier parts are replaced; an unchanged selection is kept)")
    p.add_argument("--max-mib", type=float, default=9.0, help="most MiB of one part (9: 7 parts fit one call)")
    p.set_defaults(func=_pack_tokens)
    p = sub.add_parser("unpack-tokens", help="parts + index (pack-tokens) -> a token folder, sha256 checked")
    p.add_argument("carried", type=Path, help="folder with tokens.index.json and the parts")
    p.add_argument("dest", type=Path, help="the token folder to write (atomically)")
    p.add_argument("--codec", type=Path, default=None, help="refuse a pack tokenized with another codec")
    p.set_defaults(func=_unpack_tokens)


def _kit(args: argparse.Namespace) -> int:
    from distill.gpu_kit import KitConfig, KitProfile, build_kit

    man = build_kit(KitConfig(out=args.out, profile=KitProfile(args.profile), part_mib=args.part_mib,
                              call_mib=args.call_mib, python_version=args.python_version))
    print(man.to_json() if args.json else
          "\n".join([f"{c}: {b / 2**20:.1f} MiB" for c, b in man.calls.items()]
                    + [f"total {sum(f.bytes for f in man.files) / 2**20:.1f} MiB in {len(man.files)} files -> "
                       f"{args.out}/kit.json"]))
    return 0


def _add_kit(sub) -> None:
    from distill.kit_profiles import KitProfile  # noqa: PLC0415 - stdlib only, no heavy imports

    p = sub.add_parser("kit", help="collect what the GPU machine lacks (wheels, voices, GGUF, .debs) into "
                                   "call-sized folders with sha256 (distill/gpu_kit.py)")
    p.add_argument("out", type=Path, help="output folder (git-ignored, e.g. .carry/kit); rebuilt from scratch")
    p.add_argument("--profile", default="full", choices=[k.value for k in KitProfile],
                   help="speak: run 1 of issue 11 (piper joe + GGUF); full: + Whisper, espeak-ng, flite; "
                   "serve: issue 12's direct engine + WebRTC bench client; serve-cascade: what the cascade adds "
                   "(distill/kit_profiles.py)")
    p.add_argument("--python-version", default="3.12",
                   help="wheels for this Python (default 3.12, the GPU host's; 3.11: check a kit here)")
    p.add_argument("--part-mib", type=float, default=0.0, help="split files larger than this (0: the call budget)")
    p.add_argument("--call-mib", type=float, default=0.0,
                   help="most MiB of one call folder (0: 64 MiB minus the working tree that travels, minus 1)")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.set_defaults(func=_kit)


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
    p.add_argument("--real-frac", type=float, default=None,
                   help="share of eval traces by the real recorded speaker (default 0.35; 0 with --speak-only)")
    p.add_argument("--stages", default="real", help="real (models) | fake | fake:SECONDS (tests)")
    p.add_argument("--shard-traces", type=int, default=100, help="traces per shard")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new trace after this wall time (those in flight finish); a rerun resumes")
    b = p.add_argument_group("batched path (GPU machine): Whisper + LLM batched on --device, TTS on CPU processes")
    b.add_argument("--batched", action="store_true",
                   help="TTS on CPU processes fed per turn, Whisper + LLM batched (distill/batched.py, flow.py)")
    b.add_argument("--speak-only", action="store_true",
                   help="Speak-stage data: LLM replies said by piper joe; no Whisper, user voices, espeak-ng, flite")
    b.add_argument("--device", default="cuda", help="Whisper and LLM device with --batched (cuda | cpu)")
    b.add_argument("--tts-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="TTS processes")
    b.add_argument("--tts-device", default="", help="agent speech (piper joe) in torch on this device (cuda | cpu), "
                   "many traces' sentences per call (distill/agent_tts.py); default: on the TTS processes")
    b.add_argument("--tts-batch", type=int, default=64, help="sentences per torch TTS call (--tts-device)")
    b.add_argument("--asr-batch", type=int, default=32)
    b.add_argument("--llm-batch", type=int, default=128,
                   help="LLM replies decoded together (continuous batching: waiting ones join as rows leave)")
    b.add_argument("--block", type=int, default=256, help="traces in flight (LLM batches are drawn from them)")
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
    p.add_argument("--batch-s", type=float, default=None,
                   help="encode clips in zero-padded batches of this many seconds (default 300 on cuda, 0 = one by one)")
    p.add_argument("--follow", action="store_true",
                   help="beside a running generator: encode shards as they are sealed until --until exists, "
                        "then a last pass")
    p.add_argument("--until", type=Path, default=None, help="--follow: the file that says the generator has ended")
    p.add_argument("--poll-s", type=float, default=10.0, help="--follow: seconds between passes (10)")
    p.set_defaults(func=_tokenize)
    distill_train.register_train_eval(dsub)
    _add_kit(dsub)
    _add_token_pack(dsub)
