"""One client session: an aiortc peer that talks to a Parley server like a browser would.

`ClientPeer.connect()` does the SDP exchange with `POST {url}/offer` (JSON `{"sdp", "type",
"echo_hint"}`, plus `"engine"` when asked for), sends the `UtterancePlayer` track as the microphone, records
the agent's track with a `Recorder`, and logs every data-channel event with its arrival time.
Failures a user can cause (bad URL, no server, not a Parley server, server full) raise
`ParleyError` with one clear line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from model.common.errors import ParleyError
from voice.client import signal as sig
from voice.client.player import UtterancePlayer
from voice.client.recorder import Recorder
from voice.ice import loopback_candidates

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0  # offer answered + first agent audio frame received
FLOOR_WINDOW_S = 0.4  # received audio used to measure the noise floor after connecting
# This client has no echo path: its microphone is a file or a test signal and the agent's audio
# is recorded, never played. The nearest hint is a headset (no loudspeaker into the microphone).
ECHO_HINT = "near_field"  # voice.server.turns.EchoHint.NEAR_FIELD


def check_url(url: str) -> str:
    """Normalize a server URL (`host:port` gets `http://`); ParleyError when it is not one."""
    if "://" not in url:
        url = "http://" + url
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise ParleyError(f"bad server URL {url!r}: expected http://HOST:PORT")
    try:
        p.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ParleyError(f"bad server URL {url!r}: invalid port") from None
    return url.rstrip("/")


@dataclass
class Event:
    t: float  # monotonic arrival time at the client
    data: dict = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))


class ClientPeer:
    """A connected client: `player` (what the user says), `recorder` (what the agent says), `events`."""

    def __init__(self, url: str, engine: str | None = None) -> None:
        self.url = check_url(url)
        self.engine = engine
        self.player = UtterancePlayer()
        self.recorder: Recorder | None = None
        self.events: list[Event] = []
        self.speech_ends: list[float] = []  # capture time of the end of each user utterance
        self.floor_db = sig.SILENCE_DB
        self.threshold_db = sig.agent_threshold_db(sig.SILENCE_DB)
        self.t0 = time.monotonic()  # session origin for reported times
        self.server_info: dict = {}
        self._pc = None
        self._track_ready: asyncio.Future | None = None
        self.lost = asyncio.Event()  # set when the server ends the connection (not our close())

    # -- connection --------------------------------------------------------------------------
    async def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: PLC0415

        host = urlparse(self.url).hostname or ""
        if host in ("127.0.0.1", "localhost"):
            loopback_candidates(only=False)
        loop = asyncio.get_running_loop()
        self._track_ready = loop.create_future()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("closed", "failed") and self._pc is pc:  # not our own close()
                self.lost.set()
        pc.addTrack(self.player)
        channel = pc.createDataChannel("events")
        self._watch_channel(channel)

        @pc.on("datachannel")
        def on_datachannel(ch) -> None:  # noqa: ANN001
            self._watch_channel(ch)

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            if track.kind != "audio" or self.recorder is not None:
                return
            receiver = next(
                (t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None
            )
            self.recorder = Recorder(track, receiver)
            self.recorder.start()
            if not self._track_ready.done():
                self._track_ready.set_result(True)

        try:
            await asyncio.wait_for(self._negotiate(pc, RTCSessionDescription), timeout)
            await asyncio.wait_for(self._track_ready, timeout)
            await asyncio.wait_for(self._first_audio(), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ParleyError(
                f"no audio from the server at {self.url} within {timeout:.0f} s "
                "(WebRTC connection did not come up)"
            ) from None
        except BaseException:
            await self.close()
            raise
        await asyncio.sleep(FLOOR_WINDOW_S)
        db = self.recorder.levels_db[-int(FLOOR_WINDOW_S * 1000 / sig.HOP_MS) :]
        self.floor_db = sig.floor_in_levels(db)
        self.threshold_db = sig.agent_threshold_db(self.floor_db)

    async def _negotiate(self, pc, RTCSessionDescription) -> None:  # noqa: ANN001, N803
        import aiohttp  # noqa: PLC0415

        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "echo_hint": ECHO_HINT}
        if self.engine:
            body["engine"] = self.engine
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                async with http.post(self.url + "/offer", json=body) as resp:
                    text = await resp.text()
                    status = resp.status
        except aiohttp.InvalidURL as e:
            raise ParleyError(f"bad server URL {self.url!r}: {e}") from None
        except (aiohttp.ClientConnectionError, OSError) as e:
            raise ParleyError(f"cannot reach a Parley server at {self.url}: {e}") from None
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = None
        if status != 200:
            msg = answer.get("error") if isinstance(answer, dict) else None
            if status == 404:
                raise ParleyError(f"{self.url} is not a Parley server (POST /offer answered 404)")
            raise ParleyError(
                f"server at {self.url} refused the session (HTTP {status}): {msg or text[:200]}"
            )
        if not isinstance(answer, dict) or "sdp" not in answer or "type" not in answer:
            raise ParleyError(f"{self.url} is not a Parley server (no SDP answer from /offer)")
        self.server_info = {k: v for k, v in answer.items() if k not in ("sdp", "type")}
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def _first_audio(self) -> None:
        while self.recorder is None or not self.recorder.frames:
            await asyncio.sleep(0.01)

    def _watch_channel(self, channel) -> None:  # noqa: ANN001
        @channel.on("message")
        def on_message(message) -> None:  # noqa: ANN001
            t = time.monotonic()
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            try:
                data = json.loads(message)
            except json.JSONDecodeError:
                data = {"type": "text", "text": message}
            if not isinstance(data, dict):
                data = {"type": "value", "value": data}
            self.events.append(Event(t, data))

    async def close(self) -> None:
        self.player.stop_all()
        self.player.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self._pc is not None:
            pc, self._pc = self._pc, None
            await pc.close()

    # -- agent audio queries -----------------------------------------------------------------
    def rel(self, t: float | None) -> float | None:
        return None if t is None else t - self.t0

    # Polled every 10 ms by the benchmark: they read the recorder's precomputed hop levels, hops
    # aligned to the stream start (the first hop at or after `t_from`, so < 5 ms late at most).
    def onset_after(self, t_from: float) -> float | None:
        """Playout time of the first confirmed agent audio after `t_from` (None: not yet)."""
        rec = self.recorder
        i0, db = rec.levels_between(t_from)
        h = sig.onset_in_levels(db, self.threshold_db)
        return None if h is None else rec.sample_time(i0 + h * rec.hop)

    def offset_after(self, t_from: float, hold_ms: float = sig.HOLD_MS) -> float | None:
        """Playout time at which the agent falls silent (for `hold_ms`) after `t_from`."""
        rec = self.recorder
        i0, db = rec.levels_between(t_from)
        h = sig.offset_in_levels(db, self.threshold_db, hold_ms=hold_ms)
        return None if h is None else rec.sample_time(i0 + h * rec.hop)

    def loud_between(self, t_from: float, t_to: float) -> bool:
        """Whether a complete hop between the two playout times is above the agent threshold."""
        _, db = self.recorder.levels_between(t_from, t_to)
        return bool((db > self.threshold_db).any())

    def now_playing(self) -> float:
        """Playout time up to which audio has been received."""
        return self.recorder.last_play_end or time.monotonic()
