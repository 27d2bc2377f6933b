"""Batched teacher decoding: many chat replies at once on one Llama (the GPU machine's LLM stage).

    replies = chat_batch(chat, [ChatRequest(messages, seed), ...], max_rows=128)

The requests are rows of ``model.text_batch.BatchedTextGenerator`` (continuous batching): at most
``max_rows`` decode together and a waiting request joins as soon as a row leaves. Each row keeps
its own sampling RNG (seeded as the one-by-one path), repetition history, incremental
detokenizer and the teacher's stop rule (``distill.stages.enough_sentences``: a row cut by it
leaves before the next step, without the detokenizer's tail; a natural end keeps the tail), so
a reply is what ``RealStages.llm`` gives one by one, up to float rounding of batched matmuls
(equal on CPU fp32 in the tests).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from distill.stages import LLM_MAX_NEW_TOKENS, LLM_MAX_SENTENCES, LLM_TEMPERATURE, enough_sentences
from model.sampling import SamplingParams
from model.text_batch import BatchedTextGenerator, RowRequest
from model.text_generator import Step


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    seed: int


@dataclass(frozen=True)
class ChatSettings:
    """The teacher's decoding settings (the numbers ``RealStages.llm`` uses one by one)."""

    max_new_tokens: int = LLM_MAX_NEW_TOKENS
    temperature: float = LLM_TEMPERATURE
    top_p: float = 0.9
    max_sentences: int = LLM_MAX_SENTENCES  # stop a row after its 2nd sentence end


class _ReplySink:
    """A ``model.text_batch.RowSink`` collecting one reply as ``RealStages.llm`` does."""

    def __init__(self, max_sentences: int) -> None:
        self.max_sentences = max_sentences
        self.tokens: list[int] = []
        self.logprobs: list[float | None] = []
        self.parts: list[str] = []
        self.cut = False  # the stop rule ended the reply: the row leaves before the next step
        self.error: BaseException | None = None

    def on_step(self, step: Step) -> None:
        if self.cut:  # the rule's token was the row's last (token limit): its tail is not said
            return
        if step.token >= 0:
            self.tokens.append(step.token)
            self.logprobs.append(round(step.logprob, 4) if step.logprob is not None else None)
        if step.text:
            self.parts.append(step.text)
            self.cut = enough_sentences(self.parts, self.max_sentences)

    def on_end(self, error: BaseException | None) -> None:
        self.error = error

    def cancelled(self) -> bool:
        return self.cut


def chat_batch(chat, requests: list[ChatRequest], cs: ChatSettings = ChatSettings(),  # noqa: ANN001
               max_rows: int = 128, join_min: int | None = None) -> list[tuple[str, dict]]:
    """LocalChatLLM + requests -> [(reply text, {"tokens", "logprobs"})], as ``RealStages.llm`` one
    by one; ``max_rows`` replies decode together, the rest join as rows leave. A join costs one
    prefill forward, so waiting requests join once ``join_min`` rows are free (default a quarter
    of ``max_rows``; at once when all the rest fit or nothing decodes), not at every step."""
    join_min = max(1, max_rows // 4) if join_min is None else max(1, join_min)
    sinks = [_ReplySink(cs.max_sentences) for _ in requests]
    todo = deque(RowRequest(chat._prompt(r.messages, cs.max_new_tokens), cs.max_new_tokens,
                            SamplingParams(temperature=cs.temperature, top_p=cs.top_p, seed=r.seed,
                                           repetition_penalty=chat.repetition_penalty), s, logprobs=True)
                 for r, s in zip(requests, sinks))
    gen = BatchedTextGenerator(chat.engine, max_rows=max_rows)
    try:
        while todo or gen.n_active:
            gen.drop_cancelled()  # rows cut by the rule: their places go to waiting requests now
            if todo and (gen.free >= min(join_min, len(todo)) or not gen.n_active):
                gen.join([todo.popleft() for _ in range(min(gen.free, len(todo)))])
            if gen.n_active:
                gen.step()
    finally:
        gen.close()
    for s in sinks:
        if s.error is not None:
            raise s.error
    return [("".join(s.parts), {"tokens": s.tokens, "logprobs": s.logprobs}) for s in sinks]
