"""Stream layout of the direct speech model: which token sits at which step (pure, no torch modules).

One step of the temporal transformer = one codec frame (25 Hz / 40 ms with codec v2). Three streams share the
step axis: the user's codec tokens (K codebooks), the agent's codec tokens (K codebooks, codebook
k delayed by ``delays[k]`` steps) and the agent's inner-monologue text (one text token per step,
PAD between words, as in Moshi). At step t the model reads the user's frame t together with its
own previous outputs (step t-1) and writes the text token and the agent's delayed audio column of
step t. With delays (0, 1, 1, 1, 1, 1, 1, 1) (Moshi's acoustic delay) and K = 4 for brevity:

```
 step t             0      1      2      3      4    ...
 ─── inputs at t ────────────────────────────────────────
 text  (t-1)       BOS    w0     PAD    w1     w2
 agent (t-1) k=0   INIT   a0.0   a0.1   a0.2   a0.3      a<k>.<frame>: agent codebook k of frame
             k=1   INIT   INIT   a1.0   a1.1   a1.2      INIT: nothing generated yet for this
             k=2   INIT   INIT   a2.0   a2.1   a2.2            codebook (no loss there either)
             k=3   INIT   INIT   a3.0   a3.1   a3.2
 user  (t)   k=*   u*.0   u*.1   u*.2   u*.3   u*.4      user frame t, heard at once
 ─── outputs at t ───────────────────────────────────────
 text              w0     PAD    w1     w2     PAD       inner monologue, aligned to agent speech
 agent       k=0   a0.0   a0.1   a0.2   a0.3   a0.4      the delayed column: codebook k of frame
             k=1   INIT   a1.0   a1.1   a1.2   a1.3        t - delays[k] (the depth transformer
             k=2   INIT   a2.0   a2.1   a2.2   a2.3        writes it codebook by codebook, after
             k=3   INIT   a3.0   a3.1   a3.2   a3.3        the text token)
 utext (aux)       PAD    PAD    v0     PAD    v1        optional: the user's words, each token
                                                         ``user_text_delay`` frames after the
                                                         frame where its word starts in the user
                                                         stream (heard before it is written);
                                                         an output only, never an input
```

The agent frame f can be decoded once step f + max(delays) is done: the acoustic delay costs
``max(delays)`` frames of latency (80 ms for Moshi's pattern, 0 for the default here). Silent
agent frames carry the codec's tokens of silence (the stream is never empty), so the decoder
always gets real codes. ``text_lead`` (training data only) puts each word's text tokens that many
frames before its speech, so the model writes a word before it says it. Special token ids sit past
the real vocabularies:
text ``PAD = text_card``, ``BOS = text_card + 1``; audio ``INIT = card``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamLayout:
    """Sizes and delays of the three streams; saved inside every speech-model checkpoint."""

    n_q: int = 8  # codebooks per codec frame (user and agent alike)
    card: int = 2048  # codes per codebook
    text_card: int = 49152  # backbone text vocabulary (SmolLM2)
    delays: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0, 0)  # agent codebook k is delayed by delays[k]
    user_text_delay: int = 2  # aux user-text token of a word sits this many frames after its start
    text_lead: int = 0  # the monologue's token of a word sits this many frames before the word's speech

    # Derived ids and sizes ---------------------------------------------------------------
    @property
    def audio_init(self) -> int:
        """Agent audio token where a delayed codebook has no value yet (input only, no loss)."""
        return self.card

    @property
    def audio_vocab(self) -> int:
        return self.card + 1  # real codes + INIT

    @property
    def text_pad(self) -> int:
        return self.text_card

    @property
    def text_bos(self) -> int:
        return self.text_card + 1

    @property
    def text_vocab(self) -> int:
        return self.text_card + 2  # real tokens + PAD + BOS

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @staticmethod
    def from_dict(d: dict) -> "StreamLayout":
        d = dict(d)
        d["delays"] = tuple(d["delays"])
        return StreamLayout(**d)


def validate_layout(layout: StreamLayout) -> None:
    """Raise ValueError when the layout is inconsistent (as audiocraft's ``_validate_layout``)."""
    if layout.n_q < 1 or layout.card < 2 or layout.text_card < 1:
        raise ValueError(f"bad sizes in {layout}")
    if len(layout.delays) != layout.n_q:
        raise ValueError(f"{len(layout.delays)} delays for {layout.n_q} codebooks")
    if any(d < 0 for d in layout.delays):
        raise ValueError(f"negative delay in {layout.delays}")
    if layout.text_lead < 0:
        raise ValueError(f"negative text lead {layout.text_lead}")
    if layout.delays[0] != 0:
        raise ValueError("codebook 0 must not be delayed (the text and codebook 0 lead)")
    if list(layout.delays) != sorted(layout.delays):
        raise ValueError(f"delays must be non-decreasing over codebooks: {layout.delays}")
    if layout.user_text_delay < 0:
        raise ValueError(f"negative user_text_delay {layout.user_text_delay}")


def delay_codes(codes: np.ndarray, layout: StreamLayout) -> np.ndarray:
    """Frame grid -> delayed grid: out[..., k, t] = codes[..., k, t - delays[k]] (INIT before).

    codes: [..., K, T] integer array of real codes; returns the same shape.
    """
    if codes.shape[-2] != layout.n_q:
        raise ValueError(f"expected {layout.n_q} codebooks, got shape {codes.shape}")
    out = np.full_like(codes, layout.audio_init)
    T = codes.shape[-1]
    for k, d in enumerate(layout.delays):
        if d < T:
            out[..., k, d:] = codes[..., k, : T - d]
    return out


def undelay_codes(delayed: np.ndarray, layout: StreamLayout) -> np.ndarray:
    """Delayed grid [..., K, T] -> frame grid [..., K, T - max_delay] (the complete frames)."""
    T = delayed.shape[-1] - layout.max_delay
    if T < 0:
        raise ValueError(f"{delayed.shape[-1]} steps hold no complete frame (max delay {layout.max_delay})")
    out = np.empty(delayed.shape[:-1] + (T,), dtype=delayed.dtype)
    for k, d in enumerate(layout.delays):
        out[..., k, :] = delayed[..., k, d : d + T]
    return out


class Undelayer:
    """Streaming undelay for one session: push the delayed column of each step, get whole frames.

    ``push(col[K]) -> frame[K] | None``: None for the first ``max_delay`` steps, then frame
    ``step - max_delay`` (all its codebooks present).
    """

    def __init__(self, layout: StreamLayout) -> None:
        self.layout = layout
        self._hist: list[np.ndarray] = []  # last max_delay + 1 columns

    def reset(self) -> None:
        self._hist.clear()

    def push(self, col: np.ndarray) -> np.ndarray | None:
        m = self.layout.max_delay
        self._hist.append(np.asarray(col))
        if len(self._hist) > m + 1:
            self._hist.pop(0)
        if len(self._hist) < m + 1:
            return None
        # frame f = step - m: codebook k was written at step f + d_k = index d_k of the history
        return np.array([self._hist[d][k] for k, d in enumerate(self.layout.delays)], dtype=np.int64)


def align_text(
    tokens: list[int],
    start: int,
    end: int,
    n_steps: int,
    layout: StreamLayout,
    char_lens: list[int] | None = None,
) -> np.ndarray:
    """Place reply text tokens over the agent's speech frames [start, end), PAD elsewhere.

    Without word timings, token i goes to the frame proportional to its character offset in the
    reply (``char_lens``: characters per token; equal weights when None), never two tokens on one
    frame (a crowded token moves to the next free frame, possibly past ``end``). Returns [n_steps]
    int64; tokens that do not fit before ``n_steps`` are dropped.
    """
    out = np.full(n_steps, layout.text_pad, dtype=np.int64)
    if not tokens:
        return out
    lens = np.asarray(char_lens if char_lens is not None else [1] * len(tokens), dtype=np.float64)
    lens = np.maximum(lens, 1e-3)
    offsets = np.concatenate([[0.0], np.cumsum(lens)[:-1]]) / lens.sum()
    span = max(end - start, 1)
    nxt = start
    for tok, off in zip(tokens, offsets):
        f = max(int(start + off * span), nxt)
        if f >= n_steps:
            break
        out[f] = tok
        nxt = f + 1
    return out


def place_text(tokens: list[int], frames: list[int], start: int, n_steps: int, layout: StreamLayout) -> np.ndarray:
    """Token i at frame ``start + frames[i] - layout.text_lead`` (from word timings; >= 0), pushed
    right when a frame is taken (the tokens of one word follow each other); PAD elsewhere; cut at
    ``n_steps``. With a lead the model writes each word before it says it (Kyutai's TTS lets the text
    lead the audio the same way)."""
    if len(tokens) != len(frames):
        raise ValueError(f"{len(tokens)} tokens but {len(frames)} frames")
    out = np.full(n_steps, layout.text_pad, dtype=np.int64)
    nxt = 0
    for tok, f in zip(tokens, frames):
        f = max(start + int(f) - layout.text_lead, nxt)
        if f >= n_steps:
            break
        out[f] = tok
        nxt = f + 1
    return out


def validate_streams(user: np.ndarray, agent: np.ndarray, text: np.ndarray, layout: StreamLayout,
                     user_text: np.ndarray | None = None) -> None:
    """Check one example in the frame grid: user/agent [K, T] real codes, text and user_text [T]
    tokens or PAD."""
    K, T = layout.n_q, text.shape[-1]
    if user_text is not None:
        if user_text.shape != (T,):
            raise ValueError(f"user_text {user_text.shape}: want [{T}]")
        if user_text.size and (user_text.min() < 0 or user_text.max() > layout.text_pad):
            raise ValueError(f"user text tokens outside [0, {layout.text_card}]")
    if user.shape != (K, T) or agent.shape != (K, T):
        raise ValueError(f"user {user.shape} / agent {agent.shape} / text {text.shape}: want [{K}, {T}]")
    for name, a in (("user", user), ("agent", agent)):
        if a.size and (a.min() < 0 or a.max() >= layout.card):
            raise ValueError(f"{name} codes outside [0, {layout.card})")
    if text.size and (text.min() < 0 or text.max() > layout.text_pad):
        raise ValueError(f"text tokens outside [0, {layout.text_card}] (BOS is input-only)")


def build_inputs(
    user: np.ndarray, agent: np.ndarray, text: np.ndarray, layout: StreamLayout,
    user_text: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Frame-grid example -> model inputs and targets (teacher forcing), following the picture.

    user, agent: [K, T]; text: [T]. Returns
      user_in [K, T] (frame t), agent_in [K, T] (delayed column t-1, INIT at t=0),
      text_in [T] (text t-1, BOS at t=0), agent_tgt [K, T] (delayed column t),
      agent_mask [K, T] bool (False where the target is INIT), text_tgt [T],
      and user_text_tgt [T] when ``user_text`` (already placed, see ``user_text_frames``) is given.
    """
    validate_streams(user, agent, text, layout, user_text)
    K, T = agent.shape
    delayed = delay_codes(agent.astype(np.int64), layout)
    agent_in = np.full((K, T), layout.audio_init, dtype=np.int64)
    agent_in[:, 1:] = delayed[:, :-1]
    text_in = np.full(T, layout.text_bos, dtype=np.int64)
    text_in[1:] = text[:-1]
    out = {
        "user_in": user.astype(np.int64),
        "agent_in": agent_in,
        "text_in": text_in,
        "agent_tgt": delayed,
        "agent_mask": delayed != layout.audio_init,
        "text_tgt": text.astype(np.int64),
    }
    if user_text is not None:
        out["user_text_tgt"] = user_text.astype(np.int64)
    return out


def user_text_frames(word_starts: list[int], layout: StreamLayout) -> list[int]:
    """Frames (relative to the user's speech start) where the aux user-text tokens go: each
    word's start frame + ``user_text_delay`` (the model writes a word after hearing its start)."""
    return [int(f) + layout.user_text_delay for f in word_starts]
