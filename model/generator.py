"""Streaming generation for the direct speech model: many sessions, one static batch.

The generator owns a fixed number of slots (``max_batch``): each conversation joins a free slot,
gets its own KV-cache row and position counter, and leaves at any frame; nothing is recaptured.
One ``step`` advances the sessions that pushed a user frame: it embeds (user frame t, own text
and audio of t-1), runs one temporal step for all slots with per-row positions, samples the text
token and then the K codebooks through the depth transformer. Slots that did not advance still
compute (static shapes) but their state is left as it was, and the cache entry they wrote at
their current position is overwritten by their next real step.

On CUDA the whole per-frame step (embeddings, 30 backbone layers, text head, K depth passes,
sampling) is captured once in a CUDA graph. On a CPU, ``cpu_step`` picks the reference step run
eagerly (``exact``) or the fused step of ``model/cpu_step.py`` (``quant``: int4/int8 weights, ~3x
less time per frame at batch 1; ``fast``: bf16 weights), with the same sampling.
The KV cache is a ring of ``max_frames`` slots per session (``KVCache(ring=True)``): a
conversation goes on past that length, each step attending to the last ``max_frames`` frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from model.cpu_step import CpuStep, FusedCpuStep
from model.speech import AudioHead, SpeechModel
from model.speech_sampling import SpeechSamplingParams, sample_batch

log = logging.getLogger(__name__)


@dataclass
class FrameOut:
    """One step's output for one session."""

    text: int  # text token (layout.text_pad when silent)
    audio: np.ndarray  # (K,) delayed audio column (INIT where a delayed codebook has no value)
    position: int  # frame index since the session joined


