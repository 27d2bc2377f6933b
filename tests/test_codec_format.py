"""`.pcodes` round trip, clear errors on corrupt / truncated / foreign files, and the CLI
encode -> decode path with the default (trained) weights."""

from __future__ import annotations

import numpy as np
import pytest

from codec.io import read_pcodes, write_pcodes
from model.common.errors import ParleyError

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_round_trip(tmp_path) -> None:
    codes = np.random.default_rng(0).integers(0, 2048, (8, 37))
    p = tmp_path / "a.pcodes"
    write_pcodes(p, codes, 16000, 1280, 2048, 37 * 1280 - 5, codec="0123456789abcdef")
    back, hdr = read_pcodes(p)
    assert np.array_equal(back, codes)
    assert hdr == {"version": 2, "sample_rate": 16000, "hop": 1280, "n_q": 8, "bins": 2048,
                   "frames": 37, "num_samples": 37 * 1280 - 5, "codec_id": "0123456789abcdef"}


def test_reads_version_1(tmp_path) -> None:
    """Files written before the codec id (format version 1) still read, with codec_id None."""
    import struct
    import zlib

    codes = np.arange(8 * 5).reshape(8, 5) % 2048
    body = struct.pack("<4sHIIHIIQ", b"PCOD", 1, 16000, 1280, 8, 2048, 5, 6400) + codes.astype("<u2").tobytes()
    (tmp_path / "v1.pcodes").write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    back, hdr = read_pcodes(tmp_path / "v1.pcodes")
    assert np.array_equal(back, codes) and hdr["version"] == 1 and hdr["codec_id"] is None


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-7], "truncated"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "checksum"),
    (lambda b: b"RIFF" + b[4:], "not a .pcodes"),
    (lambda b: b[:4] + b"\x09\x00" + b[6:], "version 9"),
    (lambda b: b + b"xx", "trailing"),
])
def test_damaged_files(tmp_path, damage, message) -> None:
    p = tmp_path / "a.pcodes"
    write_pcodes(p, np.ones((8, 10), np.int64), 16000, 1280, 2048, 12800)
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(ParleyError, match=message):
        read_pcodes(p)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ParleyError, match="cannot read"):
        read_pcodes(tmp_path / "nope.pcodes")


def test_cli_encode_decode(tmp_path, capsys) -> None:
    import soundfile as sf

    from voice.cli.main import main

    t = np.arange(int(1.3 * 16000)) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 16000)
    assert main(["codec", "encode", str(tmp_path / "in.wav"), str(tmp_path / "a.pcodes")]) == 0
    codes, hdr = read_pcodes(tmp_path / "a.pcodes")
    from codec.io import codec_id, load_codec

    hop = load_codec().hop_length
    assert codes.shape == (8, -(-x.size // hop)) and hdr["hop"] == hop and hdr["num_samples"] == x.size

    assert hdr["codec_id"] == codec_id()  # tokens stay tied to the codec version that made them
    assert main(["codec", "decode", str(tmp_path / "a.pcodes"), str(tmp_path / "out.wav")]) == 0
    y, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and y.shape == x.shape
    # the same codes claimed by another codec: a clear one-line error, not a wrong decode
    write_pcodes(tmp_path / "b.pcodes", codes, 16000, hop, 2048, x.size, codec="ffffffffffffffff")
    assert main(["codec", "decode", str(tmp_path / "b.pcodes"), str(tmp_path / "out2.wav")]) == 2
    assert "written by codec ffffffffffffffff" in capsys.readouterr().err
    (tmp_path / "bad.pcodes").write_bytes(b"PCOD\x01\x00")
    assert main(["codec", "decode", str(tmp_path / "bad.pcodes"), str(tmp_path / "o.wav")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_corrupt_weights_give_one_clear_error(tmp_path) -> None:
    from codec.io import load_codec

    (tmp_path / "model-00001-of-00001.safetensors").write_bytes(b"garbage")
    with pytest.raises(ParleyError, match="corrupt or truncated codec weights"):
        load_codec(tmp_path)
    with pytest.raises(ParleyError, match="no codec weights"):
        load_codec(tmp_path / "empty")
