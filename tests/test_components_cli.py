"""`parley say` / `parley transcribe` as a user runs them: real models, clean one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from components_util import needs_prompts, parley, speech, wer

pytestmark = pytest.mark.slow


def assert_clean_error(r, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("parley: error:"), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_say_then_transcribe(tmp_path) -> None:
    out = tmp_path / "hello.wav"
    text = "Hello from Parley, the open voice agent that runs offline."
    r = parley("say", text, "-o", str(out), "--speed", "1.1")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(out))
    assert info.samplerate == 22050 and info.frames > 22050
    r = parley("transcribe", str(out))
    assert r.returncode == 0, r.stderr
    assert wer(text, r.stdout) <= 0.2, r.stdout


@needs_prompts
def test_transcribe_other_sample_rate(tmp_path) -> None:
    """A 44.1 kHz stereo file is resampled to 16 kHz, not rejected or misread."""
    from model.audio import resample

    x = resample(speech("vm-sorry"), 16000, 44100)
    path = tmp_path / "sorry_44k.wav"
    sf.write(str(path), np.stack([x, x], axis=1), 44100)
    r = parley("transcribe", str(path))
    assert r.returncode == 0, r.stderr
    assert "sorry" in r.stdout.lower()


def test_bad_input_errors(tmp_path) -> None:
    assert_clean_error(parley("transcribe", str(tmp_path / "missing.wav")), "not found")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    assert_clean_error(parley("transcribe", str(corrupt)), "cannot read audio")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    assert_clean_error(parley("transcribe", str(empty)), "empty")
    assert_clean_error(parley("say", "", "-o", str(tmp_path / "x.wav")), "nothing to say")
    assert_clean_error(parley("say", "hi there", "-o", str(tmp_path / "x.wav"), "--voice", "flite:nope"), "flite")
    assert_clean_error(parley("say", "hi there", "-o", str(tmp_path / "no" / "x.wav")), "does not exist")
    assert_clean_error(parley("transcribe", str(corrupt), "--model", "nope"), "cannot read audio")
    good = tmp_path / "tone.wav"
    sf.write(str(good), np.zeros(16000, np.float32), 16000)
    assert_clean_error(parley("transcribe", str(good), "--model", "no-such-model"), "Whisper model not found")
