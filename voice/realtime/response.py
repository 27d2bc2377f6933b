"""One response (one assistant reply) and the conversation items / response objects it renders.

Lifecycle events of a response, in order (GA names; beta names in `protocol.Names`):

    response.created                         status in_progress, no output yet
    response.output_item.added               the assistant message item (at its first output)
    conversation.item.added                  (beta: conversation.item.created)
    response.content_part.added              part {"type": "audio", "transcript": ""}
    response.output_audio_transcript.delta   the words of the next piece of audio
    response.output_audio.delta              base64 PCM16 24 kHz (200 ms per delta at most)
    ...                                      (text-only sessions: response.output_text.delta)
    response.output_audio.done, response.output_audio_transcript.done, response.content_part.done,
    response.output_item.done, conversation.item.done (GA only)
    response.done                            status completed | cancelled | failed
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voice.realtime.config import Settings
from voice.realtime.playout import Piece, played_samples
from voice.realtime.protocol import REALTIME_SR, Dialect, Names

AUDIO_DELTA_SAMPLES = REALTIME_SR // 5  # 200 ms per response.output_audio.delta


@dataclass(eq=False)
class UserAudio:
    """A committed user audio item not yet answered."""

    item_id: str
    audio: object = field(repr=False)  # (T,) float32 at 16 kHz
    t_speech_end: float  # monotonic (server clock), for the engine's latency stages


@dataclass(eq=False)
class Response:
    id: str
    turn: int
    user_item_ids: list[str]
    modalities: tuple[str, ...]
    item_id: str | None = None  # the assistant message item, created at the first output
    pieces: list[Piece] = field(default_factory=list)
    generated: str = ""  # text as the engine generated it (AgentText deltas)
    transcript: str = ""  # words of the audio sent (AgentAudio texts)
    status: str = "in_progress"  # completed | cancelled | failed | in_progress
    reason: str | None = None  # turn_detected | client_cancelled (cancelled); error message (failed)
    truncate_ms: int | None = None  # conversation.item.truncate from the client
    committed: bool = False  # handed to the engine's history
    task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def audio_out(self) -> bool:
        return "audio" in self.modalities

    @property
    def audio_ms(self) -> int:
        return round(1000 * sum(len(p.audio) for p in self.pieces) / REALTIME_SR)

    def heard(self) -> tuple[str, bool]:
        """(what the user heard, interrupted): the client's truncation if any, else the estimate
        from the playout clock (whole pieces, the cut piece's words in proportion)."""
        if not self.audio_out:
            return self.generated.strip(), self.status == "cancelled"
        from voice.server.tracks import played_text  # noqa: PLC0415 - the WebRTC sessions' rule
        from voice.server.tracks import Segment  # noqa: PLC0415

        sent = played_samples(self.pieces, audio_end_ms=self.truncate_ms)
        segs = [Segment(self.turn, p.text, p.audio, n) for p, n in zip(self.pieces, sent)]
        interrupted = self.status == "cancelled" or any(n < len(p.audio) for p, n in zip(self.pieces, sent))
        return played_text(segs), interrupted


def render_item(r: Response, names: Names) -> dict[str, object]:
    if r.audio_out:
        content = {"type": names.audio_content, "transcript": r.transcript}
    else:
        content = {"type": names.text_content, "text": r.generated}
    status = {"in_progress": "in_progress", "completed": "completed"}.get(r.status, "incomplete")
    return {"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
            "status": status, "content": [content] if r.status != "in_progress" else []}


def render_part(r: Response) -> dict[str, object]:
    if r.audio_out:
        return {"type": "audio", "transcript": r.transcript}
    return {"type": "text", "text": r.generated}


def user_item(item_id: str, transcript: str | None = None) -> dict[str, object]:
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
            "status": "completed", "content": [{"type": "input_audio", "transcript": transcript}]}


def render_response(r: Response, s: Settings, dialect: Dialect) -> dict[str, object]:
    details: dict[str, object] | None = None
    if r.status == "cancelled":
        details = {"type": "cancelled", "reason": r.reason}
    elif r.status == "failed":
        details = {"type": "failed", "error": {"type": "server_error", "code": "engine_error", "message": r.reason}}
    out = [render_item(r, Names.of(dialect))] if r.item_id is not None and r.status != "in_progress" else []
    usage = {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
             "input_token_details": {"cached_tokens": 0, "text_tokens": 0, "audio_tokens": 0},
             "output_token_details": {"text_tokens": 0, "audio_tokens": 0}}
    base = {"object": "realtime.response", "id": r.id, "status": r.status, "status_details": details,
            "output": out, "conversation_id": None, "usage": usage if r.status != "in_progress" else None,
            "metadata": None, "max_output_tokens": s.max_output_tokens}
    if dialect == "beta":
        mods = ["audio", "text"] if r.audio_out else ["text"]
        return {**base, "modalities": mods, "voice": s.voice, "output_audio_format": "pcm16",
                "temperature": s.temperature}
    return {**base, "output_modalities": list(r.modalities),
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": REALTIME_SR}, "voice": s.voice}}}
