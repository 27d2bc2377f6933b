"""Semantic end of utterance: SmolLM2's view of whether the user's turn ends after `text`.

    p = end_of_turn_prob(llm, "What is the capital of")          # low: the sentence goes on
    p = end_of_turn_prob(llm, "What is the capital of France?")  # high
    h, logmass = end_features(llm, "What is the capital of")     # for the learned head (eou_head.py)

One forward of "<|im_start|>user\\n{text}" in the model's ChatML template (~10-40 tokens),
optionally after the last agent reply as context, gives two things at the last position:
- the final hidden state (after the final RMSNorm, `dim` 576 for SmolLM2-135M): the input of the
  learned head (`model/components/eou_head.py`, as LiveKit's turn detector learns on SmolLM2);
- the log probability mass of ending tokens (<|im_end|>, ".", "?", "!"): the old score by itself
  (`end_of_turn_prob`), a feature of the head.
Text is lower-cased and stripped of punctuation first: Whisper punctuates a cut-off clip as if
it were complete, so punctuation would leak the answer.

Training computes the features of every word-boundary prefix of an utterance from one forward
(`features_at`): the model is causal and the prefix's tokens are a prefix of the whole's tokens
(byte-level BPE pre-splits at spaces), so position t sees exactly what the prefix's forward sees.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

CONTEXT_WORDS = 12  # of the agent's reply, its end: 28 vs 41 ms for a 41-word reply (2 cores, idle)


def normalize(text: str) -> str:
    """Lower case, no punctuation except apostrophes, single spaces."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def prompt_text(words: str, context: str | None = None) -> str:
    """The scored string: [agent context turn] + the open user turn (`words` already normalized)."""
    prompt = ""
    if context:
        prompt = f"<|im_start|>assistant\n{' '.join(normalize(context).split()[-CONTEXT_WORDS:])}<|im_end|>\n"
    return f"{prompt}<|im_start|>user\n{words}"


def _model(llm):  # noqa: ANN001, ANN202 - LocalChatLLM -> Llama
    gen = llm.engine
    return gen.prefill_model or gen.model, gen.device


def end_features(llm, text: str, context: str | None = None) -> tuple[np.ndarray, float] | None:  # noqa: ANN001
    """(final hidden state (dim,), log end-token mass) at the end of `text`; None for empty text."""
    import torch  # noqa: PLC0415

    words = normalize(text)
    if not words:
        return None
    from model.components.eou_graph import graphed_hidden  # noqa: PLC0415

    ids = llm.tokenizer.encode(prompt_text(words, context))
    model, device = _model(llm)
    run = graphed_hidden(llm)  # CUDA: a graph per length bucket (36 -> a few ms on an H200)
    with torch.inference_mode():
        g = run(ids) if run is not None else None
        h = g[None] if g is not None else model(torch.tensor([ids], device=device), return_hidden=True,
                                                 last_only=True)[0]  # (1, dim)
        logits = model.output(h).float().cpu().numpy()  # (1, vocab)
    return h[0].float().cpu().numpy(), float(_log_mass(logits, end_ids(llm.tokenizer))[0])


def end_of_turn_prob(llm, text: str, context: str | None = None) -> float:  # noqa: ANN001 - LocalChatLLM
    """P(an ending token next | text[, the last CONTEXT_WORDS words of the agent's reply])."""
    f = end_features(llm, text, context)
    return 0.0 if f is None else float(np.exp(f[1]))


def features_at(llm, ids: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],  # noqa: ANN001
                batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Features at chosen positions of many token sequences: (hidden (N, dim) float32, log mass (N,)),
    rows in the order of (sequence, position). Sequences run right-padded in batches: causal
    attention keeps padding out of every real position."""
    import torch  # noqa: PLC0415

    model, device = _model(llm)
    ends = end_ids(llm.tokenizer)
    hs, ms = [], []
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            T = max(len(ids[i]) for i in rows)
            x = torch.zeros(len(rows), T, dtype=torch.long)
            for r, i in enumerate(rows):
                x[r, : len(ids[i])] = torch.tensor(ids[i])
            h = model(x.to(device), return_hidden=True)  # (B, T, dim)
            for r, i in enumerate(rows):
                sel = h[r, list(positions[i])]  # (n_i, dim)
                logits = model.output(sel).float().cpu().numpy()
                out[i] = (sel.float().cpu().numpy(), _log_mass(logits, ends))
    for i in range(len(ids)):
        hs.append(out[i][0])
        ms.append(out[i][1])
    return np.concatenate(hs), np.concatenate(ms)


def _log_mass(logits: np.ndarray, ends: list[int]) -> np.ndarray:
    """log sum softmax(logits)[ends] per row, (N, vocab) -> (N,)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(x).sum(axis=-1))
    return np.log(np.exp(x[:, ends]).sum(axis=-1)) - lse


def end_ids(tok) -> list[int]:  # noqa: ANN001
    """<|im_end|> and the single-token sentence ends."""
    ids = {tok.eos_id}
    for s in (".", "?", "!"):
        enc = tok.encode(s)
        if len(enc) == 1:
            ids.add(enc[0])
    return sorted(ids)
