"""distill/gpu_speak.sh (issue 11): the phased GPU script, dry-run on CPU with tiny settings (the
overlapped chain, then a sequential resume), and `generate --max-minutes` (the budget it relies on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from model.common.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "distill" / "gpu_speak.sh"


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_generate_time_budget_stops_then_resumes(tmp_path: Path) -> None:
    from distill.batched import BatchSpec
    from distill.runner import GenConfig, generate
    from distill.stages import StageKind, StagesSpec

    cfg = GenConfig(seed=2, stages=StagesSpec(StageKind.FAKE), speak_only=True, real_frac=0.0)
    s = generate(tmp_path / "d", 6, cfg, progress=False, batch=BatchSpec(block=2, tts_workers=0), max_minutes=0)
    assert s["written"] == 0 and s["missing"] == 6 and s["failed"] == 0  # no block starts after the budget
    s = generate(tmp_path / "d", 6, cfg, progress=False, batch=BatchSpec(block=2, tts_workers=0), max_minutes=5)
    assert s["written"] == 6 and s["missing"] == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cpu_dry_run_end_to_end(tmp_path: Path) -> None:
    """stage -> start (the overlapped chain: generate + stats, tokenize --follow and train --follow + a
    full fine-tuning side arm at once, then eval) -> collect; then start again with OVERLAP=0 (the
    sequential chain resumes: nothing to generate, train from last.pt) -> collect."""
    from codec.io import save_codec
    from codec.model import CodecConfig, ParleyCodec

    codec = tmp_path / "codec"
    save_codec(ParleyCodec(CodecConfig(n_filters=4, dimension=8, lstm=0, n_q=4, bins=32)), codec, {"note": "tiny"})
    w = tmp_path / "w"
    env = {**os.environ, "PY": sys.executable, "SKIP_KIT": "1", "DEVICE": "cpu", "STAGES": "fake:0.01",
           "TINY": "1", "N": "12", "BLOCK": "4", "TTS_WORKERS": "1", "GEN_MINUTES": "1", "TRAIN_MINUTES": "0.3",
           "CHAIN_MINUTES": "3", "TAIL_MINUTES": "0.5", "STEPS": "4", "BS": "4", "LOG_EVERY": "1",
           "EVAL_LIMIT": "2", "CODEC": str(codec), "W": str(w), "P": str(tmp_path / "repo"),
           "KIT": str(tmp_path / "kit"), "START_WAIT": "1", "WAIT": "200", "SHARD_TRACES": "4", "MIN_TURNS": "4",
           "RELOAD_S": "2", "TOK_POLL_S": "1"}

    def phase(name: str, **more: str) -> str:
        r = subprocess.run(["bash", str(SCRIPT)], cwd=REPO_ROOT, env={**env, "PHASE": name, **more},
                           capture_output=True, text=True, timeout=230)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    phase("stage")
    assert "imports ok" in phase("start")
    out = phase("collect")
    assert "CHAIN DONE" in out and "JOB STOPPED" in out, out
    back = {p.name for p in (w / "out").iterdir()}
    assert back == {"status.txt", "stats.json", "tokens_manifest.json", "history.jsonl", "s2s.tar", "codes.npz",
                    "logs.tgz"}  # <= 8 files
    assert json.loads((w / "out" / "stats.json").read_text())["traces"] == 12
    assert "train_full:" in out and "arm full done" in (w / "train.log").read_text()  # the side arm (ARMS)
    chain = (w / "chain.log").read_text()
    assert chain.index("start tokenize") < chain.index("done generate") and "training starts" in chain  # at once
    assert "steps: generate:done stats:done tokenize:done train:done eval:done" in out
    assert "train pool:" in out and "train_full pool:" in out  # each trainer reloads (--follow)
    assert "passes" in json.loads((w / "tokenize.log").read_text().splitlines()[-1])  # the follow loop's summary
    with tarfile.open(w / "out" / "logs.tgz") as tar:
        assert {"run/history.jsonl", "run_full/history.jsonl", "train_full.log"} <= set(tar.getnames())
    assert json.loads((w / "run_full" / "history.jsonl").read_text().splitlines()[-1])["step"] >= 1
    assert "start" in phase("start", OVERLAP="0")  # resumes sequentially: nothing to generate, train resumes
    out = phase("collect", OVERLAP="0")
    assert "CHAIN DONE" in out, out
    assert json.loads((w / "generate.json").read_text())["already_done"] == 12
    assert "resumed from" in (w / "train.log").read_text() and "reload:" not in (w / "train.log").read_text()
