"""End of turn from the audio alone: pipecat's Smart Turn v3.2 (BSD-2, bundled in the pipecat-ai wheel).

A Whisper-tiny encoder with a classifier, trained by Daily on speech in 23 languages to tell a finished turn
from a pause inside one (intonation, rhythm, filler words): no transcript, one ONNX forward of the last 8 s.

    st = SmartTurn.load()                      # the .onnx that pipecat-ai 1.14.0 ships (never imports pipecat)
    p = st.prob(audio_16k)                     # P(the turn is over), float32 16 kHz mono, ending at the pause
    ps = st.prob_batch([a, b, c])              # (B,) several turns in one forward

Features are Whisper's log-mel (80 bins, 10 ms hop) of the last 8 s zero-padded at the front, after
normalising the clip to zero mean and unit variance: `whisper.log_mel_spectrogram` gives the same numbers as
pipecat's own numpy extractor (tests/test_smart_turn.py). ~45-55 ms per clip on one thread of this 2-core CPU.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Sequence

import numpy as np

from model.common.errors import ParleyError

log = logging.getLogger(__name__)

SR = 16000
WINDOW_S = 8  # the model reads the last 8 s (800 mel frames)
MODEL_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
THRESHOLD = 0.5  # pipecat's: "complete" above it


def model_path() -> Path:
    """The bundled .onnx inside the installed pipecat-ai (demos/setup.sh installs it --no-deps)."""
    try:
        path = Path(str(distribution("pipecat-ai").locate_file(MODEL_MEMBER)))
    except PackageNotFoundError:
        raise ParleyError("Smart Turn needs the pipecat-ai package (its model): run `bash demos/setup.sh`") from None
    if not path.is_file():
        raise ParleyError(f"pipecat-ai is installed but has no {MODEL_MEMBER}: expected pipecat-ai==1.14.0")
    return path


def features(audios: Sequence[np.ndarray]) -> np.ndarray:
    """(B, 80, 800) float32 log-mel of the last 8 s of each clip (zero-padded at the front)."""
    import torch  # noqa: PLC0415
    import whisper  # noqa: PLC0415

    n = WINDOW_S * SR
    rows = []
    for a in audios:
        a = np.asarray(a, dtype=np.float32)[-n:]
        a = np.pad(a, (n - len(a), 0))
        a = (a - a.mean()) / np.sqrt(a.var() + 1e-7)
        rows.append(whisper.log_mel_spectrogram(torch.from_numpy(a), 80).numpy())
    return np.stack(rows).astype(np.float32)


class SmartTurn:
    """P(turn over) of 16 kHz clips: onnxruntime on CPU (it releases the GIL while it runs)."""

    def __init__(self, session) -> None:  # noqa: ANN001 - an onnxruntime.InferenceSession
        self.session = session
        self.threshold = THRESHOLD

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 1) -> "SmartTurn":
        import onnxruntime as ort  # noqa: PLC0415

        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads, so.intra_op_num_threads = 1, threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        src = Path(path) if path is not None else model_path()
        return cls(ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"]))

    def prob_batch(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """(B,) P(the turn is over) of each clip."""
        if not len(audios):
            return np.zeros(0, np.float32)
        out = self.session.run(None, {"input_features": features(audios)})[0]  # (B, 1) sigmoid
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def prob(self, audio_16k: np.ndarray) -> float:
        return float(self.prob_batch([audio_16k])[0])
