"""Distillation training of the direct speech model on tokenized cascade traces.

Data: each trace gives the user's codec tokens, the agent's (teacher TTS) codec tokens and the
reply text. ``make_example`` lays one turn out on the frame grid (model/layout.py):

    user  : [user speech ........][silence ..........................................]
    agent : [silence ...........................][agent speech ........][silence ....]
    text  : [PAD .................................][w0 PAD w1 w2 PAD ...][PAD .........]
                                   <- gap ->

Loss: cross-entropy on the agent's audio tokens (weights per codebook, silent agent frames
down-weighted) + the inner-monologue text (PAD down-weighted). bf16 autocast on CUDA, AdamW on
the trained parts only, cosine schedule, resumable (``last.pt`` with optimizer, step and RNG),
``torchrun``-ready DDP (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill.curriculum import CurriculumConfig, Turn, stage_example
from model.layout import StreamLayout, align_text, build_inputs, place_text

__all__ = ["Turn", "make_example", "collate", "compute_loss", "LossConfig", "TrainConfig", "train"]

log = logging.getLogger(__name__)


# --- data ------------------------------------------------------------------------------------
def make_example(
    turn: Turn, silence: np.ndarray, layout: StreamLayout, gap: int, tail: int, max_frames: int
) -> dict[str, np.ndarray]:
    """Lay out one turn (see module docstring) and build model inputs/targets (+ weights).

    silence: (K,) the codec's tokens of a silent frame. gap: frames between the end of user
    speech and the agent's first frame. Returns build_inputs(...) plus ``agent_speaking`` [T].
    """
    K = layout.n_q
    Tu, Ta = turn.user.shape[1], turn.agent.shape[1]
    T = min(Tu + gap + Ta + tail, max_frames)
    user = np.repeat(silence[:, None], T, axis=1).astype(np.int64)
    agent = user.copy()
    user[:, : min(Tu, T)] = turn.user[:, :T]
    a0 = Tu + gap
    if a0 < T:
        agent[:, a0 : min(a0 + Ta, T)] = turn.agent[:, : T - a0]
    if turn.token_frames is not None:
        text = place_text(turn.reply_tokens, turn.token_frames, a0, T, layout)
    else:
        text = align_text(turn.reply_tokens, a0, a0 + Ta, T, layout, turn.reply_char_lens)
    ex = build_inputs(user, agent, text, layout)
    speaking = np.zeros(T, dtype=bool)
    speaking[a0 : a0 + Ta] = True
    ex["agent_speaking"] = speaking
    assert ex["user_in"].shape == (K, T)
    return ex


def collate(examples: list[dict[str, np.ndarray]], layout: StreamLayout) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padded steps get zero loss weight (``valid``)."""
    T = max(e["text_tgt"].shape[0] for e in examples)
    B, K = len(examples), layout.n_q
    out = {
        "user_in": torch.full((B, K, T), 0, dtype=torch.long),
        "agent_in": torch.full((B, K, T), layout.audio_init, dtype=torch.long),
        "text_in": torch.full((B, T), layout.text_pad, dtype=torch.long),
        "agent_tgt": torch.full((B, K, T), 0, dtype=torch.long),
        "agent_mask": torch.zeros((B, K, T), dtype=torch.bool),
        "text_tgt": torch.full((B, T), layout.text_pad, dtype=torch.long),
        "agent_speaking": torch.zeros((B, T), dtype=torch.bool),
        "valid": torch.zeros((B, T), dtype=torch.bool),
    }
    if all("user_text_tgt" in e for e in examples):
        out["user_text_tgt"] = torch.full((B, T), layout.text_pad, dtype=torch.long)
    for i, e in enumerate(examples):
        t = e["text_tgt"].shape[0]
        for k in ("user_in", "agent_in", "agent_tgt", "agent_mask"):
            out[k][i, :, :t] = torch.from_numpy(e[k])
        for k in ("text_in", "text_tgt", "agent_speaking", "user_text_tgt"):
            if k in out:
                out[k][i, :t] = torch.from_numpy(e[k])
        out["valid"][i, :t] = True
    # INIT targets are masked; give them a real id so cross_entropy's range check passes
    out["agent_tgt"] = torch.where(out["agent_mask"], out["agent_tgt"], torch.zeros_like(out["agent_tgt"]))
    return out


