"""The one checkpoint writer (leaf module): a state dict as safetensors shards of at most
`max_bytes` each (the 16 MiB per-file rule of `weights/`), the config in every file's metadata,
and `manifest.json` beside them with each file's sha256 and size. Used by the codec
(`codec/io.py`) and the direct speech model (`model/speech_ckpt.py`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_FILE_BYTES = 16 * 1024 * 1024 - 64 * 1024  # 16 MiB per file, room left for the header


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks (weights files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_shards(sd: dict[str, "torch.Tensor"], out_dir: str | Path, meta: dict[str, str], manifest: dict,
                 max_bytes: int = MAX_FILE_BYTES) -> list[Path]:
    """Write `model-0000i-of-0000n.safetensors` (replacing older shards) + `manifest.json`
    (`manifest` plus `files`: sha256 and bytes of each); returns the files."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, "torch.Tensor"]] = [{}]
    size = 0
    for k, v in sd.items():
        n = v.numel() * v.element_size()
        if n > max_bytes:
            raise ValueError(f"{k} alone is {n} bytes, over the per-file limit of {max_bytes}")
        if size + n > max_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][k] = v.detach().to("cpu").contiguous()
        size += n
    for old in out.glob("model-*.safetensors"):
        old.unlink()
    files = []
    for i, shard in enumerate(shards):
        p = out / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(p), metadata=meta)
        files.append(p)
    man = {**manifest, "files": {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files}}
    (out / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return files
