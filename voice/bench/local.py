"""Start a local `parley serve` for a benchmark run when no --url is given.

The server runs in its own process (its model work must not share the client's event loop,
or the client's clocks would be disturbed); its output goes to a log file whose tail is shown
when it fails to start.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from model.common.errors import ParleyError

START_TIMEOUT_S = 300.0  # model loading on a busy 2-core CPU can take a while


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a process and its live descendants; None when it is gone."""
    import psutil  # noqa: PLC0415

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:  # ended meanwhile
            pass
    return total


class LocalServer:
    """`with LocalServer("cascade") as url:` runs `parley serve` on a free loopback port."""

    def __init__(self, engine: str | None = None, extra_args: list[str] | None = None,
                 keep_log: str | None = None) -> None:
        self.engine = engine
        self.extra_args = list(extra_args or [])
        self.keep_log = keep_log  # copy the server's log here when it stops (else it is deleted)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="parley-bench-server-", suffix=".log")[1])

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        cmd = [sys.executable, "-m", "voice", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.engine:
            cmd += ["--engine", self.engine]
        cmd += self.extra_args
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ParleyError(
                    f"local server ({' '.join(cmd[2:])}) exited with code {self.proc.returncode}: "
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2):
                    return self.url
            except urllib.error.HTTPError:
                return self.url  # it answers: up (even if / is not a page)
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ParleyError(f"local server did not start within {timeout:.0f} s: " + self.log_tail())

    def log_tail(self, n: int = 6) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:]) or "(empty log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cpu_s(self) -> float | None:
        """CPU seconds the server's processes (the engine host and its front workers) used so far."""
        return tree_cpu_s(self.proc.pid) if self.proc is not None else None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        try:
            if self.keep_log:
                shutil.copyfile(self.log_path, self.keep_log)
            self.log_path.unlink()
        except OSError:
            pass
