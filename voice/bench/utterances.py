"""The user's side of the benchmark: utterances loaded from WAV files (or synthesized once).

Each utterance is resampled to 48 kHz and its speech start/end are found on the clean source
(`signal.speech_bounds`), which is the reference for latency, not the server's VAD.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.common.audio_constants import WEBRTC_SR
from model.common.errors import ParleyError
from voice.client.signal import SpeechBounds, speech_bounds

AUDIO_EXTS = (".wav", ".flac", ".ogg")

# Questions spoken by flite voices (Whisper understands them well, see FACTS) when no --audio.
DEFAULT_QUESTIONS = (
    ("slt", "What is the capital of France?"),
    ("awb", "Can you tell me a short story about a cat?"),
    ("rms", "How far away is the moon?"),
    ("kal16", "What should I cook for dinner tonight?"),
    ("slt", "Why is the sky blue?"),
    ("awb", "Tell me something interesting about the ocean."),
)


@dataclass(frozen=True)
class Utterance:
    name: str
    audio: np.ndarray  # (T,) float32 at 48 kHz
    bounds: SpeechBounds  # speech inside `audio`, samples at 48 kHz

    @property
    def speech_s(self) -> float:
        return (self.bounds.end - self.bounds.start) / WEBRTC_SR


def _read(path: Path) -> np.ndarray:
    import soundfile as sf  # noqa: PLC0415
    import soxr  # noqa: PLC0415

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several kinds
        raise ParleyError(f"cannot read audio file {path}: {e}") from None
    x = x.mean(axis=1)
    if sr != WEBRTC_SR:
        x = soxr.resample(x, sr, WEBRTC_SR).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_utterance(path: str | Path) -> Utterance:
    path = Path(path)
    x = _read(path)
    try:
        b = speech_bounds(x, WEBRTC_SR)
    except ValueError:
        raise ParleyError(f"no speech found in {path} (silent or too short)") from None
    return Utterance(name=path.name, audio=x, bounds=b)


def load_utterances(path: str | Path) -> list[Utterance]:
    """A WAV (FLAC, OGG) file or a folder of them (sorted by name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO_EXTS)
        if not files:
            raise ParleyError(f"no audio files ({', '.join(AUDIO_EXTS)}) in folder {p}")
    elif p.is_file():
        files = [p]
    else:
        raise ParleyError(f"audio path not found: {p}")
    return [load_utterance(f) for f in files]


def default_utterances(cache: Path | None = None) -> list[Utterance]:
    """A few spoken questions synthesized with flite (cached), for runs without --audio."""
    flite = shutil.which("flite")
    if flite is None:
        raise ParleyError("no --audio given and flite is not installed to synthesize questions")
    cache = cache or Path(tempfile.gettempdir()) / "parley-bench-questions"
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (voice, text) in enumerate(DEFAULT_QUESTIONS):
        f = cache / f"q{i:02d}_{voice}.wav"
        if not f.exists():
            tmp = f.with_suffix(".tmp.wav")
            subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(tmp)], check=True)
            tmp.rename(f)
        out.append(load_utterance(f))
    return out
