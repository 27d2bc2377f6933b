"""The trained default codec on real speech it never saw (asterisk-core-sounds-en, held out from
training): intelligibility (STOI) and log-mel distance clearly better than an untrained codec (random
weights + k-means codebooks on the same audio: STOI 0.49, mel distance 1.55 on
all-circuits-busy-now) and than the v2 checkpoint it replaced (on these three prompts STOI / mel:
v1 0.648 / 0.458, v2 0.720 / 0.419, v3 0.808 / 0.338). Thresholds sit a little below v3's values
and above v2's; over all 40 held-out prompts v3 is still below the issue's STOI target (0.76)."""

from __future__ import annotations

import glob
import shutil
import subprocess

import numpy as np
import pytest
import torch

PROMPTS = sorted(glob.glob("/usr/share/asterisk/sounds/en_US_f_Allison/*.g722"))


@pytest.mark.slow
@pytest.mark.skipif(not PROMPTS or not shutil.which("ffmpeg"), reason="needs asterisk-core-sounds-en-g722 + ffmpeg")
def test_held_out_real_speech() -> None:
    from pystoi import stoi

    from codec.io import load_codec
    from codec.losses import mel_distance

    torch.set_num_threads(1)
    model = load_codec()
    picked = [p for p in PROMPTS if any(w in p for w in ("all-circuits-busy-now", "agent-loginok",
                                                          "agent-newlocation"))] or PROMPTS[:3]
    scores, mels = [], []
    for p in picked:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "g722", "-i", p, "-ac", "1", "-ar", "16000",
                              "-f", "s16le", "-"], capture_output=True, check=True).stdout
        x = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
        with torch.no_grad():
            y = model.decode(model.encode(torch.from_numpy(x)[None]))[0, 0, : x.size].numpy()
        scores.append(stoi(x, y, 16000, extended=False))
        mels.append(mel_distance(torch.from_numpy(x)[None], torch.from_numpy(y)[None], 16000))
    assert np.mean(scores) > 0.77, scores
    assert np.mean(mels) < 0.38, mels
