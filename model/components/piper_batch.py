"""Text -> piper voice audio in batches on a torch device, as `piper.PiperVoice.synthesize` gives it.

    tts = TorchPiper.load(*joe_paths(), device="cuda")   # decoder_dtype=torch.bfloat16: faster decoder
    chunks = tts.synthesize_batch(texts, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    chunks[i][s].audio_float_array, chunks[i][s].phoneme_alignments     # text i, sentence s

Phonemes and ids come from piper's own `PiperVoice.phonemize` / `phonemes_to_ids` (a `PiperVoice`
without an onnxruntime session), so they equal the ONNX path's. The sentences of all texts are
sorted by length and synthesized `max_batch` at a time (`piper_torch.infer_batch`: each row equals
its item alone). Each sentence becomes piper's `AudioChunk` with the same post-processing (peak
normalization, volume, clipping) and the same `phoneme_alignments` that `PiperVoice.synthesize(...,
include_alignments=True)` builds from the ONNX model's w_ceil output (`phoneme_alignments` below
follows piper's loop: a phoneme's samples are those of its ids plus the PAD after it).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.common.errors import ParleyError
from model.components.piper_torch import VitsDims, infer_batch, load_synthesizer, warm_shapes

DEFAULT_MAX_BATCH = 64  # sentences per infer call (the decoder's activations: ~14 MB per 5 s of audio)


@dataclass(frozen=True)
class SentenceAudio:
    """One sentence's raw synthesis (before piper's normalization)."""

    audio: np.ndarray  # (T,) float32, the model's output
    id_samples: np.ndarray  # (n_ids,) int64: audio samples per phoneme id; sums to T


def phoneme_alignments(id_map, phonemes: list[str], ids: list[int], id_samples: np.ndarray):
    """Samples per phoneme (BOS, each phoneme, EOS), as `PiperVoice.synthesize` computes them:
    -> list[piper.voice.PhonemeAlignment], or None when the ids do not follow the phonemes."""
    from piper.const import BOS, EOS, PAD
    from piper.voice import PhonemeAlignment

    if len(id_samples) != len(ids):
        return None
    pad_ids = list(id_map.get(PAD, []))
    out, k = [], 0
    for ph in itertools.chain([BOS], phonemes, [EOS]):
        expected = list(id_map.get(ph, []))
        check = expected + pad_ids if ph != EOS else expected
        start = k
        for pid in check:
            if k >= len(ids) or pid != ids[k]:
                return None
            k += 1
        out.append(PhonemeAlignment(phoneme=ph, phoneme_ids=check, num_samples=sum(id_samples[start:k])))
    return out


def _post(audio: np.ndarray, syn) -> np.ndarray:
    """piper's post-processing of one sentence (normalize_audio, volume, clip to [-1, 1])."""
    if syn.normalize_audio:
        peak = np.max(np.abs(audio)) if audio.size else 0.0
        audio = np.zeros_like(audio) if peak < 1e-8 else audio / peak
    if syn.volume != 1.0:
        audio = audio * syn.volume
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


