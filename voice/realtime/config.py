"""Session settings: `session.update` in either shape (GA or beta) -> `Settings` -> `session` object.

GA shape:   {"type": "realtime", "output_modalities": [...], "instructions": ...,
             "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                 "turn_detection": {...} | null, "transcription": {...}},
                       "output": {"format": {...}, "voice": "..."}}}
beta shape: {"modalities": [...], "input_audio_format": "pcm16", "output_audio_format": "pcm16",
             "turn_detection": {...} | null, "input_audio_transcription": {...}, "voice": "..."}

Both shapes are accepted whatever the dialect; the reply (`session.created` / `session.updated`)
is rendered in the connection's dialect (a beta-shaped update before the first response switches
a connection that came without the beta header to beta names, see `shape_of`). Only PCM16 at 24 kHz is supported (G.711 is refused).
The turn detection maps onto Parley's `TurnConfig` (the browser demo's turn taking):
threshold -> start_threshold, silence_duration_ms -> stop_ms, prefix_padding_ms -> preroll_ms.
Noise reduction (GA `audio.input.noise_reduction`, beta `input_audio_noise_reduction`) is not
applied as a filter; its type says where the microphone is, and sets the echo guard's hint:
near_field (headphones) -> EchoHint.NEAR_FIELD, far_field (laptop, conference room) ->
FAR_FIELD, null (the default, as OpenAI's) -> UNKNOWN (the worst-case echo path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from voice.realtime.protocol import REALTIME_SR, Dialect, ProtocolError
from voice.server.echo_guard import EchoHint
from voice.server.turns import TurnConfig


@dataclass
class VadSettings:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 320
    silence_duration_ms: int = 544
    create_response: bool = True
    interrupt_response: bool = True

    @staticmethod
    def default(turn: TurnConfig) -> "VadSettings":
        return VadSettings(threshold=turn.start_threshold, prefix_padding_ms=round(turn.preroll_ms),
                           silence_duration_ms=round(turn.stop_ms))

    def turn_config(self, base: TurnConfig) -> TurnConfig:
        return dataclasses.replace(base, start_threshold=self.threshold,
                                   stop_threshold=min(base.stop_threshold, 0.7 * self.threshold),
                                   stop_ms=float(self.silence_duration_ms), preroll_ms=float(self.prefix_padding_ms))

    def render(self) -> dict[str, object]:
        return {"type": self.type, "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "create_response": self.create_response,
                "interrupt_response": self.interrupt_response, "idle_timeout_ms": None}


@dataclass
class Settings:
    model: str = "parley"
    instructions: str = ""
    voice: str = "parley"
    modalities: tuple[str, ...] = ("audio",)
    vad: VadSettings | None = field(default_factory=VadSettings)
    transcription: dict[str, Any] | None = None
    temperature: float = 0.8
    max_output_tokens: int | str = "inf"
    tools: list[Any] = field(default_factory=list)
    echo_hint: EchoHint = EchoHint.UNKNOWN  # from noise_reduction.type (None: unknown)

    @property
    def audio_out(self) -> bool:
        return "audio" in self.modalities


def _check_format(fmt: object, param: str, eid: str | None) -> None:
    if fmt is None:
        return
    if isinstance(fmt, str):  # beta
        if fmt != "pcm16":
            raise ProtocolError(f"audio format {fmt!r} is not supported: use 'pcm16' (PCM16 mono 24 kHz)",
                                "unsupported_audio_format", param, eid)
        return
    if not isinstance(fmt, dict):
        raise ProtocolError(f"'{param}' must be an object like {{\"type\": \"audio/pcm\", \"rate\": 24000}}",
                            "invalid_value", param, eid)
    typ, rate = fmt.get("type", "audio/pcm"), fmt.get("rate", REALTIME_SR)
    if typ != "audio/pcm" or rate != REALTIME_SR:
        raise ProtocolError(f"audio format {typ!r} at {rate} Hz is not supported: only 'audio/pcm' at "
                            f"{REALTIME_SR} Hz (PCM16 mono)", "unsupported_audio_format", param, eid)


def _vad(td: object, base: VadSettings | None, turn: TurnConfig, eid: str | None) -> VadSettings | None:
    if td is None:
        return None
    if not isinstance(td, dict):
        raise ProtocolError("'turn_detection' must be an object or null", "invalid_value", "turn_detection", eid)
    typ = td.get("type", "server_vad")
    if typ not in ("server_vad", "semantic_vad"):
        raise ProtocolError(f"unknown turn_detection type {typ!r} (server_vad, semantic_vad or null)",
                            "invalid_value", "turn_detection.type", eid)
    v = dataclasses.replace(base) if base is not None else VadSettings.default(turn)
    v.type = typ
    for name, kind, lo, hi in (("threshold", float, 0.0, 1.0), ("prefix_padding_ms", int, 0, 5000),
                               ("silence_duration_ms", int, 32, 10000)):
        x = td.get(name)
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not lo <= x <= hi:
            raise ProtocolError(f"turn_detection.{name} must be a number in [{lo}, {hi}]", "invalid_value",
                                f"turn_detection.{name}", eid)
        setattr(v, name, kind(x))
    for name in ("create_response", "interrupt_response"):
        x = td.get(name)
        if x is not None:
            if not isinstance(x, bool):
                raise ProtocolError(f"turn_detection.{name} must be a boolean", "invalid_value",
                                    f"turn_detection.{name}", eid)
            setattr(v, name, x)
    return v


def _echo_hint(nr: object, param: str, eid: str | None) -> EchoHint:
    """noise_reduction {"type": "near_field" | "far_field"} or null -> the echo guard's hint."""
    if nr is None:
        return EchoHint.UNKNOWN
    typ = nr.get("type") if isinstance(nr, dict) else None
    if typ not in ("near_field", "far_field"):
        raise ProtocolError(f"'{param}' must be null or {{\"type\": \"near_field\" | \"far_field\"}}",
                            "invalid_value", param, eid)
    return EchoHint(typ)


