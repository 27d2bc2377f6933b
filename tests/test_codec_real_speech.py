"""Real-speech sources (codec/real_speech.py): where a source's Debian package is installed,
the first few utterances decode to 16 kHz mono float32 that looks like speech; where it is
not, the test is skipped with the apt package to install."""

from __future__ import annotations

import numpy as np
import pytest

from codec import real_speech as rs

N_UTTERANCES = 3


def test_tables_agree() -> None:
    avail = rs.available()
    assert set(avail) == set(rs.SOURCES) == set(rs.PACKAGES)
    assert all(isinstance(v, bool) for v in avail.values())
    for name, gen in rs.SOURCES.items():
        doc = (gen.__doc__ or "").splitlines()[0]
        assert " h," in doc and "kHz" in doc, f"{name}: first docstring line should give hours/format"


def test_rnc_rejects_foreign_data() -> None:
    with pytest.raises(ValueError, match="not RNC"):
        rs.rnc_unpack(b"RIFF" + bytes(40))


def _speech_checks(uid: str, x: np.ndarray) -> None:
    assert isinstance(uid, str) and uid
    assert x.dtype == np.float32 and x.ndim == 1
    assert np.isfinite(x).all()
    dur = len(x) / rs.SR
    assert 0.2 <= dur <= 30.0, f"{uid}: {dur:.2f} s"
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert 0.005 <= rms <= 0.8, f"{uid}: rms {rms:.4f}"
    # Speech at 16 kHz: the spectral centroid sits in the voice band, and loudness varies
    # between 20 ms frames (syllables, pauses) rather than being a steady tone or noise.
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rs.SR)
    centroid = float((spec * freqs).sum() / spec.sum())
    assert 150.0 <= centroid <= 4000.0, f"{uid}: centroid {centroid:.0f} Hz"
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    energy = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-6
    assert np.percentile(energy, 90) / np.percentile(energy, 10) > 2.0, f"{uid}: flat envelope"


@pytest.mark.parametrize("name", sorted(rs.SOURCES))
def test_source_yields_speech(name: str) -> None:
    if not rs.available()[name]:
        pytest.skip(f"Debian package {rs.PACKAGES[name]} not installed "
                    f"(apt-get install {rs.PACKAGES[name]})")
    got = list(rs.SOURCES[name](limit=N_UTTERANCES))
    assert len(got) == N_UTTERANCES
    assert len({uid for uid, _ in got}) == N_UTTERANCES
    for uid, x in got:
        _speech_checks(uid, x)
