"""`parley serve`: aiohttp app with the demo page and the WebRTC signalling endpoint.

    GET  /                 the browser demo (demos/index.html)
    GET  /static/NAME      demo assets (app.js, style.css), served locally, no CDN
    GET  /health           {"ok": true, "engine": ..., "sessions": n, "max_sessions": N}
    GET  /stats[?since=N]  the engine's serving statistics (direct: the frame clock's timing over
                           its ticks >= N; the answer's frame_clock.next_tick is the next N)
    POST /offer            {"sdp": "...", "type": "offer"[, "engine": "cascade"][, "echo_hint": "cancelled"]}
                           -> {"sdp", "type": "answer", "session", "engine", "echo_hint", ...}
    GET  /v1/realtime      WebSocket, the OpenAI Realtime protocol (voice/realtime/README.md)

`echo_hint` is what the client knows of its echo path (`EchoHint`: unknown, the default;
cancelled; near_field; far_field): it sets the session's echo guard's starting gain.

Errors are JSON `{"error": "..."}` with a 4xx/5xx status: malformed JSON or SDP, missing
fields, an unknown echo_hint, bodies over `max_body` bytes (413), offers without audio (400), a different engine
than the one served (400), and `max_sessions` reached or no engine slot free (503, with
`"reason": "server_full"`, the counts and a Retry-After header). A session whose client stops
sending audio for `input_timeout_s` is closed (its slot is free within a second).

No STUN/TURN by default (`iceServers=[]`: nothing on the internet is contacted). aioice leaves
127.0.0.1 out of its host candidates, so on a loopback-only host no candidate would be offered:
`use_loopback_ice()` makes it offer 127.0.0.1 only; on by default when binding 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from model.common.paths import DEMOS_DIR
from voice.engines.base import Engine
from voice.ice import loopback_candidates
from voice.server.echo_guard import EchoHint
from voice.server.turns import TurnConfig

log = logging.getLogger(__name__)

STATIC_FILES = {"app.js": "application/javascript", "style.css": "text/css"}
MAX_BODY = 64 * 1024  # SDP offers are a few KB
SERVER_KEY: web.AppKey["Server"] = web.AppKey("parley", object)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 4  # concurrent WebRTC sessions; more -> 503
    max_body: int = MAX_BODY  # bytes of a POST body
    loopback_ice: bool | None = None  # offer only 127.0.0.1 candidates; None: when host is loopback
    connect_timeout_s: float = 30.0  # a session that never connects is dropped after this
    input_timeout_s: float = 0.5  # a connected client silent this long has vanished (0: never)
    turn: TurnConfig = field(default_factory=TurnConfig)

    @property
    def use_loopback(self) -> bool:
        if self.loopback_ice is not None:
            return self.loopback_ice
        return self.host in ("127.0.0.1", "localhost", "::1")


def use_loopback_ice() -> None:
    """Make aioice gather 127.0.0.1 only (process-wide; idempotent)."""
    loopback_candidates(only=True)


def _error(status: int, message: str, headers: dict | None = None, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):  # noqa: ANN001, ANN201
    """Every error leaves as JSON, including aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVER_KEY].cfg.max_body
        return _error(413, f"request body too large (limit {limit} bytes)")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, e.reason or "error")
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal server error")


