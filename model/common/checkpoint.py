"""The one checkpoint writer (leaf module): a state dict as safetensors shards of at most
`max_bytes` each (the 16 MiB per-file rule of `weights/`), the config in every file's metadata,
and `manifest.json` beside them with each file's sha256 and size. Used by the codec
(`codec/io.py`) and the direct speech model (`model/speech_ckpt.py`)."""

from __future__ import annotations

import hashlib
import json
import re
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
    for k, v in split_rows(sd, max_bytes).items():
        n = v.numel() * v.element_size()
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


ROWS_SEP = ".rows"  # a tensor over the per-file limit is stored as KEY.rowsJofN, row blocks along dim 0
_ROWS_KEY = re.compile(rf"(.+){re.escape(ROWS_SEP)}(\d+)of(\d+)")


def split_rows(sd: dict[str, "torch.Tensor"], max_bytes: int = MAX_FILE_BYTES) -> dict[str, "torch.Tensor"]:
    """Tensors larger than `max_bytes` cut into row blocks `KEY.rowsJofN` that each fit a file
    (a fully fine-tuned backbone's int8 embedding is 28 MB); `join_rows` undoes it."""
    out = {}
    for k, v in sd.items():
        n = v.numel() * v.element_size()
        if n <= max_bytes:
            out[k] = v
            continue
        row = n // max(v.shape[0], 1)
        if v.ndim == 0 or row > max_bytes:
            raise ValueError(f"{k} ({tuple(v.shape)}) cannot be cut into rows under {max_bytes} bytes")
        parts = v.split(max(max_bytes // row, 1))
        out.update({f"{k}{ROWS_SEP}{j}of{len(parts)}": p for j, p in enumerate(parts)})
    return out


def join_rows(sd: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Inverse of `split_rows`: row blocks `KEY.rowsJofN` concatenated back into KEY."""
    import torch

    out, blocks = {}, {}
    for k, v in sd.items():
        m = _ROWS_KEY.fullmatch(k)
        if m:
            blocks.setdefault(m[1], [None] * int(m[3]))[int(m[2])] = v
        else:
            out[k] = v
    for base, parts in blocks.items():
        if any(p is None for p in parts):
            raise ValueError(f"{base}: row blocks missing ({sum(p is None for p in parts)} of {len(parts)})")
        out[base] = torch.cat(parts, 0)
    return out
