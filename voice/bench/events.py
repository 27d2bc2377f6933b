"""Reading the server's data-channel events (schema: `voice/server/events.py`): stages and texts.

Latency figures arrive as {"type": "latency", "total_ms": ..., "stages": {"vad_endpoint_ms":
..., "asr_ms": ..., ...}}; stage names are kept as the server sends them, without "_ms".
Events are assigned to a benchmark turn by their arrival time at the client (the server's
turn numbers count VAD turns, which need not match the benchmark's utterances one to one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

LATENCY_TYPES = ("latency", "turn_latency", "metrics")
USER_TEXT_TYPES = ("user_transcript", "transcript", "user_text")
AGENT_TEXT_TYPES = ("agent_text",)
AGENT_DONE = "agent_done"
BARGE_IN = "barge_in"
NOT_STAGES = ("turn", "turn_id", "id", "t", "time", "timestamp", "seq", "total_ms")


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


def turn_event(
    events: Sequence[_Event], kind: str, t_from: float, t_to: float | None
) -> dict | None:
    """The first event of a type received in [t_from, t_to)."""
    for e in events:
        if e.type == kind and _in(e, t_from, t_to):
            return e.data
    return None


def server_total_ms(events: Sequence[_Event], t_from: float, t_to: float | None) -> float | None:
    """The server's own end-of-speech -> first-audio figure for the turn, if sent."""
    for e in events:
        if e.type in LATENCY_TYPES and _in(e, t_from, t_to):
            v = e.data.get("total_ms")
            return float(v) if isinstance(v, (int, float)) else None
    return None


def _text(data: dict) -> str:
    for k in ("text", "transcript", "value"):
        if isinstance(data.get(k), str):
            return data[k]
    return ""


def turn_texts(
    events: Sequence[_Event], t_from: float, t_to: float | None
) -> tuple[str | None, str | None]:
    """(user transcript, agent text) of the server turn answered in [t_from, t_to).

    The server turn is the one of the last transcript received in the window (after a
    barge-in the window also holds the end of the interrupted previous reply). The agent text
    is what was played ("agent_done"), or the generated deltas when no "agent_done" came.
    """
    user, same = _server_turn(events, t_from, t_to)
    if user is None:
        return None, None
    done = [_text(e.data) for e in same if e.type == AGENT_DONE]
    agent = [_text(e.data) for e in same if e.type in AGENT_TEXT_TYPES]
    agent_text = done[0] if done else ("".join(agent) if agent else None)
    return _text(user.data), agent_text


def turn_gap_ms(events: Sequence[_Event], t_from: float, t_to: float | None) -> int | None:
    """Silence the server inserted in the reply of the server turn answered in [t_from, t_to)
    (``agent_done``'s ``gap_ms``: its engine behind real time); None when not reported."""
    _, same = _server_turn(events, t_from, t_to)
    gaps = [e.data["gap_ms"] for e in same if e.type == AGENT_DONE and "gap_ms" in e.data]
    return gaps[0] if gaps else None


def _server_turn(events: Sequence[_Event], t_from: float, t_to: float | None) -> tuple[_Event | None, list[_Event]]:
    """The last user-transcript event in the window and every event of its server turn from t_from on."""
    user = [e for e in events if _in(e, t_from, t_to) and e.type in USER_TEXT_TYPES]
    if not user:
        return None, []
    turn = user[-1].data.get("turn")
    return user[-1], [e for e in events if e.data.get("turn") == turn and e.t >= t_from]