def _noise_reduction(h: EchoHint) -> dict[str, str] | None:
    return {"type": h.value} if h in (EchoHint.NEAR_FIELD, EchoHint.FAR_FIELD) else None


def _modalities(m: object, eid: str | None) -> tuple[str, ...]:
    if not isinstance(m, list) or not m or any(x not in ("text", "audio") for x in m):
        raise ProtocolError("modalities must be a non-empty list of 'text' / 'audio'", "invalid_value",
                            "output_modalities", eid)
    return tuple(dict.fromkeys(m))


def apply_update(s: Settings, sess: dict[str, Any], turn: TurnConfig, eid: str | None = None) -> Settings:
    """A new Settings with `sess` (GA or beta shape) applied; ProtocolError leaves `s` unchanged."""
    if sess.get("type", "realtime") != "realtime":
        raise ProtocolError(f"session type {sess.get('type')!r} is not supported (only 'realtime')",
                            "invalid_value", "session.type", eid)
    new = dataclasses.replace(s)
    audio = sess.get("audio") if isinstance(sess.get("audio"), dict) else {}
    a_in = audio.get("input") if isinstance(audio.get("input"), dict) else {}
    a_out = audio.get("output") if isinstance(audio.get("output"), dict) else {}
    _check_format(a_in.get("format"), "session.audio.input.format", eid)
    _check_format(a_out.get("format"), "session.audio.output.format", eid)
    _check_format(sess.get("input_audio_format"), "session.input_audio_format", eid)
    _check_format(sess.get("output_audio_format"), "session.output_audio_format", eid)
    if "turn_detection" in a_in:
        new.vad = _vad(a_in["turn_detection"], s.vad, turn, eid)
    elif "turn_detection" in sess:
        new.vad = _vad(sess["turn_detection"], s.vad, turn, eid)
    for key in ("output_modalities", "modalities"):
        if sess.get(key) is not None:
            new.modalities = _modalities(sess[key], eid)
    if "noise_reduction" in a_in:
        new.echo_hint = _echo_hint(a_in["noise_reduction"], "session.audio.input.noise_reduction", eid)
    elif "input_audio_noise_reduction" in sess:
        new.echo_hint = _echo_hint(sess["input_audio_noise_reduction"], "session.input_audio_noise_reduction", eid)
    if "transcription" in a_in:
        new.transcription = a_in["transcription"]
    elif "input_audio_transcription" in sess:
        new.transcription = sess["input_audio_transcription"]
    voice = a_out.get("voice", sess.get("voice"))
    if isinstance(voice, dict):
        voice = voice.get("id")
    if isinstance(voice, str) and voice:
        new.voice = voice  # recorded and echoed; the engine's own voice speaks
    if isinstance(sess.get("instructions"), str):
        new.instructions = sess["instructions"]
    if isinstance(sess.get("model"), str):
        new.model = sess["model"]
    t = sess.get("temperature")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        new.temperature = float(t)
    m = sess.get("max_output_tokens", sess.get("max_response_output_tokens"))
    if m == "inf" or (isinstance(m, int) and not isinstance(m, bool) and m > 0):
        new.max_output_tokens = m
    if isinstance(sess.get("tools"), list):
        new.tools = sess["tools"]  # accepted, never called: the engines have no tool use
    return new


def shape_of(sess: dict[str, Any]) -> Dialect | None:
    """Which protocol a `session` object is written in (None: cannot tell)."""
    if sess.get("type") == "realtime" or "audio" in sess or "output_modalities" in sess:
        return "ga"
    if any(k in sess for k in ("modalities", "input_audio_format", "output_audio_format", "turn_detection",
                               "input_audio_transcription", "input_audio_noise_reduction")):
        return "beta"
    return None


def render_session(s: Settings, dialect: Dialect, sid: str) -> dict[str, object]:
    """The `session` object of session.created / session.updated in the connection's dialect."""
    vad = s.vad.render() if s.vad is not None else None
    if dialect == "beta":
        return {"id": sid, "object": "realtime.session", "model": s.model,
                "modalities": list(s.modalities) if not s.audio_out else ["audio", "text"],
                "instructions": s.instructions, "voice": s.voice, "input_audio_format": "pcm16",
                "output_audio_format": "pcm16", "input_audio_transcription": s.transcription,
                "input_audio_noise_reduction": _noise_reduction(s.echo_hint),
                "turn_detection": vad, "tools": s.tools, "tool_choice": "auto", "temperature": s.temperature,
                "max_response_output_tokens": s.max_output_tokens}
    fmt = {"type": "audio/pcm", "rate": REALTIME_SR}
    return {"type": "realtime", "object": "realtime.session", "id": sid, "model": s.model,
            "output_modalities": list(s.modalities), "instructions": s.instructions,
            "audio": {"input": {"format": fmt, "transcription": s.transcription, "noise_reduction": _noise_reduction(s.echo_hint),
                                "turn_detection": vad},
                      "output": {"format": fmt, "voice": s.voice, "speed": 1.0}},
            "tools": s.tools, "tool_choice": "auto", "max_output_tokens": s.max_output_tokens,
            "tracing": None, "truncation": "auto", "prompt": None, "include": None}
