"""The cascade's default ASR (faster-whisper int8 on the bundled CT2 tiny.en) on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from components_util import asr, needs_prompts, speech, wer, words
from model.common.errors import ParleyError
from model.components.asr_ct2 import FasterWhisperASR, load_asr


def same_words(a: str, b: str) -> bool:
    """At most 10 % of the words differ, or only the spacing does ("log in" / "login")."""
    squash = lambda t: "".join(words(t))  # noqa: E731
    return wer(a, b) <= 0.1 or squash(a) == squash(b)

pytestmark = [pytest.mark.slow, needs_prompts]


def test_same_words_as_openai_whisper_on_real_prompts() -> None:
    fast = load_asr("tiny.en")
    assert isinstance(fast, FasterWhisperASR)
    ref = asr()
    for name in ("vm-sorry", "auth-incorrect", "agent-user"):
        x = speech(name)
        assert same_words(ref.transcribe(x), fast.transcribe(x))
    assert fast.transcribe(np.zeros(16000, np.float32)) == ""


def test_short_window_same_words_as_the_30s_window() -> None:
    """Encoding only the clip (+ the cached padding encoding) keeps the words, ends where the
    speech ends (no repetition loop), drops silence; a clip longer than the window still works."""
    short, full = load_asr("tiny.en"), load_asr("tiny.en", short_window=False)
    assert short.short_window and not full.short_window
    for name in ("vm-sorry", "auth-incorrect", "agent-user", "conf-onlyperson"):
        x = speech(name)
        a, b = full.transcribe(x), short.transcribe(x)
        assert same_words(a, b), (a, b)
        assert len(b.split()) <= len(a.split()) + 1
    assert short.transcribe(np.zeros(16000, np.float32)) == ""
    long = np.concatenate([speech("vm-sorry"), np.zeros(16000 * 27, np.float32), speech("auth-incorrect")])
    assert same_words(full.transcribe(long), short.transcribe(long))


def test_bad_backend_and_dir() -> None:
    with pytest.raises(ParleyError):
        load_asr("tiny.en", backend="nope")
    with pytest.raises(ParleyError):
        load_asr("/nonexistent")
