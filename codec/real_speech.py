"""Real recorded English speech from Debian game/education data packages (codec training).

Debian packages read here (``apt-get install`` them; all in bookworm ``main``):
    beneath-a-steel-sky flight-of-the-amazon-queen hedgewars-data warzone2100-data ktuberling-data
Checked and not usable: ``gcompris-qt-data`` (ships no voices: GCompris downloads them at run
time; its .rcc files hold only music/animal sounds), ``megaglest-data`` (unit sounds are mostly
grunts and battle cries). See codec/REAL_SPEECH.md for hours, speakers, formats and licences.

Each source is a generator of ``(utterance_id, float32 mono array at 16 kHz)``, like the
source generators in codec/data.py, and is listed in ``SOURCES``; ``available()`` says which
packages are installed. Nothing is read at import time. Samples are not clipped: resampling
loud 8-bit/MP3 lines can overshoot +-1 a little (data.py's ``_normalize`` rescales by peak).

Caveat for codec training: the two adventure games (95% of the hours) were recorded at
11.025 kHz, so they hold nothing above 5.5 kHz once resampled to 16 kHz; FOTAQ is also MP3 at
16 kbit/s and BASS is 8-bit PCM. Hedgewars and KTuberling are full band (44.1/48 kHz).
"""

from __future__ import annotations

import glob
import io
import os
import struct
import zipfile
from typing import Callable, Iterator

import numpy as np

SR = 16000

SKY_DIR = "/usr/share/scummvm/beneath-a-steel-sky"
QUEEN_FILE = "/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
HEDGEWARS_VOICES = "/usr/share/games/hedgewars/Data/Sounds/voices"
# English packs. Left out: Robot (vocoded), Default_{es,pl,ru,uk} and Russian_pl (not English).
HEDGEWARS_PACKS = ("British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Russian",
                   "Singer", "Surfer")
WARZONE_WZ = "/usr/share/games/warzone2100/base.wz"
# Folders of spoken messages inside base.wz (the rest of audio/ is sound effects and clicks).
WARZONE_SPEECH = ("audio/tutorial/", "audio/memressp/", "audio/countdown/", "audio/extra/",
                  "audio/taunts/", "audio/nexus/", "audio/vtoltalk/", "audio/trnsppil/",
                  "audio/coltive/", "audio/proxmessages/", "audio/multi/", "sequenceaudio/")
KTUBERLING_EN = "/usr/share/ktuberling/sounds/en"

# Beneath a Steel Sky (CD v0.0372): speech lines are files 50000 + n of sky.dsk, n < 5230
# (ScummVM engines/sky/sound.cpp, _speechConvertTable). Files 594xx-596xx are the intro
# (voice over music) and are left out.
SKY_SPEECH_FIRST, SKY_SPEECH_END = 50000, 55300
SKY_HEADER = 22  # sizeof(dataFileHeader): eleven little-endian uint16
SKY_RATE = 11025


# ---------------------------------------------------------------------------------- helpers

def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 at ``SR`` (soxr) from a mono float array at ``sr``."""
    import soxr

    x = np.asarray(x, dtype=np.float32)
    return x if sr == SR else soxr.resample(x, sr, SR).astype(np.float32)


def _decode(data: bytes | str) -> np.ndarray:
    """Decode a file path or in-memory Ogg/MP3/WAV with soundfile, downmix, resample to 16 kHz."""
    import soundfile as sf

    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    x, sr = sf.read(src, dtype="float32", always_2d=True)
    return _resample(x.mean(axis=1), sr)


def _speech_like(x: np.ndarray, min_s: float = 0.3, min_rms: float = 0.005) -> bool:
    """Drop empty placeholders (e.g. FOTAQ's BLANK000.SB) and clicks."""
    return len(x) >= min_s * SR and float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) >= min_rms


# ------------------------------------------------------------------- RNC ProPack method 1

