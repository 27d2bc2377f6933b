"""Quick held-out eval during training (GPU machine; needs no Whisper decoder and no PESQ).

At every checkpoint the trainer reconstructs the held-out set (`prepare-data`'s eval.jsonl:
asterisk-en = unseen real speaker, plus held-out synthetic voices) and logs, for the real and
the synthetic part: mel distance, STOI (when `pystoi` is importable) and `whisper_cos`, the mean
cosine similarity of the Whisper teacher's encoder features of reconstruction vs original (an
intelligibility proxy: what the ASR encoder hears). `parley codec eval` gives the full table
(PESQ, Whisper WER) on the CPU afterwards.
"""

from __future__ import annotations

import numpy as np
import torch

from codec.losses import mel_distance
from codec.model import ParleyCodec
from codec.semantic import WhisperTeacher


@torch.no_grad()
def quick_eval(model: ParleyCodec, rows: list[dict], teacher: WhisperTeacher | None = None) -> dict:
    """{'real': {...}, 'synthetic': {...}} of mel_dist, stoi, whisper_cos over the rows."""
    try:
        from pystoi import stoi
    except ImportError:
        stoi = None
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    sr = model.sample_rate
    acc: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        x = torch.from_numpy(r["x"]).to(dev)[None]
        y = model.decode(model.encode(x))[0, :, : x.shape[-1]].float()  # (1, T)
        m = {"mel_dist": mel_distance(x.cpu(), y.cpu(), sr)}
        if stoi is not None:
            m["stoi"] = float(stoi(r["x"], y[0].cpu().numpy(), sr, extended=False))
        if teacher is not None:
            fx, fy = teacher(x), teacher(y)
            m["whisper_cos"] = float(torch.nn.functional.cosine_similarity(fx, fy, dim=-1).mean())
        part = "real" if not r["source"].startswith(("espeak", "flite", "piper")) else "synthetic"
        for k, v in m.items():
            acc.setdefault(part, {}).setdefault(k, []).append(v)
    model.train(was_training)
    return {part: {k: round(float(np.mean(v)), 4) for k, v in ms.items()} | {"n": len(ms["mel_dist"])}
            for part, ms in acc.items()}
