"""Data-channel events sent by `parley serve` to the client (JSON text messages).

The client creates a data channel (any label, e.g. "events") before its offer; the server
sends one JSON object per message on it. Every object has "type" and "t" (milliseconds since
the session started, server clock). Turn numbers start at 1.

    {"type": "ready", "session": "ab12cd", "engine": "cascade", "echo_hint": "cancelled", "t": 0}
        echo_hint: the client's echo path as the server took it from the offer (EchoHint)
    {"type": "vad", "state": "quiet|starting|speaking|stopping", "t": ...}
    {"type": "turn_start", "turn": 3, "barge_in": false, "t": ...}
        the VAD confirmed user speech (turn 3 begins); barge_in: the agent was talking
    {"type": "turn_end", "turn": 3, "speech_ms": 2140, "t": ...}
        the VAD decided the user's turn is over (the reply starts now)
    {"type": "user_transcript", "turn": 3, "text": "what is the capital of france", "t": ...}
    {"type": "agent_text", "turn": 3, "text": " The capital", "t": ...}
        reply text as generated (deltas; join them for the whole generated text)
    {"type": "latency", "turn": 3, "total_ms": 812.4,
     "stages": {"vad_endpoint_ms": 608.0, "asr_ms": 95.1, "llm_first_token_ms": 60.2,
                "tts_first_audio_ms": 49.1}, "t": ...}
        sent when the first agent audio of the turn is queued: total_ms = end of user speech
        -> first agent audio (server side); the stages add up to it (see engines/base.py)
    {"type": "barge_in", "turn": 3, "played_ms": 1220, "stop_ms": 0.1, "t": ...}
        the user interrupted the reply to turn 3; stop_ms: VAD decision -> output flushed
    {"type": "agent_done", "turn": 3, "text": "The capital of France is Paris.",
     "interrupted": false, "played_ms": 2300, "gap_ms": 0, "t": ...}
        the reply is over; text = what was actually played (kept in the history); gap_ms: silence
        the output had to insert while the engine was still generating (it fell behind real time)
    {"type": "error", "message": "...", "t": ...}
        an engine failure on one turn (the session goes on)
"""

from __future__ import annotations

VAD = "vad"
READY = "ready"
TURN_START = "turn_start"
TURN_END = "turn_end"
USER_TRANSCRIPT = "user_transcript"
AGENT_TEXT = "agent_text"
LATENCY = "latency"
BARGE_IN = "barge_in"
AGENT_DONE = "agent_done"
ERROR = "error"

ALL_TYPES = (READY, VAD, TURN_START, TURN_END, USER_TRANSCRIPT, AGENT_TEXT, LATENCY, BARGE_IN,
             AGENT_DONE, ERROR)
