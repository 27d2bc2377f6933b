"""`parley bench` gives one clear line (exit 2) for bad URLs, absent and non-Parley servers."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web

from voice.cli.main import main
from voice.bench.local import free_port

pytestmark = pytest.mark.timeout(60)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["bench", *args])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8080", "http://", "http://127.0.0.1:99999"])
def test_bad_url(capsys: pytest.CaptureFixture[str], url: str) -> None:
    rc, err = run_cli(capsys, "latency", "--url", url, "--turns", "1")
    assert rc == 2
    assert "bad server URL" in err and "Traceback" not in err


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    rc, err = run_cli(capsys, "latency", "--url", f"http://127.0.0.1:{port}", "--turns", "1")
    assert rc == 2
    assert f"cannot reach a Parley server at http://127.0.0.1:{port}" in err
    rc, err = run_cli(capsys, "concurrency", "--url", f"127.0.0.1:{port}", "--max", "2")
    assert rc == 2 and "cannot reach a Parley server" in err


class _Server:
    """A plain HTTP server in a thread: answers /offer with a fixed status and body."""

    def __init__(self, status: int, body: dict | None) -> None:
        self.status, self.body = status, body
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def offer(request: web.Request) -> web.Response:
            if self.body is None:
                return web.Response(status=self.status, text="<html>nope</html>")
            return web.json_response(self.body, status=self.status)

        app = web.Application()
        app.router.add_post("/offer", offer)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> str:
        self.thread.start()
        self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_server_full_and_not_parley(capsys: pytest.CaptureFixture[str]) -> None:
    with _Server(503, {"error": "server full: 4 sessions (--max-sessions 4)"}) as url:
        rc, err = run_cli(capsys, "latency", "--url", url, "--turns", "1")
    assert rc == 2
    assert "refused the session (HTTP 503)" in err and "server full" in err
    with _Server(200, {"hello": "world"}) as url:
        rc, err = run_cli(capsys, "latency", "--url", url, "--turns", "1")
    assert rc == 2 and "is not a Parley server" in err
    with _Server(404, None) as url:
        rc, err = run_cli(capsys, "latency", "--url", url, "--turns", "1")
    assert rc == 2 and "is not a Parley server" in err


def test_bad_audio_path(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    rc, err = run_cli(capsys, "latency", "--url", "http://127.0.0.1:9", "--audio", str(tmp_path / "x.wav"))
    assert rc == 2 and "audio path not found" in err
    (tmp_path / "empty").mkdir()
    rc, err = run_cli(capsys, "latency", "--url", "http://127.0.0.1:9", "--audio", str(tmp_path / "empty"))
    assert rc == 2 and "no audio files" in err