# --- loss ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossConfig:
    text_weight: float = 1.0
    text_pad_weight: float = 0.3  # PAD steps of the monologue count this much (Moshi: 0.5)
    codebook_weights: tuple[float, ...] = (3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    silence_weight: float = 0.2  # agent frames outside its speech
    user_text_weight: float = 0.5  # aux user-text stream (when the batch and the model have it)


def compute_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], lc: LossConfig, layout: StreamLayout):
    """-> (total loss, metrics dict of floats)."""
    aux = "user_text_tgt" in batch and lc.user_text_weight > 0 and _has_user_text_head(model)
    out = model(batch["user_in"], batch["agent_in"], batch["text_in"], batch["text_tgt"], batch["agent_tgt"],
                with_user_text=aux)
    text_logits, audio_logits = out[0], out[1]
    valid = batch["valid"].float()  # (B, T)
    # text
    tl = F.cross_entropy(text_logits.float().flatten(0, 1), batch["text_tgt"].flatten(), reduction="none")
    tl = tl.view_as(valid)
    is_pad = batch["text_tgt"] == layout.text_pad
    tw = valid * torch.where(is_pad, lc.text_pad_weight, 1.0)
    text_loss = (tl * tw).sum() / tw.sum().clamp(min=1)
    # audio: (B, T, K, card) vs (B, K, T)
    tgt = batch["agent_tgt"].permute(0, 2, 1)  # (B, T, K)
    al = F.cross_entropy(audio_logits.float().flatten(0, 2), tgt.flatten(), reduction="none").view_as(tgt)
    cw = torch.tensor(lc.codebook_weights[: tgt.shape[-1]], device=al.device)
    frame_w = valid * torch.where(batch["agent_speaking"], 1.0, lc.silence_weight)  # (B, T)
    w = frame_w.unsqueeze(-1) * batch["agent_mask"].permute(0, 2, 1).float() * cw  # (B, T, K)
    audio_loss = (al * w).sum() / w.sum().clamp(min=1)
    loss = audio_loss + lc.text_weight * text_loss
    extra: dict[str, float] = {}
    if aux:  # what the user said: (B, T, V) vs (B, T), PAD down-weighted as in the monologue
        ut = batch["user_text_tgt"]
        ul = F.cross_entropy(out[2].float().flatten(0, 1), ut.flatten(), reduction="none").view_as(valid)
        u_pad = ut == layout.text_pad
        uw = valid * torch.where(u_pad, lc.text_pad_weight, 1.0)
        user_loss = (ul * uw).sum() / uw.sum().clamp(min=1)
        loss = loss + lc.user_text_weight * user_loss
        with torch.no_grad():
            uwords = batch["valid"] & ~u_pad
            uacc = ((out[2].argmax(-1) == ut) & uwords).sum() / uwords.sum().clamp(min=1)
        extra = {"user_text": user_loss.item(), "user_word_acc": uacc.item()}
    with torch.no_grad():
        sp = (batch["agent_speaking"] & batch["valid"]).unsqueeze(-1) & batch["agent_mask"].permute(0, 2, 1)
        acc0 = ((audio_logits[..., 0, :].argmax(-1) == tgt[..., 0]) & sp[..., 0]).sum() / sp[..., 0].sum().clamp(min=1)
        words = batch["valid"] & ~is_pad
        tacc = ((text_logits.argmax(-1) == batch["text_tgt"]) & words).sum() / words.sum().clamp(min=1)
        speech_ce = (al * sp).sum() / sp.sum().clamp(min=1)
    metrics = {
        "loss": loss.item(),
        "audio": audio_loss.item(),
        "text": text_loss.item(),
        "speech_ce": speech_ce.item(),
        "acc_cb0": acc0.item(),
        "text_word_acc": tacc.item(),
        **extra,
    }
    return loss, metrics


