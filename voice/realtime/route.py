"""`GET /v1/realtime`: the OpenAI Realtime protocol over a WebSocket (aiohttp).

    ws://HOST:PORT/v1/realtime?model=anything     (any api key; the model name is echoed)

One connection = one `RealtimeSession`, counted with the WebRTC sessions against
`--max-sessions`: when the server is full the upgrade completes, one `error` event
(code `session_limit_reached`) is sent and the socket closes with code 1013 (try again later).
Events are read in order by this handler; all server events leave through one writer task.
Malformed messages get an `error` event and the connection stays open.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType, web

from voice.realtime.protocol import ProtocolError, dialect_of, error_event, parse_client_event

log = logging.getLogger(__name__)

MAX_MSG = 16 * 1024 * 1024  # one append may carry up to 15 MiB of audio (base64)
CLOSE_TRY_AGAIN = 1013
CLOSE_GOING_AWAY = 1001  # the server closed the session (shutdown)


async def _writer(ws: web.WebSocketResponse, out: asyncio.Queue) -> None:
    """Sends the session's events in order; None (the session closed) closes the socket."""
    while (msg := await out.get()) is not None:
        if ws.closed:
            continue
        try:
            await ws.send_str(json.dumps(msg))
        except (ConnectionError, RuntimeError):  # the client went away
            log.debug("realtime: event dropped, socket closing")
    if not ws.closed:
        await ws.close(code=CLOSE_GOING_AWAY)


async def _refuse(ws: web.WebSocketResponse, err: ProtocolError) -> web.WebSocketResponse:
    await ws.send_str(json.dumps(error_event(err)))
    await ws.close(code=CLOSE_TRY_AGAIN, message=err.code.encode()[:120])
    return ws


async def realtime_handler(request: web.Request) -> web.StreamResponse:
    from voice.realtime.session import RealtimeSession  # noqa: PLC0415
    from voice.server.app import SERVER_KEY  # noqa: PLC0415

    server = request.app[SERVER_KEY]
    ws = web.WebSocketResponse(max_msg_size=MAX_MSG)
    if not ws.can_prepare(request).ok:
        return web.json_response({"error": "GET /v1/realtime is a WebSocket endpoint (OpenAI Realtime "
                                  "protocol): connect with a WebSocket client"}, status=400)
    await ws.prepare(request)
    limit = server.cfg.max_sessions
    if len(server.sessions) + server._reserved >= limit:
        return await _refuse(ws, ProtocolError(f"server full: {limit} sessions in use, try again later",
                                               "session_limit_reached", type_="server_error"))
    out: asyncio.Queue = asyncio.Queue()

    def closed(s: RealtimeSession) -> None:
        server._closed(s)
        out.put_nowait(None)  # the writer flushes what is queued, then closes the socket

    es = None
    try:
        es = await server.engine.open_session()  # a remote engine (--workers) answers asynchronously
        sess = RealtimeSession(server.engine, server.vad, server.vad_batcher, server.cfg.turn, out.put_nowait,
                               dialect_of(request.headers), on_closed=closed, engine_session=es)
    except Exception as e:  # noqa: BLE001 - e.g. an engine with no free slot
        log.exception("realtime: cannot start a session")
        if es is not None:
            await es.close()
        return await _refuse(ws, ProtocolError(f"cannot start a session: {e}", "session_failed", type_="server_error"))
    server.sessions[sess.id] = sess
    writer = asyncio.get_running_loop().create_task(_writer(ws, out), name=f"parley-rt-{sess.id}-writer")
    log.info("realtime session %s started (%s, %d/%d)", sess.id, sess.dialect, len(server.sessions), limit)
    try:
        sess.start()
        async for msg in ws:
            if sess.closed:
                break
            if msg.type == WSMsgType.TEXT:
                try:
                    ev = parse_client_event(msg.data)
                except ProtocolError as e:
                    sess.error(e)
                    continue
                await sess.handle(ev)
            elif msg.type == WSMsgType.BINARY:
                sess.error(ProtocolError("binary messages are not supported: send JSON text events",
                                         "invalid_event"))
    finally:
        await sess.close()
        try:
            await asyncio.wait_for(writer, 2.0)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            writer.cancel()
        if not ws.closed:
            await ws.close()
    return ws
