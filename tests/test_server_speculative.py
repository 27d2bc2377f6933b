"""Speculative start in the server session: a reply started at the first pause is held, played when
the turn ends (early on a high end-of-turn score, or at the fallback), never when the user goes on.
Fast: a fake engine and synthetic VAD probabilities (no models, no WebRTC)."""

from __future__ import annotations

import asyncio

import numpy as np

from model.common.audio_constants import VAD_CHUNK, VAD_CHUNK_S
from voice.engines.base import AgentAudio, EndOfTurn, Engine, EngineSession, Stage, UserText, UserTurn
from voice.server.session import Session
from voice.server.echo_guard import level_db
from voice.server.turns import TurnConfig


class _PC:
    connectionState = "new"

    def on(self, _name: str):  # noqa: ANN202
        return lambda f: f

    async def close(self) -> None:
        pass


class _Spec(EngineSession):
    speculative = True

    def __init__(self, prob: float) -> None:
        self.prob, self.calls, self.discarded, self.committed = prob, [], [], []

    async def respond(self, turn: UserTurn):  # noqa: ANN201
        self.calls.append(turn)
        yield Stage("asr", 1.0)
        yield UserText("hello")
        if not turn.final:
            yield EndOfTurn(self.prob)
        yield AgentAudio(np.full(4800, 0.1, np.float32), 48000, "Hi there.")

    def discard(self, turn: int) -> None:
        self.discarded.append(turn)

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:
        self.committed.append(turn)


class _Engine(Engine):
    def __init__(self, prob: float) -> None:
        self.sess = _Spec(prob)

    def session(self) -> EngineSession:
        return self.sess


async def _drive(prob: float, probs: list[float]) -> tuple[Session, list[str]]:
    cfg = TurnConfig(pause_ms=192.0, semantic_stop_ms=800.0, eot_threshold=0.5)
    s = Session(_PC(), _Engine(prob), vad=type("V", (), {"stream": lambda self: None})(), vad_batcher=None, cfg=cfg)
    sent: list[str] = []
    s.send = lambda type_, **kw: sent.append(type_)  # type: ignore[method-assign]
    chunk = np.full(VAD_CHUNK, 0.1, np.float32)
    t = 0.0
    for p in probs:
        t += VAD_CHUNK_S
        x = chunk if p > 0.5 else chunk * 1e-4
        (s._turn_audio if s._in_turn else s._recent).append((t, x))
        for e in s.detector.push(p, level_db(x), t):
            s._on_turn_event(e)
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    return s, sent


def test_high_score_ends_the_turn_at_the_pause_and_plays_the_held_reply() -> None:
    async def main() -> None:
        s, sent = await _drive(0.9, [0.9] * 20 + [0.05] * 10)  # 320 ms of silence < 800 ms fallback
        assert "turn_end" in sent and "latency" in sent  # ended early by the score, reply played
        assert s.engine_session.calls[0].final is False and len(s.engine_session.calls) == 1
        assert len(s.engine_session.calls[0].audio) >= 20 * VAD_CHUNK  # started at the first silent chunk
        assert s.out.busy
        await s.close()

    asyncio.run(main())


def test_a_high_score_before_the_pause_still_waits_for_the_pause() -> None:
    """The reply starts at the first silent chunk and its score is known at once, but the turn
    ends only once the pause reaches pause_ms (192 ms = 6 chunks): a shorter silence goes on."""
    async def main() -> None:
        s, sent = await _drive(0.9, [0.9] * 20 + [0.05] * 4)
        assert len(s.engine_session.calls) == 1 and s.engine_session.calls[0].final is False
        assert "turn_end" not in sent and not s.out.busy  # held: 128 ms of silence
        s2, sent2 = await _drive(0.9, [0.9] * 20 + [0.05] * 4 + [0.9] * 5 + [0.05] * 7)
        assert s2.engine_session.discarded == [1] and len(s2.engine_session.calls) == 2
        assert sent2.count("turn_end") == 1 and sent2.count("latency") == 1
        await s.close()
        await s2.close()

    asyncio.run(main())


def test_low_score_waits_for_the_fallback_then_plays_the_same_reply() -> None:
    async def main() -> None:
        s, sent = await _drive(0.1, [0.9] * 20 + [0.05] * 10)
        assert "turn_end" not in sent and "latency" not in sent and not s.out.busy  # held
        s2, sent2 = await _drive(0.1, [0.9] * 20 + [0.05] * 30)  # 960 ms: fallback ends the turn
        assert "turn_end" in sent2 and "latency" in sent2
        assert len(s2.engine_session.calls) == 1  # the speculative reply was used, not a new one
        await s.close()
        await s2.close()

    asyncio.run(main())


def test_user_going_on_discards_the_speculative_reply() -> None:
    async def main() -> None:
        s, sent = await _drive(0.1, [0.9] * 20 + [0.05] * 10 + [0.9] * 10 + [0.05] * 30)
        es = s.engine_session
        assert es.discarded == [1]  # the reply from the first pause was thrown away
        assert len(es.calls) == 2 and sent.count("latency") == 1  # only the second one played
        assert sent.count("turn_end") == 1
        await s.close()

    asyncio.run(main())


def test_a_one_chunk_pause_comes_with_the_first_silent_chunk() -> None:
    """`--pause-ms 32`: the turn may end as soon as the end-of-turn score says so (TurnPause with STOPPING)."""
    from voice.server.turns import TurnDetector, TurnPause, TurnPhase, VadChange
    from tests.test_server_turns import of, run

    for pause_ms, at in ((32.0, 20), (64.0, 21)):
        evs = run(TurnDetector(TurnConfig(pause_ms=pause_ms, stop_ms=800.0)), [0.9] * 20 + [0.05] * 5)
        assert [i for i, _ in of(evs, TurnPause)] == [at], pause_ms
        stopping = [i for i, e in evs if isinstance(e, VadChange) and e.state is TurnPhase.STOPPING]
        assert stopping == [20]  # the speculative reply starts here, before its pause