def rnc_unpack(src: bytes) -> bytes:
    """Unpack Rob Northen (RNC ProPack) method-1 data, header ``b"RNC\\x01"``.

    Format: 18-byte header (signature, unpacked and packed length as big-endian uint32,
    CRC-16 of unpacked and packed data, leeway byte, block count), then per block three
    Huffman tables (raw-run lengths, match offsets, match lengths), a 16-bit count of
    (literal run, match) pairs, and the pairs. Bits are read LSB first from little-endian
    16-bit words; literal bytes sit in the byte stream between the words. Raises ValueError
    on a bad signature, Huffman code or CRC.
    """
    if src[:4] != b"RNC\x01":
        raise ValueError("not RNC method 1 data")
    unpacked_len, packed_len = struct.unpack(">II", src[4:12])
    crc_unpacked = struct.unpack(">H", src[12:14])[0]
    blocks = src[17]
    data = src[18:18 + packed_len] + b"\0" * 4
    out = bytearray()
    pos = 0                                # byte offset of the look-ahead word
    bitbuf, nbits = data[0] | data[1] << 8, 16

    def skip(n: int) -> None:
        nonlocal bitbuf, nbits, pos
        bitbuf >>= n
        nbits -= n
        if nbits < 16:                     # keep 16 look-ahead bits from the word at pos
            pos += 2
            bitbuf |= (data[pos] | data[pos + 1] << 8) << nbits
            nbits += 16

    def take(n: int) -> int:
        v = bitbuf & ((1 << n) - 1)
        skip(n)
        return v

    def huffman_table() -> list[tuple[int, int, int, int]]:
        count = take(5)
        lengths = [take(4) for _ in range(count)]
        table, code = [], 0
        for length in range(1, 17):        # canonical codes, shortest first
            for sym, ln in enumerate(lengths):
                if ln == length:
                    rev = int(format(code >> (16 - length), f"0{length}b")[::-1], 2)
                    table.append((length, (1 << length) - 1, rev, sym))
                    code += 1 << (16 - length)
        return table

    def value(table: list[tuple[int, int, int, int]]) -> int:
        for length, mask, code, sym in table:
            if bitbuf & mask == code:
                skip(length)
                return take(sym - 1) | (1 << (sym - 1)) if sym >= 2 else sym
        raise ValueError("bad Huffman code in RNC data")

    skip(2)                                # two flag bits (lock, key) unused here
    for _ in range(blocks):
        raw, offsets, lengths = huffman_table(), huffman_table(), huffman_table()
        pairs = take(16)
        while pairs:
            n = value(raw)
            if n:                          # literal run: copy bytes, re-read the look-ahead word
                out += data[pos:pos + n]
                pos += n
                nbits -= 16
                bitbuf = (bitbuf & ((1 << nbits) - 1)) | ((data[pos] | data[pos + 1] << 8) << nbits)
                nbits += 16
            if pairs > 1:
                off = value(offsets) + 1
                n = value(lengths) + 2
                start = len(out) - off
                if off >= n:
                    out += out[start:start + n]
                else:                      # overlapping copy repeats the last `off` bytes
                    for k in range(n):
                        out.append(out[start + k])
            pairs -= 1
    if len(out) != unpacked_len or _crc16(bytes(out)) != crc_unpacked:
        raise ValueError("RNC CRC or length mismatch")
    return bytes(out)


_CRC_TABLE: list[int] = []


def _crc16(data: bytes) -> int:
    """CRC-16 (polynomial 0xA001, reflected, initial 0) as used by RNC ProPack."""
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc = 0
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


# ------------------------------------------------------------------------ the sources