class SpeechGenerator:
    def __init__(
        self,
        model: SpeechModel,
        max_batch: int = 1,
        max_frames: int = 1024,
        sampling: SpeechSamplingParams = SpeechSamplingParams(),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        cuda_graph: bool | None = None,
        cpu_step: CpuStep | str = CpuStep.EXACT,
    ) -> None:
        self.model = model.eval()
        self.layout = model.cfg.layout
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.max_batch, self.max_frames, self.sampling = max_batch, max_frames, sampling
        self.use_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        B, K, L = max_batch, self.layout.n_q, self.layout
        self.cpu_step = CpuStep(cpu_step) if self.device.type == "cpu" else CpuStep.EXACT
        if self.cpu_step is not CpuStep.EXACT and model.cfg.audio_head is not AudioHead.DEPTH:
            log.warning("cpu_step %s needs the depth audio head: running the exact step", self.cpu_step.value)
            self.cpu_step = CpuStep.EXACT
        fused = self.cpu_step is not CpuStep.EXACT
        cache_dtype = torch.float32 if fused else self.dtype  # the fused step attends in fp32
        self.model.to(self.device)
        # packed from the weights as loaded (fp32 -> int8), before the cast to the model's dtype
        self.fused = FusedCpuStep(self.model, quant=self.cpu_step is CpuStep.QUANT) if fused else None
        self.model.to(self.dtype)
        self.model.backbone.setup_cache(B, max_frames, device=self.device, dtype=cache_dtype, ring=True)
        dev = self.device
        # static per-slot state (inputs of the captured step)
        self.pos = torch.zeros(B, dtype=torch.long, device=dev)
        self.text_prev = torch.full((B,), L.text_bos, dtype=torch.long, device=dev)
        self.agent_prev = torch.full((B, K), L.audio_init, dtype=torch.long, device=dev)
        self.user = torch.zeros((B, K), dtype=torch.long, device=dev)
        self.advance = torch.zeros(B, dtype=torch.bool, device=dev)
        self.delays = torch.tensor(L.delays, dtype=torch.long, device=dev)
        # outputs of the captured step
        self.text_out = torch.zeros(B, dtype=torch.long, device=dev)
        self.audio_out = torch.zeros((B, K), dtype=torch.long, device=dev)
        self.pos_out = torch.zeros(B, dtype=torch.long, device=dev)
        self.active: list[bool] = [False] * B
        self._graph: torch.cuda.CUDAGraph | None = None

    # --- sessions -------------------------------------------------------------------------
    def join(self) -> int:
        """Take a free slot for a new session; returns its id. Raises RuntimeError when full."""
        for s, a in enumerate(self.active):
            if not a:
                self._reset_slot(s)
                self.active[s] = True
                return s
        raise RuntimeError(f"all {self.max_batch} generator slots are taken")

    def leave(self, slot: int) -> None:
        self.active[slot] = False

    @property
    def n_active(self) -> int:
        return sum(self.active)

    def _reset_slot(self, s: int) -> None:
        self.model.backbone.reset_rows(torch.tensor([s], device=self.device))
        self.pos[s] = 0
        self.text_prev[s] = self.layout.text_bos
        self.agent_prev[s] = self.layout.audio_init

    # --- the per-frame step ---------------------------------------------------------------
    @torch.no_grad()
    def _reference_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's modules, eagerly (or under a CUDA graph) -> text (B,), codes (B, K)."""
        m, L, sc = self.model, self.layout, self.sampling
        x = m.frame_embedding(self.user[:, :, None], self.agent_prev[:, :, None], self.text_prev[:, None])
        h = m.backbone(embeds=x.to(self.dtype), positions=self.pos, use_cache=True, return_hidden=True)[:, 0]
        tl = m.text_logits(h)
        tl[:, L.text_bos] = float("-inf")
        text = sample_batch(tl, sc.text_temperature, sc.text_top_k)  # (B,)
        temb = m.embed_text(text)
        codes = torch.full_like(self.agent_prev, L.audio_init)
        for k in range(L.n_q):
            ck = sample_batch(m.depth.logits_at(h, temb, codes, k), sc.audio_temperature, sc.audio_top_k)
            codes[:, k] = torch.where(self.pos < self.delays[k], L.audio_init, ck)
        return text, codes

    @torch.no_grad()
    def _step_impl(self) -> None:
        if self.fused is not None:
            text, codes = self.fused.step(self.user, self.agent_prev, self.text_prev, self.pos, self.delays,
                                          self.sampling)
        else:
            text, codes = self._reference_frame()
        adv = self.advance
        self.text_out.copy_(text)
        self.audio_out.copy_(codes)
        self.pos_out.copy_(self.pos)
        self.text_prev.copy_(torch.where(adv, text, self.text_prev))
        self.agent_prev.copy_(torch.where(adv[:, None], codes, self.agent_prev))
        self.pos.copy_(self.pos + adv.long())

    def _capture(self) -> None:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        state = (self.pos, self.text_prev, self.agent_prev, self.advance)
        saved = [t.clone() for t in state]
        self.advance.zero_()
        with torch.cuda.stream(s):
            for _ in range(2):  # warm-up (allocations, cuBLAS handles) outside the graph
                self._step_impl()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._step_impl()
        for t, v in zip(state, saved):  # capture must not consume the pending step
            t.copy_(v)
        self._graph = g

    def step_rows(self, user: torch.Tensor, advance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame for the whole batch, on tensors (no per-session Python work, no host sync).

        user (B, K) long: user codes of every slot (ignored where not advancing); advance (B,)
        bool: the slots that take this step (must hold a session). -> views of the static
        outputs text (B,), audio (B, K) (delayed column), position (B,): valid until the next step.
        """
        self.user.copy_(user)
        self.advance.copy_(advance)
        if self.use_graph:
            if self._graph is None:
                self._capture()
            self._graph.replay()
        else:
            self._step_impl()
        return self.text_out, self.audio_out, self.pos_out

    def step(self, user_frames: dict[int, np.ndarray]) -> dict[int, FrameOut]:
        """Advance the sessions in ``user_frames`` (slot -> user codes (K,)) by one frame."""
        if not user_frames:
            return {}
        for s in user_frames:
            if not self.active[s]:
                raise KeyError(f"slot {s} has no session")
        slots = sorted(user_frames)
        idx = torch.tensor(slots, device=self.device)
        frames = torch.as_tensor(np.stack([np.asarray(user_frames[s]) for s in slots]), dtype=torch.long)
        user = self.user.clone()
        user.index_copy_(0, idx, frames.to(self.device))
        adv = torch.zeros(self.max_batch, dtype=torch.bool)
        adv[slots] = True
        self.step_rows(user, adv.to(self.device))
        text = self.text_out[idx].cpu().numpy()
        audio = self.audio_out[idx].cpu().numpy()
        pos = self.pos_out[idx].cpu().numpy()
        return {s: FrameOut(int(text[i]), audio[i], int(pos[i])) for i, s in enumerate(slots)}
