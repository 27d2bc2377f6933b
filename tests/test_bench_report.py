"""Report pieces of the latency benchmark: server events, JSON round trip, table, plot."""

from __future__ import annotations

import json

import pytest

from voice.bench.events import server_total_ms, turn_gap_ms, turn_stages, turn_texts
from voice.bench.plot import breakdown, plot_reports
from voice.bench.report import LatencyReport, TurnResult
from voice.client.peer import Event

EVENTS = [  # as sent by voice/server/session.py (schema in voice/server/events.py), client arrival times
    Event(1.0, {"type": "user_transcript", "turn": 1, "text": "hello", "t": 10}),
    Event(1.5, {"type": "latency", "turn": 1, "total_ms": 900.0,
                "stages": {"vad_endpoint_ms": 560.0, "asr_ms": 200.0, "llm_first_token_ms": 90.0,
                           "tts_first_audio_ms": 50.0}, "t": 20}),
    Event(1.6, {"type": "agent_text", "turn": 1, "text": "Hi there", "t": 21}),
    Event(4.0, {"type": "barge_in", "turn": 1, "played_ms": 800, "stop_ms": 0.5, "t": 30}),
    Event(4.0, {"type": "agent_done", "turn": 1, "text": "Hi", "interrupted": True, "t": 30}),
    Event(5.0, {"type": "user_transcript", "turn": 2, "text": "stop", "t": 40}),
    Event(5.5, {"type": "latency", "turn": 2, "total_ms": 700.0,
                "stages": {"vad_endpoint_ms": 500.0, "engine_ms": 200.0}, "t": 50}),
    Event(7.0, {"type": "agent_done", "turn": 2, "text": "OK", "interrupted": False, "gap_ms": 120, "t": 60}),
]


def test_events_per_turn() -> None:
    assert turn_stages(EVENTS, 0.5, 3.5) == {
        "vad_endpoint": 560.0, "asr": 200.0, "llm_first_token": 90.0, "tts_first_audio": 50.0}
    assert server_total_ms(EVENTS, 0.5, 3.5) == 900.0
    assert turn_texts(EVENTS, 0.5, 3.5) == ("hello", "Hi")
    # the barge-in turn's window also holds the end of the interrupted reply
    assert turn_texts(EVENTS, 3.5, None) == ("stop", "OK")
    assert turn_stages(EVENTS, 3.5, None) == {"vad_endpoint": 500.0, "engine": 200.0}
    assert turn_gap_ms(EVENTS, 3.5, None) == 120 and turn_gap_ms(EVENTS, 0.5, 3.5) is None  # (an older server)


def _report() -> LatencyReport:
    turns = [
        TurnResult(index=0, audio="a.wav", v2v_ms=1000.0, stages={"vad_endpoint": 560.0, "asr": 300.0},
                   server_total_ms=900.0),
        TurnResult(index=1, audio="b.wav", barge_in=True, agent_was_speaking=True, stopped=True,
                   stop_ms=400.0, v2v_ms=1200.0, stages={"vad_endpoint": 600.0, "asr": 400.0},
                   server_total_ms=1050.0),
        TurnResult(index=2, audio="c.wav", timed_out=True),
        TurnResult(index=3, audio="d.wav", v2v_ms=-200.0, early=True),
    ]
    return LatencyReport(engine="x", url="http://h:1", turns=turns, settings={}, date="2026-11-23")


def test_report_json_table_plot(tmp_path) -> None:  # noqa: ANN001
    rep = _report()
    c = rep.counts()
    assert c == {"turns": 4, "answered": 2, "early": 1, "timed_out": 1, "barge_ins": 1,
                 "barge_ins_not_stopped": 0, "underruns": 0, "reply_gap_ms": 0}
    assert rep.v2v().n == 2 and rep.v2v().max == 1200.0  # early / timed-out turns left out
    assert rep.unseen_by_server().p50 == 125.0
    d = json.loads(json.dumps(rep.to_dict()))
    back = LatencyReport.from_dict(d)
    assert back.turns == rep.turns and back.v2v() == rep.v2v()
    table = rep.table()
    assert "voice-to-voice" in table and "server: asr" in table and "early 1" in table
    idx, stacks, v2v = breakdown(rep)
    assert idx == [0, 1] and stacks["rest (transport, playout, queues)"] == [140.0, 200.0]
    plot_reports([rep, back], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_breakdown_of_a_speculative_turn_does_not_stack_overlapping_stages() -> None:
    """With a speculative reply the model stages ran during the endpoint: the bar is
    vad_endpoint + the server's rest to the first audio + what the server did not see."""
    t = TurnResult(index=0, audio="a.wav", v2v_ms=800.0, server_total_ms=700.0,
                   stages={"vad_endpoint": 300.0, "asr": 90.0, "llm_first_token": 120.0,
                           "tts_first_audio": 260.0, "speculative": 190.0})
    rep = LatencyReport(engine="cascade", url="http://h:1", turns=[t], settings={})
    _, stacks, _ = breakdown(rep)
    parts = {k: v[0] for k, v in stacks.items() if v[0]}
    assert parts == {"vad_endpoint": 300.0, "decision -> first audio (ASR/LLM/TTS overlap the endpoint)": 400.0,
                     "rest (transport, playout, queues)": 100.0}


def test_concurrency_steps_from_max() -> None:
    from model.common.errors import ParleyError
    from voice.bench.concurrency import ConcurrencyConfig, parse_steps, planned_steps, ramp

    assert parse_steps("8") == (8,) and ramp(8) == [1, 2, 4, 8] and ramp(96) == [1, 2, 4, 8, 16, 32, 64, 96]
    assert parse_steps("64,96,128") == (64, 96, 128)
    # given steps start with one session, whose p90 sets the limit (unless a limit is given)
    assert planned_steps(ConcurrencyConfig(max_sessions=128, steps=(64, 96, 128))) == [1, 64, 96, 128]
    assert planned_steps(ConcurrencyConfig(max_sessions=128, steps=(64, 128), p90_limit_ms=1500.0)) == [64, 128]
    assert planned_steps(ConcurrencyConfig(max_sessions=4)) == [1, 2, 4]
    for bad in ("0", "96,64", "64,64", "x", "8,"):
        with pytest.raises(ParleyError):
            parse_steps(bad)
