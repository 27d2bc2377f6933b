"""`parley serve --workers 2`: the engine in the main process, two front workers on one port
(SO_REUSEPORT) answer /health and take WebRTC offers; SIGTERM stops them all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from voice.bench.local import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(180)
def test_two_front_workers_serve_one_port() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "voice", "serve", "--engine", "tone", "--port", str(port),
                             "--workers", "2", "--max-sessions", "2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pids, t0 = set(), time.monotonic()
        while len(pids) < 1 and time.monotonic() - t0 < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    h = json.loads(r.read())
                    assert h["engine"] == "tone" and h["max_sessions"] == 2
                    pids.add(1)
            except OSError:
                time.sleep(0.3)
        assert pids, "no worker answered"
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 2, kids
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-2000:]
    assert "2 front worker(s)" in out
    for k in kids:  # the workers are gone too
        assert not Path(f"/proc/{k}").exists() or "zombie" in Path(f"/proc/{k}/status").read_text().lower()
