"""`parley distill train` pipeline on CPU: 2-process DDP (gloo) through torchrun, resume, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("model.llama")

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(run_dir: Path, steps: int, nproc: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port()),
           "-m", "voice", "distill", "train", "--tiny", "--synthetic", "48", "--steps", str(steps), "--batch-size", "4",
           "--lr", "3e-3", "--run-dir", str(run_dir), "--log-every", "1", "--eval-every", "4", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_ddp_two_gloo_processes_resume_and_export(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = _train(run, 12, 2)
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads(r.stdout.strip().splitlines()[-1])
    assert final["step"] == 12 and final["ddp_ranks_in_sync"] == 1.0
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["audio"] < hist[0]["audio"]  # learns the synthetic rule
    # resume: the same command with more steps continues from step 12 (one process this time)
    r = _train(run, 16, 1, ["--export", str(tmp_path / "w")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and json.loads(r.stdout.strip().splitlines()[-1])["step"] == 16
    man = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert man["steps"] == 16 and all(f["bytes"] <= 16 * 2**20 for f in man["files"].values())
