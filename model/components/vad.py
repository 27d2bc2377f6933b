"""Silero VAD (ONNX): one shared session, one small stateful `VADStream` per audio stream.

The Silero v5/v6 ONNX graph is a recurrent model: each step takes 512 new samples at 16 kHz
(32 ms) preceded by the last 64 samples of the previous step (its "context"), plus an LSTM
state (2, B, 128), and returns the speech probability and the next state. The state and the
context belong to the stream, the weights to `SileroVAD`, so many streams share one session.

We load the .onnx file from the installed `silero-vad` package without importing its Python
module (that import pulls torch and calls `torch.set_num_threads(1)` process-wide).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from model.common.audio_constants import SPEECH_SR, VAD_CHUNK
from model.common.errors import ParleyError

CONTEXT = 64  # samples of the previous chunk prepended to each step (16 kHz model)
STATE_SHAPE = (2, 1, 128)  # LSTM (h, c) x batch x hidden


def bundled_model_path() -> Path:
    """Path of `silero_vad/data/silero_vad.onnx` inside the installed package (not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ParleyError("the silero-vad package is not installed (pip install silero-vad)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "silero_vad.onnx"
        if p.exists():
            return p
    raise ParleyError("silero_vad.onnx not found inside the installed silero-vad package")


def _download(url: str) -> Path:
    import hashlib
    import urllib.request

    from model.common.cache import cache_dir

    dst = cache_dir() / "vad" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.onnx"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                data = r.read()
        except Exception as e:
            raise ParleyError(f"cannot download VAD model {url} (needs internet): {e}") from None
        dst.write_bytes(data)
    return dst


@dataclass
class SileroState:
    """Per-stream recurrent state of the model."""

    state: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))
    steps: int = 0  # chunks processed since the last reset


class SileroVAD:
    """Shared Silero ONNX session. Create streams with `stream()`; thread safe."""

    def __init__(self, session, path: Path):
        self.session = session
        self.path = path
        self._lock = threading.Lock()  # onnxruntime run() is thread safe; lock keeps CPU use tidy

    @classmethod
    def load(cls, path: str | Path | None = None, num_threads: int = 1) -> "SileroVAD":
        """Load the bundled model (default), a local Silero `.onnx` file, or an http(s) URL of one
        (downloaded once into the cache: needs internet)."""
        import onnxruntime as ort

        if isinstance(path, str) and path.startswith(("http://", "https://")):
            path = _download(path)
        p = Path(path) if path is not None else bundled_model_path()
        if not p.exists():
            raise ParleyError(f"VAD model not found: {p}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ParleyError(f"cannot load VAD model {p}: {e}") from None
        names = {i.name for i in sess.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ParleyError(f"{p} is not a Silero VAD v5/v6 ONNX model (inputs {sorted(names)})")
        return cls(sess, p)

    def stream(self) -> "VADStream":
        """A new stream with zero state."""
        return VADStream(self)

    def step(self, states: Sequence[SileroState], chunks: np.ndarray) -> np.ndarray:
        """One model step for B streams at once.

        chunks: (B, VAD_CHUNK) float32 at 16 kHz. Updates each state in place; returns (B,) probs.
        """
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[1] != VAD_CHUNK or chunks.shape[0] != len(states):
            raise ParleyError(
                f"VAD expects ({len(states)}, {VAD_CHUNK}) samples at {SPEECH_SR} Hz, got {chunks.shape}"
            )
        ctx = np.stack([s.context for s in states])  # (B, 64)
        x = np.concatenate([ctx, chunks], axis=1)  # (B, 576)
        st = np.concatenate([s.state for s in states], axis=1)  # (2, B, 128)
        with self._lock:
            out, new_st = self.session.run(
                None, {"input": x, "state": st, "sr": np.array(SPEECH_SR, dtype=np.int64)}
            )
        for b, s in enumerate(states):
            s.state = np.ascontiguousarray(new_st[:, b : b + 1])
            s.context = x[b, -CONTEXT:].copy()
            s.steps += 1
        return out[:, 0].astype(np.float32)

    def probs(self, audio_16k: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms chunk of a whole clip (fresh state; last chunk zero-padded)."""
        x = np.asarray(audio_16k, dtype=np.float32)
        n = -(-len(x) // VAD_CHUNK)
        x = np.pad(x, (0, n * VAD_CHUNK - len(x)))
        s = self.stream()
        return np.array([s.push(x[i * VAD_CHUNK : (i + 1) * VAD_CHUNK]) for i in range(n)], np.float32)


class VADStream:
    """Stateful VAD for one audio stream: `push(512 samples) -> speech probability`."""

    def __init__(self, vad: SileroVAD):
        self.vad = vad
        self.state = SileroState()

    def push(self, chunk: np.ndarray) -> float:
        """chunk: (512,) float32 at 16 kHz. Returns the speech probability in [0, 1]."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if chunk.shape[0] != VAD_CHUNK:
            raise ParleyError(f"VAD chunk must be {VAD_CHUNK} samples at {SPEECH_SR} Hz, got {chunk.shape[0]}")
        return float(self.vad.step([self.state], chunk[None])[0])

    def reset(self) -> None:
        """Forget all history (new utterance / new call)."""
        self.state = SileroState()