class Server:
    """Shared state: the engine, the VAD weights, the sessions."""

    def __init__(self, engine: Engine, cfg: ServerConfig = ServerConfig(), vad=None) -> None:  # noqa: ANN001
        self.engine = engine
        self.cfg = cfg
        if vad is None:
            from model.components.vad import SileroVAD  # noqa: PLC0415

            vad = SileroVAD.load()
        self.vad = vad
        self.vad_pool = ThreadPoolExecutor(1, thread_name_prefix="parley-vad")
        from voice.server.inputs import VadBatcher  # noqa: PLC0415

        self.vad_batcher = VadBatcher(vad, self.vad_pool)
        self.sessions: dict[str, object] = {}
        self._reserved = 0  # offers being answered (count against max_sessions)
        if cfg.use_loopback:
            use_loopback_ice()

    # -- routes ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors], client_max_size=self.cfg.max_body)
        app[SERVER_KEY] = self
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/health", self.health)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/favicon.ico", self.favicon)
        app.router.add_post("/offer", self.offer)
        from voice.realtime.route import realtime_handler  # noqa: PLC0415

        app.router.add_get("/v1/realtime", realtime_handler)  # OpenAI Realtime protocol (WebSocket)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = DEMOS_DIR / "index.html"
        if not page.exists():
            return _error(404, f"demo page not found: {page}")
        return web.FileResponse(page, headers={"Content-Type": "text/html; charset=utf-8"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES or not (DEMOS_DIR / name).exists():
            return _error(404, f"no such file: {name}")
        return web.FileResponse(DEMOS_DIR / name, headers={"Content-Type": STATIC_FILES[name]})

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.engine.info(), "sessions": len(self.sessions),
                                  "max_sessions": self.cfg.max_sessions})

    async def stats(self, request: web.Request) -> web.Response:
        stats = getattr(self.engine, "stats", None)
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _error(400, "since must be an integer (a tick number)")
        got = stats(since) if stats is not None else {}
        if asyncio.iscoroutine(got):  # a remote engine asks its host
            got = await got
        return web.json_response({"engine": self.engine.name, "sessions": len(self.sessions), **got})

    def _full(self, why: str) -> web.Response:
        return _error(503, f"server full: {why}, try again later", headers={"Retry-After": "1"},
                      reason="server_full", sessions=len(self.sessions), max_sessions=self.cfg.max_sessions)

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.read()  # raises 413 beyond client_max_size
        try:
            params = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body is not valid JSON (expected {\"sdp\": ..., \"type\": \"offer\"})")
        if not isinstance(params, dict):
            return _error(400, "body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
        sdp, typ = params.get("sdp"), params.get("type")
        if not isinstance(sdp, str) or not sdp.strip():
            return _error(400, "missing field 'sdp' (string)")
        if typ != "offer":
            return _error(400, "field 'type' must be \"offer\"")
        want = params.get("engine")
        if want is not None and want != self.engine.name:
            return _error(400, f"this server runs engine {self.engine.name!r}, not {want!r}")
        try:
            hint = EchoHint.parse(params.get("echo_hint", EchoHint.UNKNOWN.value))
        except ValueError as e:
            return _error(400, str(e))
        if not sdp.lstrip().startswith("v=0"):
            return _error(400, "invalid SDP: it must start with v=0")
        if "\nm=audio" not in sdp.replace("\r\n", "\n"):
            return _error(400, "the offer has no audio track (Parley needs a microphone; video is not used)")
        if len(self.sessions) + self._reserved >= self.cfg.max_sessions:
            return self._full(f"{self.cfg.max_sessions} sessions in use")
        self._reserved += 1
        try:
            return await self._answer(sdp, hint)
        finally:
            self._reserved -= 1

    async def _answer(self, sdp: str, hint: EchoHint = EchoHint.UNKNOWN) -> web.Response:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: PLC0415

        from voice.server.inputs import pass_packets_through  # noqa: PLC0415
        from voice.server.session import Session  # noqa: PLC0415

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            es = await self.engine.open_session()
        except RuntimeError as e:  # the engine has no free slot (e.g. the direct model's batch)
            await pc.close()
            return self._full(str(e))
        sess = Session(pc, self.engine, self.vad, self.vad_batcher, self.cfg.turn, on_closed=self._closed,
                       connect_timeout_s=self.cfg.connect_timeout_s, input_timeout_s=self.cfg.input_timeout_s,
                       engine_session=es, echo_hint=hint)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise ValueError("no audio media section")
            for t in audio:
                pass_packets_through(t.receiver)
            pc.addTrack(sess.out)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # noqa: BLE001 - aiortc raises ValueError, AssertionError, ...
            await sess.close()
            return _error(400, f"invalid SDP offer: {e or type(e).__name__}")
        self.sessions[sess.id] = sess
        sess.start()
        log.info("session %s started (%d/%d)", sess.id, len(self.sessions), self.cfg.max_sessions)
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "session": sess.id, "echo_hint": hint.value, **self.engine.info()})

    def _closed(self, sess) -> None:  # noqa: ANN001
        self.sessions.pop(sess.id, None)

    async def close(self) -> None:
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await self.engine.close()
        self.vad_pool.shutdown(wait=False)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()


async def run_server(server: Server, reuse_port: bool = False) -> None:
    """Serve until cancelled (Ctrl-C); ``reuse_port``: one of several processes on the port."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, server.cfg.host, server.cfg.port, reuse_port=reuse_port or None)
    await site.start()
    print(f"Parley ({server.engine.name}) on http://{server.cfg.host}:{server.cfg.port}/  "
          f"(max {server.cfg.max_sessions} sessions; Ctrl-C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
