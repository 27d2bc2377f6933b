"""Real recorded speech for tests and benchmarks: Debian's asterisk-core-sounds-en-g722 prompts.

The prompts are headerless G.722 (16 kHz, one US female voice). `prompt_wav(name)` decodes one
with the ffmpeg binary into a cached 16 kHz WAV (~/.cache/parley/prompts or $PARLEY_CACHE).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from model.common.audio_constants import SPEECH_SR
from model.common.cache import cache_dir
from model.common.errors import ParleyError
from model.common.paths import ASTERISK_EN_PROMPTS

# Prompts used by tests and `parley bench components`: 3-5 s turns plus two long ones.
SHORT_PROMPTS = (
    "conf-onlyperson", "vm-sorry", "auth-incorrect", "privacy-unident", "demo-nomatch",
    "vm-tempgreeting", "ss-noservice", "dir-firstlast", "agent-user", "pbx-invalidpark",
)
LONG_PROMPTS = ("vm-options", "demo-echotest")  # 16 s, 22 s


def have_prompts() -> bool:
    return ASTERISK_EN_PROMPTS.is_dir() and shutil.which("ffmpeg") is not None


def prompt_wav(name: str) -> Path:
    """Decode `<ASTERISK_EN_PROMPTS>/<name>.g722` to a cached 16 kHz mono WAV; returns its path."""
    src = ASTERISK_EN_PROMPTS / f"{name}.g722"
    if not src.exists():
        raise ParleyError(f"speech prompt not found: {src} (apt-get install asterisk-core-sounds-en-g722)")
    if shutil.which("ffmpeg") is None:
        raise ParleyError("ffmpeg is needed to decode G.722 prompts (apt-get install ffmpeg)")
    out_dir = cache_dir() / "prompts"
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{name}.wav"
    if not dst.exists():
        tmp = dst.with_suffix(f".{os.getpid()}.tmp.wav")
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "g722",
               "-i", str(src), "-ac", "1", "-ar", str(SPEECH_SR), "-c:a", "pcm_s16le", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ParleyError(f"ffmpeg failed to decode {src}: {r.stderr.strip()[:200]}")
        tmp.replace(dst)
    return dst
