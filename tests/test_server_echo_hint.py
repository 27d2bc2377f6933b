"""The client's echo hint over real WebRTC (aiortc client <-> in-process server, tone engine
replying with real speech, real recorded user speech; helpers of test_server_rtc.py).

* the offer's `echo_hint` reaches the session (answer, ready event); a bad one is a 400;
* a barge-in 400 ms into the first reply, with no echo coming back: interrupts the agent before
  the guard has learned when the client says its echo is cancelled or it uses a headset; without
  a hint the worst-case guard (-10 dB echo path) takes the soft user for the agent's echo until
  it has learned, as before;
* a wrong hint ("cancelled" / "near_field", but the agent's own speech comes back at -10 dB):
  the echo does not interrupt the agent.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from test_server_rtc import Client, _echo_run, agent_speech, prompt48, start  # noqa: F401 - agent_speech: fixture
from voice.engines.tone import ToneConfig, ToneEngine
from model.common.audio_constants import VAD_CHUNK_MS
from voice.server.echo_guard import ECHO_LEARN_CHUNKS
from voice.server.turns import TurnConfig

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
LEARN_MS = ECHO_LEARN_CHUNKS * VAD_CHUNK_MS  # agent speech heard before the learned gain takes over


def test_the_offer_carries_the_echo_hint() -> None:
    async def main() -> None:
        runner, url, server = await start(ToneEngine(ToneConfig(delay_ms=50)))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(url + "/offer", json={"sdp": "v=0\r\nm=audio 9 x\r\n", "type": "offer",
                                                           "echo_hint": "headphones"}) as r:
                    assert r.status == 400 and "near_field" in (await r.json())["error"]
            for hint, want in (("cancelled", "cancelled"), (None, "unknown")):
                c = Client(url, echo_hint=hint)
                try:
                    await c.connect()
                    assert c.of("ready")[0]["echo_hint"] == want
                    sess = next(iter(server.sessions.values()))
                    assert sess.guard.hint.value == want
                finally:
                    await c.close()
                deadline = time.monotonic() + 5
                while server.sessions and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()

    asyncio.run(main())


async def _run(reply_wav: str, hint: str | None, echo_delay: float | None, user_after: float | None,
               user_rms: float = 0.04) -> dict:
    """One reply of real speech; optionally the user talks `user_after` s after its first audio."""
    user = prompt48("auth-incorrect", user_rms) if user_after is not None else None
    return await _echo_run(reply_wav, echo_delay, guard=True, user=user, hint=hint, user_after=user_after or 0.0)


def test_an_early_barge_in_interrupts_with_the_hint(agent_speech: str) -> None:
    """The user talks 400 ms after the first reply's audio is queued; no echo comes back. With the
    hint the agent stops before it has played LEARN_MS (the agent speech the guard needs to learn
    the echo path); without it the worst-case guard takes the user for the agent's echo until it
    has learned, so the agent plays on longer, as before, or to its end: the soft user heard while
    the guard learns is learned as echo too, and whether the rest of the utterance then gets
    through depends on timing (it did not on one CI machine). A user 12 dB under the agent needs
    the headset hint (-40 dB); one 6 dB under gets through with "cancelled" (-30 dB)."""
    played = {}
    for hint, user_rms in (("near_field", 0.02), (None, 0.02), ("cancelled", 0.04)):
        r = asyncio.run(_run(agent_speech, hint, echo_delay=None, user_after=0.4, user_rms=user_rms))
        print(hint, user_rms, {k: v for k, v in r.items() if k != "done"})
        assert r["barge_in"] == r["done"]["interrupted"], (hint, r)
        if hint is not None:
            assert r["barge_in"], (hint, r)
        played[hint] = r["played_ms"] if r["barge_in"] else r["done"]["played_ms"]
    assert played["near_field"] < LEARN_MS and played["cancelled"] < LEARN_MS, played
    assert played[None] > played["near_field"], played


def test_a_wrong_hint_does_not_let_the_echo_interrupt(agent_speech: str) -> None:
    """The client says "cancelled" (or "near_field") but the agent's speech comes back at -10 dB."""
    for hint, delay in (("cancelled", 0.05), ("cancelled", 0.12), ("cancelled", 0.2), ("near_field", 0.2)):
        r = asyncio.run(_run(agent_speech, hint, echo_delay=delay, user_after=None))
        print(hint, delay, {k: v for k, v in r.items() if k != "done"})
        assert not r["barge_in"] and not r["done"]["interrupted"] and r["starts"] == 1, (hint, delay, r)
        assert r["done"]["played_ms"] > 5000  # the whole reply was played

