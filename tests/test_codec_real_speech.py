"""Real-speech sources (codec/real_speech.py): where a source's Debian package is installed,
the first few utterances decode to 16 kHz mono float32 that looks like speech; where it is
not, the test is skipped with the apt package to install."""

from __future__ import annotations

from pathlib import Path

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


def test_asterisk_en_texts(tmp_path) -> None:  # noqa: ANN001
    """The held-out real speaker's prompt texts: "name: text" lines, comments and tones skipped."""
    import gzip

    from codec import data

    f = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(f, "wt") as g:
        g.write("; Core Asterisk Sounds in English\n\nbeep: [this is a simple beep tone]\n"
                "digits/mon-2: March\nvm-tocancel: or pound to cancel.\n")
    data._asterisk_en_texts.cache_clear()
    try:
        assert data._asterisk_en_texts(str(f)) == {"digits/mon-2": "March", "vm-tocancel": "or pound to cancel."}
    finally:
        data._asterisk_en_texts.cache_clear()


def test_asterisk_en_text_installed() -> None:
    from codec import data

    if not Path(data.ASTERISK_EN_TEXT).exists():
        pytest.skip("apt-get install asterisk-core-sounds-en (demos/setup.sh does)")
    assert data.asterisk_en_text("en_US_f_Allison/digits/mon-2.g722") == "March"
    assert data.asterisk_en_text("en_US_f_Allison/vm-extension.g722") == "extension"
    assert data.asterisk_en_text("en_US_f_Allison/beeperr.g722") is None  # a tone says nothing