class TorchPiper:
    """A piper voice on a torch device: batched `synthesize_batch` / `infer_ids`."""

    def __init__(self, net: torch.nn.Module, dims: VitsDims, config_dict: dict, device: str | torch.device,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        self.net, self.dims, self.device = net, dims, torch.device(device)
        self.max_batch = max(1, int(max_batch))
        self.id_multiple = self.frame_multiple = 1  # pad T_x / T_y up to multiples (fewer shapes: warm_up)
        self.config = PiperConfig.from_dict(config_dict)
        if self.config.hop_length != dims.hop_length:
            raise ParleyError(f"piper voice: config hop_length {self.config.hop_length} != model's {dims.hop_length}")
        self.sample_rate = int(self.config.sample_rate)
        self.phonemizer = PiperVoice(session=None, config=self.config)  # phonemize / phonemes_to_ids only

    @staticmethod
    def load(model_path: str | Path, config_path: str | Path | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, max_batch: int = DEFAULT_MAX_BATCH,
             decoder_dtype: torch.dtype | None = None) -> "TorchPiper":
        """A piper voice (`.onnx` + `.onnx.json`) on `device`; see `piper_torch.load_synthesizer`."""
        cfg_path = Path(config_path) if config_path else Path(f"{model_path}.json")
        if not cfg_path.is_file():
            raise ParleyError(f"piper voice config not found: {cfg_path}")
        config_dict = json.loads(cfg_path.read_text(encoding="utf-8"))
        net, dims = load_synthesizer(model_path, int(config_dict.get("num_speakers", 1)), device, dtype, decoder_dtype)
        return TorchPiper(net, dims, config_dict, device, max_batch)

    def bucket(self, id_multiple: int, frame_multiple: int, max_ids: int = 0, max_frames: int = 0) -> None:
        """Pad every call's phoneme ids and latent frames up to these multiples, and make the shapes up to
        `max_ids` / `max_frames` now (`piper_torch.warm_shapes`): a live voice on CUDA then meets no
        first-time cuDNN plan (H200, 2026-12-03: 50-170 ms per new shape, 20 ms per clause without)."""
        self.id_multiple, self.frame_multiple = max(1, id_multiple), max(1, frame_multiple)
        warm_shapes(self.net, list(range(self.id_multiple, max_ids + 1, self.id_multiple)),
                    list(range(self.frame_multiple, max_frames + 1, self.frame_multiple)))

    def sentences(self, text: str) -> list[tuple[list[str], list[int]]]:
        """Text -> (phonemes, phoneme ids) per sentence, as `PiperVoice.synthesize` splits it."""
        p = self.phonemizer
        return [(ph, p.phonemes_to_ids(ph)) for ph in p.phonemize(text) if ph]

    def infer_ids(self, ids: list[list[int]], noise_scale: float, length_scale: float,
                  noise_w: float) -> list[SentenceAudio]:
        """Phoneme-id sequences -> raw audio + samples per id each, `max_batch` sequences per call
        (sorted by length, so a batch pads little), in the order given."""
        if any(len(x) == 0 for x in ids):
            raise ParleyError("piper_torch: an empty phoneme-id sequence")
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[SentenceAudio | None] = [None] * len(ids)
        for s in range(0, len(order), self.max_batch):
            rows = order[s : s + self.max_batch]
            lengths = torch.tensor([len(ids[i]) for i in rows], dtype=torch.long)
            t_x = -(-int(lengths.max()) // self.id_multiple) * self.id_multiple
            x = torch.zeros(len(rows), t_x, dtype=torch.long)  # (B, T_x), 0-padded
            for b, i in enumerate(rows):
                x[b, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
            r = infer_batch(self.net, x.to(self.device), lengths.to(self.device), noise_scale, length_scale, noise_w,
                            self.frame_multiple)
            audio = r.audio.cpu().numpy()
            n_audio, dur = r.audio_lengths.cpu().numpy(), r.durations.cpu().numpy()
            for b, i in enumerate(rows):
                out[i] = SentenceAudio(audio[b, : n_audio[b]].copy(), dur[b, : len(ids[i])].astype(np.int64))
        return out  # type: ignore[return-value]

    def synthesize_batch(self, texts: list[str], syn_config=None) -> list[list]:
        """Texts -> per text, piper `AudioChunk`s (one per sentence, with `phoneme_alignments`), as
        `PiperVoice.synthesize(text, syn_config, include_alignments=True)` yields them.

        None fields of `syn_config` (a piper `SynthesisConfig`) take the voice's defaults."""
        from piper.config import SynthesisConfig
        from piper.voice import AudioChunk

        syn = syn_config or SynthesisConfig()
        if syn.speaker_id not in (None, 0):
            raise ParleyError("piper_torch: single-speaker voices only")
        c = self.config
        noise = c.noise_scale if syn.noise_scale is None else syn.noise_scale
        length = c.length_scale if syn.length_scale is None else syn.length_scale
        noise_w = c.noise_w_scale if syn.noise_w_scale is None else syn.noise_w_scale
        per_text = [self.sentences(t) for t in texts]
        flat = [s for sents in per_text for s in sents]
        raw = iter(self.infer_ids([ids for _, ids in flat], noise, length, noise_w))
        out: list[list] = []
        for sents in per_text:
            chunks = []
            for phonemes, ids in sents:
                r = next(raw)
                chunks.append(AudioChunk(
                    sample_rate=self.sample_rate, sample_width=2, sample_channels=1,
                    audio_float_array=_post(r.audio, syn), phonemes=phonemes, phoneme_ids=ids,
                    phoneme_id_samples=r.id_samples,
                    phoneme_alignments=phoneme_alignments(c.phoneme_id_map, phonemes, ids, r.id_samples)))
            out.append(chunks)
        return out
