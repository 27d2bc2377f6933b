"""The cascade's streaming and cancellation, with fake models whose timing is known:
first audio after the first clause (not the whole reply), barge-in stops the LLM before its
next token and drops queued TTS, the history keeps what was played only."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from voice.engines.base import AgentAudio, AgentText, Stage, UserText, UserTurn
from voice.engines.cascade import CascadeConfig, CascadeEngine, take_clauses

REPLY = "The capital of France is Paris. It is a big city, with many old bridges and museums to visit."
TOKEN_S = 0.03


class FakeASR:
    def __init__(self, text: str = "What is the capital of France?") -> None:
        self.text = text

    def transcribe(self, audio: np.ndarray) -> str:
        time.sleep(0.02)
        return self.text


class FakeLLM:
    def __init__(self) -> None:
        self.generated = 0
        self.messages: list[list[dict]] = []
        self.done = threading.Event()

    def stream_chat(self, messages, **kw):  # noqa: ANN001, ANN003, ANN201
        self.messages.append(messages)
        try:
            for w in REPLY.split(" "):
                time.sleep(TOKEN_S)
                self.generated += 1
                yield w + " "
        finally:
            self.done.set()


class FakeTTS:
    sample_rate = 16000

    def __init__(self) -> None:
        self.clauses: list[str] = []

    def synthesize(self, text: str) -> np.ndarray:
        time.sleep(0.05)
        self.clauses.append(text)
        return np.full(1600 * len(text.split()), 0.1, np.float32)


def _engine(asr_text: str = "What is the capital of France?"):
    return CascadeEngine(CascadeConfig(), asr=FakeASR(asr_text), llm=FakeLLM(), tts=FakeTTS())


def _turn() -> UserTurn:
    t = time.monotonic()
    return UserTurn(1, np.zeros(16000, np.float32), t, t)


def test_take_clauses() -> None:
    assert take_clauses("The capital of France is") == ([], "The capital of France is")
    assert take_clauses("Yes, of course. The capital") == (["Yes, of course."], "The capital")
    assert take_clauses("Yes, sure. The capital") == ([], "Yes, sure. The capital")  # 2 words: wait
    assert take_clauses("Hi. Ok") == ([], "Hi. Ok")  # too short to speak alone yet
    assert take_clauses("The end", final=True) == (["The end"], "")
    # no punctuation for too long: cut before a conjunction, else before the last word
    long = "Paris is the capital of France and it is known for"
    assert take_clauses(long, max_words=8) == (["Paris is the capital of France"], "and it is known for")
    assert take_clauses(long, max_words=20) == ([], long)
    assert take_clauses("one two three four five six seven eight nine ten", max_words=8) == (
        ["one two three four five six seven eight nine"], "ten")


def test_first_audio_after_the_first_clause_while_the_llm_goes_on() -> None:
    async def main() -> None:
        e = _engine()
        s = e.session()
        t0 = time.monotonic()
        evs = []
        async for ev in s.respond(_turn()):
            evs.append((time.monotonic() - t0, ev))
        first_audio = next((t, ev) for t, ev in evs if isinstance(ev, AgentAudio))
        assert first_audio[1].text == "The capital of"  # FIRST_MAX_WORDS: first audio after 3 words
        n_words_before = sum(isinstance(ev, AgentText) for t, ev in evs if t <= first_audio[0])
        assert n_words_before < len(REPLY.split()) - 5  # audio long before the reply is complete
        assert [ev.text for _, ev in evs if isinstance(ev, UserText)] == ["What is the capital of France?"]
        stages = {ev.name for _, ev in evs if isinstance(ev, Stage)}
        assert stages == {"asr", "llm_first_token", "tts_first_audio"}
        spoken = " ".join(ev.text for _, ev in evs if isinstance(ev, AgentAudio))
        assert spoken == REPLY
        await e.close()

    asyncio.run(main())


def test_cancel_stops_llm_and_tts_and_history_keeps_played_words() -> None:
    async def main() -> None:
        e = _engine()
        s = e.session()
        agen = s.respond(_turn())
        async for ev in agen:
            if isinstance(ev, AgentAudio):
                break  # barge-in right after the first clause is queued
        await agen.aclose()
        n = e.llm.generated
        assert e.llm.done.wait(1.0)  # the LLM thread left its loop
        await asyncio.sleep(0.3)
        assert e.llm.generated <= n + 1, (n, e.llm.generated)  # at most the token in flight
        assert e.llm.generated < len(REPLY.split())
        n_tts = len(e.tts.clauses)
        await asyncio.sleep(0.3)
        assert len(e.tts.clauses) == n_tts <= 2  # queued clauses were dropped
        s.commit(1, "The capital of France", interrupted=True)
        assert s.history == [{"role": "user", "content": "What is the capital of France?"},
                             {"role": "assistant", "content": "The capital of France"}]
        # the next turn's prompt carries exactly that history
        agen = s.respond(_turn())
        async for _ in agen:
            pass
        sent = e.llm.messages[-1]
        assert sent[0]["role"] == "system" and sent[1:1 + len(e.examples)] == e.examples  # few-shot turns
        assert sent[1 + len(e.examples):] == [*s.history[:2], s.history[2]]
        await e.close()

    asyncio.run(main())


def test_noise_transcribed_as_nothing_gets_no_reply() -> None:
    async def main() -> None:
        e = _engine(asr_text="")
        s = e.session()
        evs = [ev async for ev in s.respond(_turn())]
        assert not any(isinstance(ev, (AgentAudio, AgentText)) for ev in evs)
        assert s.history == [] and e.llm.messages == []
        await e.close()

    asyncio.run(main())


def test_speculative_score_runs_beside_the_reply_and_comes_before_it() -> None:
    """At a pause the end-of-turn score does not wait for the LLM, nor the LLM for the score
    (the score below blocks until the LLM has started: serial order would never finish it), and
    the score is yielded before any reply item (the server holds those until the turn ends)."""
    async def main() -> None:
        e = _engine()
        s = e.session()
        s.speculative = True
        llm_started = threading.Event()
        stream_chat = e.llm.stream_chat

        def spy(messages, **kw):  # noqa: ANN001, ANN003, ANN202
            llm_started.set()
            return stream_chat(messages, **kw)

        e.llm.stream_chat = spy
        s.end_of_turn = lambda text: 0.9 if llm_started.wait(5.0) else 0.0  # type: ignore[method-assign]
        t = time.monotonic()
        evs = [ev async for ev in s.respond(UserTurn(1, np.zeros(16000, np.float32), t, t, final=False))]
        kinds = [type(ev).__name__ for ev in evs if not isinstance(ev, Stage)]
        assert kinds[:2] == ["UserText", "EndOfTurn"] and evs[[type(x).__name__ for x in evs].index("EndOfTurn")].prob == 0.9
        assert " ".join(ev.text for ev in evs if isinstance(ev, AgentAudio)) == REPLY
        await e.close()

    asyncio.run(main())

