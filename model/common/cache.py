"""Parley's on-disk cache (converted weights, decoded prompts) and file hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """Cache root: $PARLEY_CACHE, else $XDG_CACHE_HOME/parley (~/.cache/parley); created on demand."""
    if os.environ.get("PARLEY_CACHE"):
        root = Path(os.environ["PARLEY_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "parley"
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks (weights files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
