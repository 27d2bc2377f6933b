"""The cascade on its real bundled models (faster-whisper, SmolLM2, Piper) and synthetic speech:
the France question answered with Paris, replies speakable, the second turn reuses the KV cache."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from voice.bench.facts import FACTS, speak
from voice.engines.base import AgentAudio, UserText, UserTurn
from voice.engines.cascade import CascadeConfig, create
from voice.engines.speakable import speakable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    e = create(CascadeConfig())
    yield e
    asyncio.run(e.close())


async def _ask(session, audio, turn: int) -> tuple[str, str]:
    heard, said = "", []
    now = time.monotonic()
    async for ev in session.respond(UserTurn(turn, audio, now, now)):
        if isinstance(ev, UserText):
            heard = ev.text
        elif isinstance(ev, AgentAudio):
            said.append(ev.text)
    reply = " ".join(said)
    session.commit(turn, reply, False)
    return heard, reply


def test_capital_of_france_is_paris_in_two_voices(engine) -> None:
    france = FACTS[0]
    assert "France" in france.question
    for voice in ("joe", "flite:slt"):
        session = engine.session()
        heard, reply = asyncio.run(_ask(session, speak(france.question, voice), 1))
        assert "capital of France" in heard
        assert "Paris" in reply, reply
        assert not re.search(r"[*#`]", reply)
        # second turn: only the new tokens are prefilled
        _, reply2 = asyncio.run(_ask(session, speak("What is the capital of Italy?", voice), 2))
        assert "Rome" in reply2
        assert session.llm_state.reused > 100


def test_batched_engine_answers_sessions_asking_at_once(engine) -> None:
    """CascadeConfig(batch=True) forced on CPU, on the same models: two sessions ask at the same
    moment (one batched ASR pass, two rows of one LLM decode loop), each hears its answer, and the
    second turn still reuses the session's kept cache."""
    from voice.engines.cascade import CascadeEngine

    e = CascadeEngine(CascadeConfig(batch=True), asr=engine.asr, llm=engine.llm, tts=engine.tts)
    e.prefix_state = engine.prefix_state
    assert e.llm_batcher is not None
    sessions = [e.session(), e.session()]
    qs = [(FACTS[0].question, "What is the capital of Italy?"), ("What is the capital of Italy?", FACTS[0].question)]

    async def both(turn: int) -> list[tuple[str, str]]:
        asks = (_ask(s, speak(q[turn - 1], "flite:slt"), turn) for s, q in zip(sessions, qs))
        return list(await asyncio.gather(*asks))

    try:
        for turn in (1, 2):
            for (heard, reply), q in zip(asyncio.run(both(turn)), qs):
                assert q[turn - 1].rstrip("?").lower() in heard.lower().rstrip("?.")
                assert ("Paris" if "France" in q[turn - 1] else "Rome") in reply, reply
        assert all(s.llm_state.reused > 100 for s in sessions)
        assert e.llm_batcher.gen.stats.rows_peak == 2 and e.asr_batcher.stats.items == 4
    finally:
        asyncio.run(e.close())


def test_speakable_strips_markdown() -> None:
    assert speakable("**Paris** is the capital.\n- Rome\n- *Berlin*") == "Paris is the capital. Rome. Berlin"
    assert speakable("### Steps\n1. Boil `water` 🍵") == "Steps. Boil water"
    assert speakable("See [the docs](http://x.y) or https://a.b/c.") == "See the docs or a link"
    assert speakable("Plain text, fine!") == "Plain text, fine!"
