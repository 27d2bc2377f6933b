"""Realtime events on the wire: parsing and validating client events, naming server events.

Client events (JSON text messages) become typed dataclasses (`parse_client_event`); anything
malformed raises `ProtocolError`, which the session turns into an `error` event (the connection
stays open). Server events are plain dicts built by `server_event` (they get an `event_id`).

Two dialects: GA (`openai.types.realtime`, the default) and beta (`openai.types.beta.realtime`,
chosen by the `OpenAI-Beta: realtime=v1` header the beta clients send). Client event names are
the same in both; the server event names that differ are in `Names`, e.g. audio deltas are
`response.output_audio.delta` (GA) vs `response.audio.delta` (beta).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

REALTIME_SR = 24000  # the protocol's PCM16 rate ("audio/pcm" rate 24000, beta "pcm16")
MAX_APPEND_BYTES = 15 * 1024 * 1024  # OpenAI's limit for one input_audio_buffer.append

Dialect = Literal["ga", "beta"]


@dataclass(frozen=True)
class Names:
    """Server event names that differ between the GA and beta protocols."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    text_delta: str
    text_done: str
    audio_content: str  # assistant content part type in items
    text_content: str

    @staticmethod
    def of(dialect: Dialect) -> "Names":
        return BETA_NAMES if dialect == "beta" else GA_NAMES


GA_NAMES = Names("response.output_audio.delta", "response.output_audio.done",
                 "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                 "response.output_text.delta", "response.output_text.done", "output_audio", "output_text")
BETA_NAMES = Names("response.audio.delta", "response.audio.done",
                   "response.audio_transcript.delta", "response.audio_transcript.done",
                   "response.text.delta", "response.text.done", "audio", "text")


def dialect_of(headers: Any) -> Dialect:
    """`OpenAI-Beta: realtime=v1` (sent by the beta SDK clients, pipecat's beta service) -> beta."""
    beta = str(headers.get("OpenAI-Beta", "") or "")
    return "beta" if "realtime=v1" in beta.replace(" ", "") else "ga"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class ProtocolError(Exception):
    """A client event the server cannot accept; becomes an `error` event."""

    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None,
                 event_id: str | None = None, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.event_id, self.type = message, code, param, event_id, type_


def server_event(type_: str, **fields: object) -> dict[str, object]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(err: ProtocolError) -> dict[str, object]:
    return server_event("error", error={"type": err.type, "code": err.code, "message": err.message,
                                        "param": err.param, "event_id": err.event_id})


# -- client events -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientEvent:
    event_id: str | None


@dataclass(frozen=True)
class SessionUpdate(ClientEvent):
    session: dict[str, Any]


@dataclass(frozen=True)
class AudioAppend(ClientEvent):
    pcm: np.ndarray = field(repr=False)  # (T,) int16 at 24 kHz


@dataclass(frozen=True)
class AudioCommit(ClientEvent):
    pass


@dataclass(frozen=True)
class AudioClear(ClientEvent):
    pass


@dataclass(frozen=True)
class ResponseCreate(ClientEvent):
    response: dict[str, Any]


@dataclass(frozen=True)
class ResponseCancel(ClientEvent):
    response_id: str | None


@dataclass(frozen=True)
class ItemTruncate(ClientEvent):
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class ItemCreate(ClientEvent):
    item: dict[str, Any]
    previous_item_id: str | None


@dataclass(frozen=True)
class Unsupported(ClientEvent):
    """A known protocol event Parley does not implement (answered with an `error`)."""

    type: str


UNSUPPORTED = {
    "conversation.item.delete": "deleting conversation items is not supported",
    "conversation.item.retrieve": "retrieving conversation items is not supported",
    "output_audio_buffer.clear": "output_audio_buffer.clear is for WebRTC; over a WebSocket stop "
                                 "playback locally and send conversation.item.truncate",
    "transcription_session.update": "transcription-only sessions are not supported",
}


def decode_pcm16(audio: object, event_id: str | None = None) -> np.ndarray:
    """base64 PCM16 little-endian mono -> (T,) int16; ProtocolError for bad base64 / odd length."""
    if not isinstance(audio, str):
        raise ProtocolError("'audio' must be a base64 string of PCM16 audio", "invalid_value", "audio", event_id)
    if len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
        raise ProtocolError(f"audio chunk too large (limit {MAX_APPEND_BYTES} bytes per append)",
                            "audio_too_large", "audio", event_id)
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("'audio' is not valid base64", "invalid_base64", "audio", event_id) from None
    if len(raw) % 2:
        raise ProtocolError(f"audio is {len(raw)} bytes: PCM16 needs an even number of bytes "
                            "(expected 16-bit little-endian mono at 24 kHz)", "invalid_audio_format", "audio",
                            event_id)
    return np.frombuffer(raw, dtype="<i2").astype(np.int16, copy=False)


def encode_pcm16(x: np.ndarray) -> str:
    """(T,) float32 in [-1, 1] -> base64 PCM16 little-endian."""
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], eid: str | None,
           required: bool = True) -> Any:
    v = msg.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError(f"missing or invalid field '{name}' (expected {want})", "invalid_value", name, eid)
    return v


def parse_client_event(text: str | bytes) -> ClientEvent:
    """One WebSocket message -> a ClientEvent. Raises ProtocolError for anything malformed."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("message is not valid JSON", "invalid_json") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a client event must be a JSON object with a 'type'", "invalid_event")
    eid = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
    typ = msg.get("type")
    if not isinstance(typ, str) or not typ:
        raise ProtocolError("missing field 'type'", "invalid_event", "type", eid)
    if typ == "session.update":
        return SessionUpdate(eid, _field(msg, "session", dict, eid))
    if typ == "input_audio_buffer.append":
        return AudioAppend(eid, decode_pcm16(msg.get("audio"), eid))
    if typ == "input_audio_buffer.commit":
        return AudioCommit(eid)
    if typ == "input_audio_buffer.clear":
        return AudioClear(eid)
    if typ == "response.create":
        return ResponseCreate(eid, _field(msg, "response", dict, eid, required=False) or {})
    if typ == "response.cancel":
        return ResponseCancel(eid, _field(msg, "response_id", str, eid, required=False))
    if typ == "conversation.item.truncate":
        end = _field(msg, "audio_end_ms", int, eid)
        if end < 0:
            raise ProtocolError("'audio_end_ms' must be >= 0", "invalid_value", "audio_end_ms", eid)
        return ItemTruncate(eid, _field(msg, "item_id", str, eid), int(msg.get("content_index") or 0), end)
    if typ == "conversation.item.create":
        return ItemCreate(eid, _field(msg, "item", dict, eid), _field(msg, "previous_item_id", str, eid, False))
    if typ in UNSUPPORTED:
        return Unsupported(eid, typ)
    raise ProtocolError(f"unknown event type {typ!r}", "invalid_event_type", "type", eid)
