"""Training the direct speech model on tokenized traces (GPU; CPU for tests).

    parley distill train --data DIR [--steps N --batch-size B --max-minutes M --run-dir runs/s2s
                                     --export weights/s2s]
    torchrun --nproc-per-node 8 -m voice distill train --data DIR ...   # multi-GPU (DDP)

`run_training(TrainJob(...))` resumes from ``RUN_DIR/last.pt`` when it exists. ``tiny`` builds a
tiny random model (no SmolLM2) and ``synthetic=N`` uses N random turns: the smoke test of the
whole pipeline. ``follow`` (`--follow`) trains while the token folders still grow: every
``reload_every_s`` the shards tokenized since join the pool (distill.pool; validation by trace key),
the optimizer and the step go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distill.train import TrainConfig, Turn
    from model.layout import StreamLayout
    from model.speech import AudioHead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """What `parley distill train` does (built from its arguments in voice/cli/distill.py)."""

    train: TrainConfig  # steps, batch, schedule, checkpoints (distill.train)
    data: tuple[Path, ...] = ()  # token folder(s) from `parley distill tokenize`
    synthetic: int = 0  # N random turns instead of `data`
    run_dir: Path = Path("runs/s2s")  # checkpoints and logs (resumed)
    export: Path | None = None  # write the trained parts here at the end (weights/s2s)
    export_every_s: float = 0.0  # also at checkpoints this far apart (0: only at the end): a lost machine keeps them
    gguf: str | None = None  # SmolLM2 GGUF (default: the bundled file)
    tiny: bool = False  # tiny random model (tests, smoke runs)
    lora_rank: int | None = None  # None: 4 for tiny, 8 for the full model
    full_finetune: bool = False  # every backbone weight trains (no adapters); the export holds the backbone
    audio_head: AudioHead | str = "depth"
    text_lead: int = 0  # each word's monologue token this many frames before its speech (model.layout)
    val_frac: float = 0.05  # share of validation items (follow: of traces, by a hash of the key)
    follow: bool = False  # reload token shards added while training (a generator + `tokenize --follow` feed it)
    reload_every_s: float = 60.0  # follow: seconds between reloads
    init: Path | None = None  # start from these trained parts (the previous curriculum stage's export)
    extra: dict = field(default_factory=dict)  # kept in the exported manifest


def synthetic_turns(n: int, layout: StreamLayout, seed: int = 0) -> list[Turn]:
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
        turns.append(Turn(user, agent, [int(t) for t in reply], name=f"syn{i}", trace=f"syn{i // 2}",
                          user_tokens=[int(t) % layout.text_card for t in user[0, :3]]))
    return turns


def _init_from(model, weights: Path) -> None:
    """Load the trained parts of an earlier stage; parts it lacks (e.g. the user-text head of Listen
    after Speak) keep their fresh init. The stream layouts must agree."""
    from model.common.errors import ParleyError
    from model.speech_ckpt import read_trained

    cfg0, sd, _ = read_trained(Path(weights))
    lay0, lay = cfg0.layout, model.cfg.layout
    if (lay0.n_q, lay0.card, lay0.text_card, lay0.delays) != (lay.n_q, lay.card, lay.text_card, lay.delays):
        raise ParleyError(f"--init {weights}: its layout {lay0} differs from this model's {lay}")
    want = model.trainable_state_dict()
    folded = []
    if cfg0.lora_rank > 0 and model.cfg.lora_rank == 0:  # a LoRA stage, continued with full fine-tuning
        from model.lora import fold_lora_state

        try:
            folded = fold_lora_state(sd, dict(model.named_parameters()), cfg0.lora_alpha / cfg0.lora_rank)
        except KeyError as e:
            raise ParleyError(f"--init {weights}: an adapter for a layer this model does not have: {e}") from None
    extra = sorted(set(sd) - set(want))
    if extra:
        raise ParleyError(f"--init {weights}: parts this model does not have: {extra[:5]}"
                          + (" (a fully fine-tuned export cannot continue as LoRA)" if cfg0.lora_rank == 0 else ""))
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in sd.items()}, strict=False)
    fresh = sorted(k for k in set(want) - set(sd) if not k.startswith("backbone."))  # (the backbone: the GGUF's)
    log.info("initialized %d trained tensors from %s%s%s", len(sd), weights,
             f"; {len(folded)} LoRA adapters folded into the backbone" if folded else "",
             f"; fresh: {fresh}" if fresh else "")


def run_training(job: TrainJob) -> int:
    """Builds the model and the turns, trains (DDP under torchrun), exports on rank 0."""
    import json
    import random

    import numpy as np
    import torch

    from distill.train import setup_distributed, train
    from model.presets import full_speech_config, tiny_speech_config
    from model.speech_ckpt import build_model, save_trained_atomic
    from model.common.errors import ParleyError

    tc = replace(job.train, warmup=min(job.train.warmup, max(1, job.train.steps // 10)))
    rank, world, device = setup_distributed()
    torch.manual_seed(tc.seed)
    sizes, codec = {}, None
    if job.data and not job.synthetic:
        from distill.tokens import load_manifest, token_dir

        made = [d for d in job.data if (token_dir(d) / "manifest.json").exists()]  # --follow: some may not exist yet
        man = load_manifest(made[0] if made else job.data[0])
        sizes, codec = {"n_q": int(man["n_q"]), "card": int(man["bins"])}, man.get("codec_id")
    stage = tc.curriculum.stage if tc.curriculum is not None else None
    aux = stage is not None and stage.value != "speak" and tc.loss.user_text_weight > 0  # the user-text head
    if job.tiny:
        text_card = 49152 if sizes else 64  # real data: SmolLM2's tokenizer ids
        rank_ = 0 if job.full_finetune else job.lora_rank or 4
        cfg = tiny_speech_config(rank_, job.audio_head, text_card=text_card, user_text_head=aux,
                                 train_backbone=job.full_finetune, text_lead=job.text_lead, **sizes)
        model = build_model(cfg, pretrained=False)
    else:
        rank_ = 0 if job.full_finetune else job.lora_rank or 8
        cfg = full_speech_config(rank_, job.audio_head, job.gguf, user_text_head=aux,
                                 train_backbone=job.full_finetune, text_lead=job.text_lead, **sizes)
        model = build_model(cfg, gguf_path=job.gguf)
    layout = cfg.layout
    if job.init is not None:
        _init_from(model, job.init)
    pool = None
    if job.follow and not job.synthetic:
        from distill.pool import TurnPool

        pool = TurnPool(job.data, layout, stage, job.val_frac, gguf=job.gguf, every_s=job.reload_every_s)
        pool.maybe_refresh()
        if not pool.train:
            raise ParleyError(f"train --follow: no training items in {', '.join(map(str, job.data))} yet")
        tr, val, silence, data_desc = pool.train, pool.val, pool.silence, pool.describe()
    elif job.synthetic:
        turns = synthetic_turns(job.synthetic, layout, tc.seed)
        silence = np.zeros(layout.n_q, dtype=np.int64)
        data_desc = f"{job.synthetic} synthetic turns"
    else:
        if not job.data:
            raise ParleyError("give --data DIR (token shards from `parley distill tokenize`) or --synthetic N")
        from distill.s2s_data import load_turns

        turns, silence, data_desc = load_turns(list(job.data), layout, gguf=job.gguf)
    if pool is None:
        if stage is not None:
            from distill.curriculum import stage_items

            turns = stage_items(turns, stage)
            data_desc += f", stage {stage.value}: {len(turns)} items"
        if len(turns) < 2:
            raise ParleyError(f"need at least 2 turns to train, found {len(turns)}")
        order = list(range(len(turns)))
        random.Random(1234).shuffle(order)
        n_val = max(1, int(len(turns) * job.val_frac))
        val = [turns[i] for i in order[:n_val]]
        tr = [turns[i] for i in order[n_val:]]
    if rank == 0:
        n_tr = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("training on %s (%d train / %d val turns), %d trained params, %d process(es) on %s",
                 data_desc, len(tr), len(val), n_tr, world, device)
    plain = (int, float, str, bool)
    settings = {k: v for k, v in {**asdict(tc), **asdict(job)}.items() if isinstance(v, plain)}

    def export(metrics: dict, partial: bool) -> None:
        save_trained_atomic(model, job.export, {
            "training_data": pool.describe() if pool else data_desc, "codec_id": codec,
            "train_turns": len(tr), "val_turns": len(val),
            "steps": int(metrics.get("step", 0)), "final_metrics": metrics, "partial": partial,
            "train_config": {**settings, "audio_head": str(cfg.audio_head.value), "lora_rank": cfg.lora_rank,
                             "stage": stage.value if stage is not None else None,
                             "init": str(job.init) if job.init else None, **job.extra},
        })
        log.info("trained parts written to %s%s", job.export, " (mid-run)" if partial else "")

    last_export = [time.monotonic()]

    def on_checkpoint(metrics: dict) -> None:
        if time.monotonic() - last_export[0] >= job.export_every_s:
            export(metrics, partial=True)
            last_export[0] = time.monotonic()

    periodic = on_checkpoint if job.export and job.export_every_s > 0 else None
    metrics = train(model, tr, val, silence, tc, job.run_dir, device=device, rank=rank, world=world,
                    on_checkpoint=periodic, refresh=pool.maybe_refresh if pool else None)
    if rank == 0:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
        if job.export:
            export(metrics, partial=False)
    if world > 1:  # all ranks leave together: gloo aborts a process that exits while a peer still talks
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0
