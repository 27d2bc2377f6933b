"""The engine in one process, the per-session CPU work (WebRTC, Opus, resampling, VAD) in others.

    EngineHost(engine, path)   serves one engine (the GPU one) on a Unix socket
    RemoteEngine(path)         the `Engine` interface of a front worker, proxied to the host

`parley serve --workers N` runs the host in the main process and N front workers (`Server` with
a `RemoteEngine`, all on one port through SO_REUSEPORT), so the aiortc/Opus/soxr/VAD work of
many sessions is spread over N cores while one frame clock batches them all on the GPU.

Messages are length-prefixed pickles (a private socket, mode 0600, between processes of one
server): ("join", sid) -> ("joined", sid, speculative) | ("full", sid, why); ("feed", sid, chunk, t);
("respond", sid, rid, UserTurn) -> ("ev", rid, EngineEvent)* ("done", rid); ("cancel", sid, rid)
(barge-in, a speculative reply thrown away: the host closes that reply's generator, as the server's
task cancellation does; `rid` per reply, since a session's next reply may start before the last
one's cancel arrives); ("discard", sid, turn); ("commit", sid, turn, text, interrupted); ("close",
sid); ("info",) -> ("info", dict); ("stats", token, since) -> ("stats", token, dict). A worker's connection
closing closes its sessions on the host (their slots are free at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import struct
from collections.abc import AsyncIterator

from voice.engines.base import Engine, EngineEvent, EngineSession, UserTurn

_HEAD = struct.Struct("!I")


async def read_msg(reader: asyncio.StreamReader) -> tuple | None:
    """One message, or None at the end of the stream."""
    try:
        (n,) = _HEAD.unpack(await reader.readexactly(_HEAD.size))
        return pickle.loads(await reader.readexactly(n))  # noqa: S301 - our own processes only
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


_CORKED: dict[asyncio.StreamWriter, list[bytes]] = {}  # messages written in this loop iteration, per writer


def write_msg(writer: asyncio.StreamWriter, msg: tuple) -> None:
    """Queue one message; those written in one event-loop iteration (e.g. a tick's frames of every
    session) go out in one write at its end: one system call instead of one each."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    buf = _CORKED.get(writer)
    if buf is None:
        _CORKED[writer] = buf = []
        asyncio.get_running_loop().call_soon(flush_msgs, writer)
    buf.append(_HEAD.pack(len(data)) + data)


def flush_msgs(writer: asyncio.StreamWriter) -> None:
    """Write the queued messages now (before closing the writer)."""
    buf = _CORKED.pop(writer, None)
    if buf and not writer.is_closing():
        writer.write(b"".join(buf))


class EngineHost:
    """Serves ``engine`` to front workers on the Unix socket ``path``."""

    def __init__(self, engine: Engine, path: str) -> None:
        self.engine, self.path = engine, path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._conn, self.path)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions: dict[int, EngineSession] = {}
        replies: dict[int, asyncio.Task] = {}
        try:
            while (msg := await read_msg(reader)) is not None:
                kind, args = msg[0], msg[1:]
                if kind == "info":
                    write_msg(writer, ("info", self.engine.info()))
                elif kind == "stats":  # ("stats", token, since) -> ("stats", token, dict)
                    stats = getattr(self.engine, "stats", None)
                    write_msg(writer, ("stats", args[0], stats(args[1]) if stats is not None else {}))
                elif kind == "join":
                    try:
                        sessions[args[0]] = sess = self.engine.session()
                        write_msg(writer, ("joined", args[0], bool(getattr(sess, "speculative", False))))
                    except RuntimeError as e:
                        write_msg(writer, ("full", args[0], str(e)))
                elif kind == "feed" and args[0] in sessions:
                    sessions[args[0]].feed(args[1], args[2])
                elif kind == "respond" and args[0] in sessions:
                    replies[args[:2]] = asyncio.create_task(self._reply(args[1], sessions[args[0]], args[2], writer))
                elif kind == "cancel" and args[:2] in replies:
                    replies.pop(args[:2]).cancel()
                elif kind == "discard" and args[0] in sessions:
                    sessions[args[0]].discard(args[1])
                elif kind == "commit" and args[0] in sessions:
                    sessions[args[0]].commit(*args[1:])
                elif kind == "close" and args[0] in sessions:
                    await self._close_one(args[0], sessions, replies)
        finally:
            for sid in list(sessions):
                await self._close_one(sid, sessions, replies)
            flush_msgs(writer)
            writer.close()

    @staticmethod
    async def _close_one(sid: int, sessions: dict, replies: dict) -> None:
        tasks = [replies.pop(k) for k in [k for k in replies if k[0] == sid]]  # keys (sid, rid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sessions.pop(sid).close()

    @staticmethod
    async def _reply(rid: int, sess: EngineSession, turn: UserTurn, writer: asyncio.StreamWriter) -> None:
        agen = sess.respond(turn)
        try:
            async for ev in agen:
                write_msg(writer, ("ev", rid, ev))
        finally:
            await agen.aclose()
            if not writer.is_closing():
                write_msg(writer, ("done", rid))


