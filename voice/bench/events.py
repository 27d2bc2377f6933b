"""Reading the server's data-channel events: per-turn stage breakdown and texts.

Events are JSON objects with a "type". Latency figures arrive as a "latency" event whose
numeric fields are milliseconds (VAD endpoint delay, ASR, LLM first token, TTS first audio,
...); the names are kept as the server sends them (a trailing "_ms" is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

LATENCY_TYPES = ("latency", "turn_latency", "metrics")
USER_TEXT_TYPES = ("transcript", "user_text", "user_transcript")
AGENT_TEXT_TYPES = ("agent_text", "agent", "reply", "response")
NOT_STAGES = ("turn", "turn_id", "id", "t", "time", "timestamp", "seq")


class _Event(Protocol):
    t: float
    data: dict

    @property
    def type(self) -> str: ...


def _in(e: _Event, t_from: float, t_to: float | None) -> bool:
    return e.t >= t_from and (t_to is None or e.t < t_to)


def stages_of(data: dict) -> dict[str, float]:
    """Numeric fields of a latency event (nested under "stages" or at the top level), in ms."""
    src = data.get("stages") if isinstance(data.get("stages"), dict) else data
    out: dict[str, float] = {}
    for k, v in src.items():
        if k in NOT_STAGES or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[k[:-3] if k.endswith("_ms") else k] = float(v)
    return out


def turn_stages(events: Sequence[_Event], t_from: float, t_to: float | None) -> dict[str, float]:
    """The first latency event received in [t_from, t_to)."""
    for e in events:
        if e.type in LATENCY_TYPES and _in(e, t_from, t_to):
            return stages_of(e.data)
    return {}


def _text(data: dict) -> str:
    for k in ("text", "transcript", "value"):
        if isinstance(data.get(k), str):
            return data[k]
    return ""


def turn_texts(
    events: Sequence[_Event], t_from: float, t_to: float | None
) -> tuple[str | None, str | None]:
    """(user transcript, agent text) of the events received in [t_from, t_to)."""
    user = [_text(e.data) for e in events if e.type in USER_TEXT_TYPES and _in(e, t_from, t_to)]
    agent = [_text(e.data) for e in events if e.type in AGENT_TEXT_TYPES and _in(e, t_from, t_to)]
    return (user[-1] if user else None), ("".join(agent) if agent else None)
