"""bench eot-pauses (voice/bench/eot_pauses.py): a recorded prompt through the server's turn detector gives
its inner pauses (timed until the speech resumes) and one final silence, each judged on the audio so far."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_a_recorded_prompt_has_inner_pauses_and_one_end() -> None:
    from model.audio import load_audio
    from model.components.vad import SileroVAD
    from model.samples import have_prompts, prompt_wav
    from voice.bench.eot_pauses import _pauses

    if not have_prompts():
        pytest.skip("asterisk-core-sounds-en-g722 not installed")
    x = load_audio(prompt_wav("agent-incorrect"), 16000)[0]  # "Login incorrect. Please enter your agent number ..."
    seen: list[int] = []

    def judge(audio: np.ndarray) -> tuple[float, str]:
        seen.append(len(audio))
        return float(len(audio)) / 1e6, ""

    pauses = _pauses("agent-incorrect", x, SileroVAD.load(), judge)
    assert [p.final for p in pauses].count(True) == 1 and pauses[-1].final
    inner = [p for p in pauses if not p.final]
    assert inner and all(0 < p.length_ms < 800 for p in inner)
    assert seen == sorted(seen) and seen[-1] <= len(x) + 8000  # the audio so far grows; never past the end
    assert max(p.length_ms for p in inner) >= 200  # the pause after "Login incorrect." (2026-12-03: 352 ms)
