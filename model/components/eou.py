"""Semantic end of utterance: the chat LLM's probability that the user's turn ends after `text`.

    p = end_of_turn_prob(llm, "What is the capital of")          # low: the sentence goes on
    p = end_of_turn_prob(llm, "What is the capital of France?")  # high

The score is the probability mass of ending tokens (<|im_end|>, ".", "?", "!") right after "<|im_start|>user\\n{text}" in the model's ChatML
template, optionally after the last agent reply as context (as LiveKit's turn detector, a
fine-tuned SmolLM2-135M, does with its own weights; this uses the bundled instruct model as is).
Text is lower-cased and stripped of final punctuation first: Whisper punctuates a cut-off clip
as if it were complete, so punctuation would leak the answer. One forward of ~10-40 tokens.
"""

from __future__ import annotations

import re

import numpy as np

CONTEXT_WORDS = 12  # of the agent's reply, its end: 28 vs 41 ms for a 41-word reply (2 cores, idle)


def normalize(text: str) -> str:
    """Lower case, no punctuation except apostrophes, single spaces."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def end_of_turn_prob(llm, text: str, context: str | None = None) -> float:  # noqa: ANN001 - LocalChatLLM
    """P(the user's turn ends here | text[, the last CONTEXT_WORDS words of the agent's reply])."""
    import torch  # noqa: PLC0415

    tok = llm.tokenizer
    words = normalize(text)
    if not words:
        return 0.0
    prompt = ""
    if context:
        prompt = f"<|im_start|>assistant\n{' '.join(normalize(context).split()[-CONTEXT_WORDS:])}<|im_end|>\n"
    ids = tok.encode(f"{prompt}<|im_start|>user\n{words}")
    gen = llm.engine
    model = gen.prefill_model or gen.model
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=gen.device), last_only=True)[0, -1].float().cpu().numpy()
    x = logits.astype(np.float64) - logits.max()
    p = np.exp(x) / np.exp(x).sum()
    return float(p[_end_ids(tok)].sum())


def _end_ids(tok) -> list[int]:  # noqa: ANN001
    ids = {tok.eos_id}
    for s in (".", "?", "!"):
        enc = tok.encode(s)
        if len(enc) == 1:
            ids.add(enc[0])
    return sorted(ids)
