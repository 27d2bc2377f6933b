"""The cascade's default ASR (faster-whisper int8 on the bundled CT2 tiny.en) on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from components_util import asr, needs_prompts, speech, wer
from model.common.errors import ParleyError
from model.components.asr_ct2 import FasterWhisperASR, load_asr

pytestmark = [pytest.mark.slow, needs_prompts]


def test_same_words_as_openai_whisper_on_real_prompts() -> None:
    fast = load_asr("tiny.en")
    assert isinstance(fast, FasterWhisperASR)
    ref = asr()
    for name in ("vm-sorry", "auth-incorrect", "agent-user"):
        x = speech(name)
        assert wer(ref.transcribe(x), fast.transcribe(x)) <= 0.1
    assert fast.transcribe(np.zeros(16000, np.float32)) == ""


def test_bad_backend_and_dir() -> None:
    with pytest.raises(ParleyError):
        load_asr("tiny.en", backend="nope")
    with pytest.raises(ParleyError):
        load_asr("/nonexistent")
