"""Parley's on-disk cache (converted weights, decoded prompts)."""

from __future__ import annotations

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