def _sky_dinner_table(path: str) -> dict[int, tuple[int, int, bool, bool]]:
    """sky.dnr: uint32 count, then 8-byte entries (uint16 file number, 24-bit offset with bit 23 =
    offset in 16-byte units, 24-bit size+flags: bit 22 = RNC data includes the header, bit 23 =
    stored uncompressed). Returns {file_nr: (offset, size, uncompressed, header_packed)}."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<I", raw, 0)
    table = {}
    for i in range(n):
        e = raw[4 + 8 * i: 12 + 8 * i]
        nr = e[0] | e[1] << 8
        off = e[2] | e[3] << 8 | e[4] << 16
        flags = e[5] | e[6] << 8 | e[7] << 16
        if off & 0x800000:
            off = (off & 0x7FFFFF) << 4
        table[nr] = (off, flags & 0x3FFFFF, bool(flags >> 23 & 1), bool(flags >> 22 & 1))
    return table


def beneath_a_steel_sky(limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """BASS CD: 3490 lines, 1.93 h, ~10-15 actors (est.), 11.025 kHz 8-bit PCM (RNC), freeware."""
    table = _sky_dinner_table(os.path.join(SKY_DIR, "sky.dnr"))
    done = 0
    with open(os.path.join(SKY_DIR, "sky.dsk"), "rb") as dsk:
        for nr in sorted(k for k in table if SKY_SPEECH_FIRST <= k < SKY_SPEECH_END):
            if limit is not None and done >= limit:
                return
            off, size, stored, header_packed = table[nr]
            dsk.seek(off)
            blob = dsk.read(size)
            if stored:
                pcm = blob[SKY_HEADER:]
            elif header_packed:
                pcm = rnc_unpack(blob[SKY_HEADER:])[SKY_HEADER:]
            else:
                pcm = rnc_unpack(blob[SKY_HEADER:])
            x = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
            x = _resample(x, SKY_RATE)
            if _speech_like(x):
                done += 1
                yield f"bass/{nr}", x


def _queen_table(path: str) -> list[tuple[str, int, int]]:
    """queen.1c (ScummVM compressed FOTAQ): b"QTBL", 6-byte version, 2 skipped bytes,
    compression byte (1 = MP3), uint16 BE count, 21-byte entries (12-byte name, bundle byte,
    uint32 BE offset, uint32 BE size). Returns [(name, offset, size)]."""
    with open(path, "rb") as f:
        head = f.read(15)
        if head[:4] != b"QTBL":
            raise ValueError(f"{path}: no QTBL resource table")
        (n,) = struct.unpack(">H", head[13:15])
        raw = f.read(21 * n)
    out = []
    for i in range(n):
        e = raw[21 * i: 21 * i + 21]
        off, size = struct.unpack(">II", e[13:21])
        out.append((e[:12].split(b"\0")[0].decode("ascii", "replace"), off, size))
    return out


def amazon_queen(limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """FOTAQ CD: 6608 lines, 4.55 h, ~15-20 actors (est.), 11.025 kHz MP3 16 kbit/s, freeware."""
    done = 0
    with open(QUEEN_FILE, "rb") as f:
        for name, off, size in _queen_table(QUEEN_FILE):
            # *SSSS.SB are sound effects (whisper hears no words), BLANK*.SB silence.
            if not name.endswith(".SB") or name.startswith("BLANK") or name[:-3].endswith("SSSS"):
                continue
            if limit is not None and done >= limit:
                return
            f.seek(off)
            x = _decode(f.read(size))
            if _speech_like(x):
                done += 1
                yield f"fotaq/{name[:-3]}", x


def hedgewars(limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Hedgewars voice packs: 512 short shouts, 0.16 h, ~9 voices, 44.1/48 kHz Vorbis, GFDL-1.3."""
    files = [f for p in HEDGEWARS_PACKS for f in sorted(glob.glob(f"{HEDGEWARS_VOICES}/{p}/*.ogg"))]
    done = 0
    for f in files:
        if limit is not None and done >= limit:
            return
        x = _decode(f)
        if _speech_like(x, min_s=0.2):
            done += 1
            yield "hedgewars/" + os.path.relpath(f, HEDGEWARS_VOICES), x


def warzone2100(limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Warzone 2100 tutorial/messages: 476 lines, 0.26 h, ~4 voices (est.), 11/22 kHz Vorbis, GPL-2+."""
    done = 0
    with zipfile.ZipFile(WARZONE_WZ) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".ogg") and n.startswith(WARZONE_SPEECH))
        for n in names:
            if limit is not None and done >= limit:
                return
            x = _decode(z.read(n))
            if _speech_like(x):
                done += 1
                yield f"warzone2100/{n}", x


def ktuberling(limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """KTuberling English: 72 isolated words, 0.02 h, 1 voice, 44.1 kHz Vorbis, GPL-2+."""
    done = 0
    for f in sorted(glob.glob(f"{KTUBERLING_EN}/*.ogg")):
        if limit is not None and done >= limit:
            return
        x = _decode(f)
        if _speech_like(x, min_s=0.2):
            done += 1
            yield f"ktuberling/en/{os.path.basename(f)}", x


SOURCES: dict[str, Callable[..., Iterator[tuple[str, np.ndarray]]]] = {
    "beneath_a_steel_sky": beneath_a_steel_sky,
    "amazon_queen": amazon_queen,
    "hedgewars": hedgewars,
    "warzone2100": warzone2100,
    "ktuberling": ktuberling,
}

PACKAGES: dict[str, str] = {
    "beneath_a_steel_sky": "beneath-a-steel-sky",
    "amazon_queen": "flight-of-the-amazon-queen",
    "hedgewars": "hedgewars-data",
    "warzone2100": "warzone2100-data",
    "ktuberling": "ktuberling-data",
}

_MARKERS: dict[str, str] = {
    "beneath_a_steel_sky": os.path.join(SKY_DIR, "sky.dsk"),
    "amazon_queen": QUEEN_FILE,
    "hedgewars": os.path.join(HEDGEWARS_VOICES, "Default"),
    "warzone2100": WARZONE_WZ,
    "ktuberling": KTUBERLING_EN,
}


def available() -> dict[str, bool]:
    """Which sources have their Debian package's data files on this machine (by source name)."""
    return {name: os.path.exists(path) for name, path in _MARKERS.items()}
