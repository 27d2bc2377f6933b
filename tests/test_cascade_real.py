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


def test_speakable_strips_markdown() -> None:
    assert speakable("**Paris** is the capital.\n- Rome\n- *Berlin*") == "Paris is the capital. Rome. Berlin"
    assert speakable("### Steps\n1. Boil `water` 🍵") == "Steps. Boil water"
    assert speakable("See [the docs](http://x.y) or https://a.b/c.") == "See the docs or a link"
    assert speakable("Plain text, fine!") == "Plain text, fine!"