class RemoteEngine(Engine):
    """The host's engine as seen by a front worker (``await connect()`` first)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._info: dict = {}
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future] = {}  # join answers
        self._queues: dict[int, asyncio.Queue] = {}  # reply events per reply id
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task | None = None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        write_msg(self._writer, ("info",))
        msg = await read_msg(reader)
        if msg is None or msg[0] != "info":
            raise ConnectionError(f"no engine host on {self.path}")
        self._info = msg[1]
        self.name = str(self._info.get("engine", "remote"))
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while (msg := await read_msg(reader)) is not None:
            kind, sid = msg[0], msg[1] if len(msg) > 1 else None
            if kind in ("joined", "full", "stats") and sid in self._waiting:
                self._waiting.pop(sid).set_result(msg)
            elif kind in ("ev", "done") and sid in self._queues:
                self._queues[sid].put_nowait(msg)
        for fut in self._waiting.values():  # the host is gone
            fut.set_exception(ConnectionError("engine host closed"))
        for q in self._queues.values():
            q.put_nowait(("done", None))

    async def wait_closed(self) -> None:
        """Returns when the connection to the host is gone."""
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)

    def send(self, msg: tuple) -> None:
        if self._writer is not None and not self._writer.is_closing():
            write_msg(self._writer, msg)

    def info(self) -> dict:
        return dict(self._info)

    async def stats(self, since: int = 0) -> dict:
        """The host engine's serving statistics (the direct engine's frame clock)."""
        token = -next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        self.send(("stats", token, since))
        return (await fut)[2]

    def session(self) -> EngineSession:
        raise RuntimeError("a remote engine opens sessions with `await open_session()`")

    async def open_session(self) -> "RemoteSession":
        sid = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[sid] = fut
        self.send(("join", sid))
        msg = await fut
        if msg[0] == "full":
            raise RuntimeError(msg[2])
        return RemoteSession(self, sid, speculative=bool(msg[2]))

    async def close(self) -> None:
        if self._writer is not None:
            flush_msgs(self._writer)
            self._writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)


class RemoteSession(EngineSession):
    def __init__(self, engine: RemoteEngine, sid: int, speculative: bool = False) -> None:
        self.e, self.sid = engine, sid
        self.speculative = speculative  # the host's session gets respond(final=False) at pauses

    def feed(self, chunk_16k, t: float) -> None:  # noqa: ANN001 - np.ndarray (512,)
        self.e.send(("feed", self.sid, chunk_16k, t))

    async def respond(self, turn: UserTurn) -> AsyncIterator[EngineEvent]:
        q: asyncio.Queue = asyncio.Queue()
        rid = next(self.e._ids)  # noqa: SLF001
        self.e._queues[rid] = q  # noqa: SLF001
        self.e.send(("respond", self.sid, rid, turn))
        done = False
        try:
            while (msg := await q.get())[0] == "ev":
                yield msg[2]
            done = True
        finally:
            if not done:  # cancelled (barge-in, a discarded speculation) or closed early: stop the host's reply
                self.e.send(("cancel", self.sid, rid))
            self.e._queues.pop(rid, None)  # noqa: SLF001

    def discard(self, turn: int) -> None:
        self.e.send(("discard", self.sid, turn))

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:
        self.e.send(("commit", self.sid, turn, played_text, interrupted))

    async def close(self) -> None:
        self.e.send(("close", self.sid))
