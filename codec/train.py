"""Codec training loop (GPU, bf16 autocast; also runs a tiny config on CPU for tests).

Losses (weights in TrainConfig): multi-scale mel L1 (log + linear), waveform L1, RVQ commitment,
and after `adv_start` steps a multi-scale STFT discriminator (hinge) with relative feature
matching. Resumable: `out_dir/ckpt.pt` holds model, discriminator, optimisers and step; every
`ckpt_every_s` seconds it is rewritten and the inference weights are exported to `out_dir/export/`
(the format of weights/codec, small enough to bring back from a GPU machine); with a held-out set,
`out_dir/export_best/` keeps the export with the best quick-eval score (`eval_score`). `init_from` warm-starts
from exported weights (a later GPU sitting on a fresh machine).
Logs: `out_dir/log.jsonl` (one line per `log_every` steps).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from codec.augment import AugmentConfig, augment
from codec.data import ShardDataset
from codec.io import load_state, save_codec
from codec.losses import MultiScaleSTFTDiscriminator, d_hinge_loss, g_adv_and_feat_loss, multiscale_mel_loss
from codec.model import CodecConfig, ParleyCodec
from codec.evaluate import load_eval_rows
from codec.quick_eval import quick_eval
from codec.semantic import load_teacher, pool_to_frames, semantic_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    segment_s: float = 2.4  # crop length (30 frames at 12.5 Hz)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    warmup_steps: int = 300
    max_steps: int = 20000
    max_minutes: float = 0.0  # stop after this wall time (0: no limit); the LR schedule and
    # adv_start_frac then follow whichever of steps / time is further along
    lr_final_ratio: float = 0.1  # cosine decay to lr * this at max_steps
    dropout_p: float = 0.5  # quantizer dropout: probability an item uses fewer codebooks
    w_mel: float = 1.0
    w_wav: float = 0.1
    w_commit: float = 1.0
    w_adv: float = 1.0
    w_feat: float = 3.0
    adv_start: int = 3000  # discriminator starts after this many steps ...
    adv_start_frac: float = 1.0  # ... or after this fraction of max_minutes, whichever comes first
    disc_filters: int = 32
    kmeans_batches: int = 8  # batches of latents for the k-means codebook initialisation
    grad_clip: float = 10.0
    log_every: int = 50
    ckpt_every_s: float = 180.0
    refresh_every: int = 200  # re-scan the data folder for new shards
    augment: bool = True
    bypass_p: float = 0.0  # probability an item's decoder sees the unquantized latent (Mimi: 0.5)
    w_sem: float = 1.0  # semantic distillation weight (codecs with semantic_dim > 0)
    teacher: str = ""  # Whisper teacher file (`parley codec export-teacher`) for semantic_dim > 0
    eval_dir: str = ""  # held-out set (prepare-data's folder): quick eval at each checkpoint
    seed: int = 0


def _warm_start(model: ParleyCodec, src: ParleyCodec) -> int:
    """Load `src`'s weights into `model`; returns how many codebooks `model` has beyond `src`'s.

    The configs must match except that `model` may have more RVQ levels (the bitrate trade-off of
    issue 10 measured from a trained codec): its extra levels stay uninitialised and are
    k-means-initialised on their residual by the first training step.
    """
    a, b = src.cfg.to_dict(), model.cfg.to_dict()
    if {**a, "n_q": 0} != {**b, "n_q": 0} or b["n_q"] < a["n_q"]:
        raise ValueError(f"init_from has another codec config (only more codebooks may differ): {a} vs {b}")
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("embed_avg")}
    if b["n_q"] > a["n_q"]:
        own = model.state_dict()
        sd.update({k: v for k, v in own.items() if k.startswith("quantizer.") and k not in sd
                   and not k.endswith("embed_avg")})  # the new levels as built (inited = 0)
    load_state(model, sd)
    return b["n_q"] - a["n_q"]


def _progress(tc: TrainConfig, step: int, elapsed_s: float) -> float:
    p = step / max(1, tc.max_steps)
    if tc.max_minutes:
        p = max(p, elapsed_s / (tc.max_minutes * 60))
    return min(1.0, p)


def _lr(tc: TrainConfig, step: int, progress: float) -> float:
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    t = progress
    return tc.lr * (tc.lr_final_ratio + (1 - tc.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _save_ckpt(path: Path, model: ParleyCodec, disc: torch.nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, step: int, tc: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(), "step": step, "codec_config": model.cfg.to_dict(),
                "train_config": asdict(tc)}, tmp)
    os.replace(tmp, path)


def train(data_dir: str | Path, out_dir: str | Path, codec_cfg: CodecConfig = CodecConfig(),
          tc: TrainConfig = TrainConfig(), device: str = "cuda", init_from: str | Path | None = None) -> dict:
    """Train (or resume) and return the last logged metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tc.seed)
    dev = torch.device(device)
    use_amp = dev.type == "cuda"
    if use_amp:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ckpt_path = out / "ckpt.pt"
    step = 0
    model = ParleyCodec(codec_cfg).to(dev)
    disc = MultiScaleSTFTDiscriminator(filters=tc.disc_filters).to(dev)
    opt_g = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=0.0)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        disc.load_state_dict(ck["disc"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        step = int(ck["step"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif init_from is not None:
        from codec.io import load_codec

        src = load_codec(init_from)
        n_new = _warm_start(model, src)
        log.info("warm start from %s%s", init_from,
                 f" (+{n_new} codebooks, k-means-initialised on their residual at the first step)" if n_new else "")
    if codec_cfg.semantic_dim and not tc.teacher:
        raise ValueError("semantic_dim > 0 needs a teacher file (TrainConfig.teacher)")
    teacher = load_teacher(tc.teacher, dev) if tc.teacher else None  # distillation and/or eval
    if codec_cfg.semantic_dim and teacher is not None and teacher.dim != codec_cfg.semantic_dim:
        raise ValueError(f"teacher has {teacher.dim} dims, codec semantic_dim {codec_cfg.semantic_dim}")
    eval_rows = _eval_rows(tc.eval_dir)
    sr = codec_cfg.sample_rate
    seg = int(round(tc.segment_s * codec_cfg.frame_rate)) * codec_cfg.hop_length
    data = ShardDataset(data_dir, seg, seed=tc.seed + step)
    log.info("data: %d shards, %.2f h", len(data.audio), data.hours)
    aug_cfg = AugmentConfig()

    def get_batch() -> torch.Tensor:
        x = torch.from_numpy(data.batch(tc.batch_size)).to(dev, non_blocking=True).float() / 32768.0
        if tc.augment:
            x = augment(x, sr, aug_cfg)
        return x[:, None]  # (B, 1, T)

    model.train()
    disc.train()
    if not model.quantizer.vq.layers[0]._codebook.is_inited():
        with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
            lat = torch.cat([model.encode_latent(get_batch()) for _ in range(tc.kmeans_batches)])
        model.quantizer.init_kmeans(lat.float())
        log.info("k-means codebook init on %d latent vectors", lat.shape[0] * lat.shape[2])

    t0 = time.time()
    last_ckpt = time.time()
    logf = open(out / "log.jsonl", "a")
    acc: dict[str, torch.Tensor] = {}
    n_acc = 0
    last: dict = {}
    while step < tc.max_steps:
        if tc.max_minutes and time.time() - t0 > tc.max_minutes * 60:
            break
        if step % tc.refresh_every == 0 and step:
            before = len(data.audio)
            if data.refresh() != before:
                log.info("data: %d shards, %.2f h", len(data.audio), data.hours)
        progress = _progress(tc, step, time.time() - t0)
        lr = _lr(tc, step, progress)
        for g in (*opt_g.param_groups, *opt_d.param_groups):
            g["lr"] = lr
        x = get_batch()
        with torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
            lat = model.encode_latent(x)
        q = model.quantizer(lat.float(), tc.dropout_p, tc.bypass_p)
        with torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
            y = model.decoder(q.quantized)
        y = y.float()[..., : x.shape[-1]]
        xs, ys = x[:, 0], y[:, 0]
        mel = multiscale_mel_loss(xs, ys, sr)
        wav = (xs - ys).abs().mean()
        losses = {"mel": mel, "wav": wav, "commit": q.commit_loss}
        if codec_cfg.semantic_dim:
            assert teacher is not None
            with torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
                target = pool_to_frames(teacher(xs).float(), lat.shape[-1], codec_cfg.hop_length)
            losses["sem"] = semantic_loss(model.semantic_features(q), target)
        adv_on = step >= tc.adv_start or progress >= tc.adv_start_frac
        if adv_on:
            # discriminator step
            with torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
                d_loss = d_hinge_loss(disc(xs), disc(ys.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            with torch.autocast(dev.type, torch.bfloat16, enabled=use_amp):
                adv, feat = g_adv_and_feat_loss(disc(xs), disc(ys))
            losses.update(d=d_loss.detach(), adv=adv, feat=feat)
        g_loss = tc.w_mel * mel + tc.w_wav * wav + tc.w_commit * q.commit_loss
        if codec_cfg.semantic_dim:
            g_loss = g_loss + tc.w_sem * losses["sem"]
        if adv_on:
            g_loss = g_loss + tc.w_adv * losses["adv"] + tc.w_feat * losses["feat"]
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt_g.step()
        step += 1
        for k, v in {**losses, "grad_norm": gn, "usage": q.usage.mean()}.items():
            acc[k] = acc[k] + v.detach() if k in acc else v.detach()  # on the device: no sync per step
        n_acc += 1
        if step % tc.log_every == 0:
            el = time.time() - t0
            last = {"step": step, "time_s": round(el, 1), "lr": lr,
                    **{k: round(float(v) / n_acc, 5) for k, v in acc.items()},
                    "audio_h_per_s": round(tc.batch_size * seg / sr / 3600 * n_acc / max(el - last.get("time_s", 0), 1e-6), 4)}
            logf.write(json.dumps(last) + "\n")
            logf.flush()
            log.info("%s", last)
            acc, n_acc = {}, 0
        if time.time() - last_ckpt > tc.ckpt_every_s:
            _checkpoint(out, model, disc, opt_g, opt_d, step, tc, data)
            eval_rows = eval_rows or _eval_rows(tc.eval_dir)
            _eval_and_keep_best(out, model, eval_rows, teacher, step, time.time() - t0)
            last_ckpt = time.time()
    _checkpoint(out, model, disc, opt_g, opt_d, step, tc, data)
    eval_rows = eval_rows or _eval_rows(tc.eval_dir)
    if res := _eval_and_keep_best(out, model, eval_rows, teacher, step, time.time() - t0):
        last["eval"] = res
    logf.close()
    return last


def _eval_rows(eval_dir: str) -> list[dict]:
    """The held-out set, or [] while it is not there yet (a GPU machine may receive it after the start)."""
    if not eval_dir:
        return []
    if not (Path(eval_dir) / "eval.jsonl").exists():
        log.warning("no held-out set in %s yet: quick eval waits for it", eval_dir)
        return []
    return load_eval_rows(eval_dir)


def _eval_and_keep_best(out: Path, model: ParleyCodec, rows: list[dict], teacher: torch.nn.Module | None,
                        step: int, elapsed_s: float) -> dict:
    """Quick held-out eval of the checkpoint just exported, appended to out/eval.jsonl; export/ is
    copied to export_best/ when its score is the best so far. {} without a held-out set."""
    if not rows:
        return {}
    res = {"step": step, "time_s": round(elapsed_s, 1), **quick_eval(model, rows, teacher)}
    with open(out / "eval.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    log.info("eval %s", res)
    _keep_best(out, res)
    return res


def eval_score(res: dict) -> float:
    """One number to rank checkpoints by on the held-out real speaker: STOI + Whisper-encoder
    cosine (intelligibility; GPU run 2 saw both fall once the discriminator ran, while mel kept
    improving), else the cosine, else minus the mel distance."""
    real = res.get("real") or res.get("synthetic") or {}
    if "stoi" in real and "whisper_cos" in real:
        return real["stoi"] + real["whisper_cos"]
    return real.get("whisper_cos", -real.get("mel_dist", float("inf")))


def _keep_best(out: Path, res: dict) -> None:
    """Copy export/ to export_best/ when this checkpoint's held-out score is the best so far."""
    best_file = out / "export_best" / "eval.json"
    best = json.loads(best_file.read_text()) if best_file.exists() else None
    if best is not None and eval_score(best) >= eval_score(res):
        return
    tmp = out / "export_best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out / "export", tmp)
    (tmp / "eval.json").write_text(json.dumps(res))
    shutil.rmtree(out / "export_best", ignore_errors=True)
    os.replace(tmp, out / "export_best")
    log.info("best held-out score so far (%.4f) at step %d: export_best/", eval_score(res), res["step"])


def _checkpoint(out: Path, model: ParleyCodec, disc: torch.nn.Module, opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, step: int, tc: TrainConfig, data: ShardDataset) -> None:
    _save_ckpt(out / "ckpt.pt", model, disc, opt_g, opt_d, step, tc)
    save_codec(model, out / "export", {"steps": step, "train_config": asdict(tc),
                                      "train_hours_seen": round(step * tc.batch_size * tc.segment_s / 3600, 2),
                                      "data_hours": round(data.hours, 2), "data_shards": len(data.audio)})
    log.info("checkpoint at step %d", step)


def plot_log(log_path: str | Path, out_png: str | Path) -> None:
    """Loss curves of a log.jsonl (steps on x; time restarts mark resumed sittings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k in ("mel", "wav", "commit"):
        axes[0].plot(steps, [r.get(k, float("nan")) for r in rows], label=k)
    axes[0].set_yscale("log")
    axes[0].set_title("reconstruction")
    for k in ("d", "adv", "feat"):
        axes[1].plot(steps, [r.get(k, float("nan")) for r in rows], label=k)
    axes[1].set_title("adversarial")
    axes[2].plot(steps, [r.get("usage", float("nan")) for r in rows], label="codebook usage / batch")
    axes[2].plot(steps, [r["lr"] / max(x["lr"] for x in rows) for r in rows], label="lr (relative)")
    axes[2].set_title("codebooks, lr")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