def _has_user_text_head(model: torch.nn.Module) -> bool:
    inner = getattr(model, "module", model)  # DDP
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    return bool(getattr(getattr(inner, "cfg", None), "user_text_head", False))


# --- training loop ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16  # per process
    lr: float = 3e-4
    backbone_lr_scale: float = 0.2  # full fine-tuning: pretrained backbone weights learn at lr x this
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_frames: int = 256  # 20.5 s per example
    gap: tuple[int, int] = (3, 8)  # frames between user and agent speech (random in range)
    tail: int = 6
    log_every: int = 20
    ckpt_every: int = 200
    eval_every: int = 200
    max_minutes: float = 0.0  # stop (and checkpoint) after this wall time; 0 = no limit
    seed: int = 0
    bf16: bool = True  # autocast on CUDA (CPU stays fp32)
    compile: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    curriculum: CurriculumConfig | None = None  # a curriculum stage (items: turns / traces); None: one turn


def setup_distributed() -> tuple[int, int, torch.device]:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; one process per GPU (or CPU processes on gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def lr_at(step: int, tc: TrainConfig, minutes: float = 0.0) -> float:
    """Linear warm-up, then cosine to 10% over the steps, or over ``max_minutes`` when that
    budget ends first (a GPU sitting of fixed length still gets a full schedule)."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    p = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    if tc.max_minutes > 0:
        p = max(p, minutes / tc.max_minutes)
    return tc.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    model: torch.nn.Module,
    train_turns: list[Turn] | list[list[Turn]],
    val_turns: list[Turn] | list[list[Turn]],
    silence: np.ndarray,
    tc: TrainConfig,
    run_dir: Path,
    device: torch.device | None = None,
    rank: int = 0,
    world: int = 1,
    on_checkpoint: Callable[[dict], None] | None = None,
    refresh: Callable[[], object] | None = None,
) -> dict:
    """Train (or resume from ``run_dir/last.pt``); returns the final metrics (rank 0's view).
    ``on_checkpoint(metrics)`` runs on rank 0 after each checkpoint (the periodic export).
    ``refresh()`` runs before every step and may append to ``train_turns`` / ``val_turns`` (`train
    --follow`: ``distill.pool.TurnPool.maybe_refresh``; each rank reloads on its own clock)."""
    layout: StreamLayout = model.cfg.layout
    device = device or torch.device("cpu")
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    pretrained = {n for n, _ in named if n.startswith("backbone.") and "lora" not in n}  # full fine-tuning
    groups = [{"params": [p for n, p in named if (p.ndim >= 2) == dec and (n in pretrained) == pre],
               "weight_decay": tc.weight_decay if dec else 0.0, "lr_scale": tc.backbone_lr_scale if pre else 1.0}
              for dec in (True, False) for pre in (False, True)]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=tc.lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")
    step, elapsed = 0, 0.0  # elapsed: training minutes of earlier sittings (resume)
    ck = run_dir / "last.pt"
    if ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        model.load_trainable({k: v.to(device) for k, v in state["model"].items()})
        opt.load_state_dict(state["opt"])
        step = state["step"]
        elapsed = state.get("minutes", 0.0)
        log.info("resumed from %s at step %d", ck, step)
    fwd = model
    if world > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        fwd = torch.compile(fwd)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tc.bf16 and device.type == "cuda")

    def example(item, rng: random.Random, gap: int | None = None) -> dict[str, np.ndarray]:
        if tc.curriculum is not None:
            return stage_example(item, silence, layout, tc.curriculum, rng, tc.max_frames)
        return make_example(item, silence, layout, rng.randint(*tc.gap) if gap is None else gap, tc.tail, tc.max_frames)

    def batch_at(s: int, turns: list, bs: int, r: int) -> dict[str, torch.Tensor]:
        rng = random.Random(tc.seed * 1_000_003 + s * 97 + r)  # deterministic per (step, rank)
        exs = [example(turns[rng.randrange(len(turns))], rng) for _ in range(bs)]
        return {k: v.to(device, non_blocking=True) for k, v in collate(exs, layout).items()}

    def evaluate() -> dict[str, float]:
        model.eval()
        acc: dict[str, list[float]] = {}
        with torch.no_grad(), autocast:
            for i in range(0, min(len(val_turns), 64), tc.batch_size):
                chunk = val_turns[i : i + tc.batch_size]
                rng = random.Random(i)
                exs = [example(t, rng, (tc.gap[0] + tc.gap[1]) // 2) for t in chunk]
                b = {k: v.to(device) for k, v in collate(exs, layout).items()}
                _, m = compute_loss(model, b, tc.loss, layout)
                for k, v in m.items():
                    acc.setdefault(k, []).append(v)
        model.train()
        return {f"val_{k}": float(np.mean(v)) for k, v in acc.items()}

    t0 = time.time()
    metrics: dict[str, float] = {}
    history: list[dict] = []
    model.train()
    while step < tc.steps:
        if refresh is not None:
            refresh()
        lr = lr_at(step, tc, elapsed + (time.time() - t0) / 60)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)  # older checkpoints: no scale
        batch = batch_at(step, train_turns, tc.batch_size, rank)
        with autocast:
            loss, m = compute_loss(fwd, batch, tc.loss, layout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()
        step += 1
        metrics = {**m, "grad_norm": float(gn), "lr": lr, "step": step, "min": elapsed + (time.time() - t0) / 60}
        if rank == 0 and (step % tc.log_every == 0 or step == 1):
            log.info("step %d " + " ".join(f"{k}=%.4g" for k in m), step, *m.values())
        out_of_time = tc.max_minutes > 0 and elapsed + (time.time() - t0) / 60 >= tc.max_minutes
        if val_turns and (step % tc.eval_every == 0 or step == tc.steps or out_of_time):
            metrics.update(evaluate())
            if rank == 0:
                log.info("eval step %d %s", step, {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")})
        if rank == 0 and (step % tc.log_every == 0 or step == tc.steps):
            history.append(dict(metrics))
        if rank == 0 and (step % tc.ckpt_every == 0 or step == tc.steps or out_of_time):
            _save_atomic({"model": {k: v.cpu() for k, v in model.trainable_state_dict().items()},
                          "opt": opt.state_dict(), "step": step, "train_config": asdict(tc),
                          "minutes": elapsed + (time.time() - t0) / 60,
                          "config": model.cfg.to_json()}, ck)
            if on_checkpoint is not None and not (step == tc.steps or out_of_time):  # the caller exports at the end
                on_checkpoint(dict(metrics))
        if out_of_time:
            break
    if rank == 0:
        import json

        with open(run_dir / "history.jsonl", "a") as f:
            for h in history:
                f.write(json.dumps(h) + "\n")
    if world > 1:  # every rank must hold the same weights after DDP's gradient all-reduce
        flat = torch.cat([p.detach().float().flatten() for p in params])
        sums = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), device=flat.device) % 7).sum()])
        allsums = [torch.zeros_like(sums) for _ in range(world)]
        torch.distributed.all_gather(allsums, sums)
        if not all(torch.allclose(a, allsums[0], rtol=1e-5, atol=1e-5) for a in allsums):
            raise RuntimeError(f"DDP ranks diverged: {allsums}")
        metrics["ddp_ranks_in_sync"] = 1.0
    return metrics
