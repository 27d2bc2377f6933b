"""A streaming codec's encode and decode as CUDA graphs: one replay per frame instead of hundreds of launches.

The streaming layers (codec/streaming.py) reassign their state tensors on every call (`st.previous = ...`).
`GraphedCodec` keeps each state tensor in one static buffer: every call (eager or captured) writes the new
states back into their buffers, so a replay continues the streams where the last one stopped, and
`codec.reset_streaming(mask)` (in place, on the buffers) restarts rows between replays. The frame clock
serves a full, fixed batch, so one graph per direction covers every tick.

    codec.start_streaming(B)
    g = GraphedCodec(codec, B)           # captures on CUDA (graphs=None), eager with the same buffers elsewhere
    codes = g.encode(x)                  # (B, 1, hop) float32 -> (B, Q, 1) long: what codec.encode returns
    wav = g.decode(codes[:, :K])         # (B, K, 1) long -> (B, 1, hop)
"""

from __future__ import annotations

from dataclasses import fields

import torch

from model.common.cuda_graph import capture


class GraphedCodec:
    def __init__(self, codec: torch.nn.Module, batch: int, n_q: int | None = None, graphs: bool | None = None) -> None:
        self.codec = codec
        dev = next(codec.parameters()).device
        self.graphs_on = dev.type == "cuda" if graphs is None else graphs
        self._states = [(st, f.name) for m in codec._streaming_modules()  # noqa: SLF001 - the protocol's own walk
                        if (st := m._streaming_state) is not None  # noqa: SLF001
                        for f in fields(st) if isinstance(getattr(st, f.name), torch.Tensor)]
        if not self._states:
            raise RuntimeError("GraphedCodec: start_streaming(batch) first")
        self._bufs = [getattr(st, name) for st, name in self._states]
        self._x = torch.zeros(batch, 1, codec.hop_length, device=dev)  # (B, 1, hop)
        with torch.no_grad():
            q = codec.encode(self._x).shape[1]
            self._codes = torch.zeros(batch, n_q or q, 1, dtype=torch.long, device=dev)  # (B, K, 1)
            self._write_back()
            self._enc, self._enc_out = self._make(lambda: codec.encode(self._x), dev)
            self._dec, self._dec_out = self._make(lambda: codec.decode(self._codes, check_values=False), dev)
        codec.reset_streaming()  # the warm-up calls advanced every stream

    def _write_back(self) -> None:
        """Every state tensor a call replaced -> copied into its buffer, which becomes the state again."""
        for (st, name), buf in zip(self._states, self._bufs):
            new = getattr(st, name)
            if new is not buf:
                buf.copy_(new)
                setattr(st, name, buf)

    def _call(self, fn):  # noqa: ANN001, ANN202 - () -> tensor
        out = fn()
        self._write_back()
        return out

    def _make(self, fn, dev: torch.device):  # noqa: ANN001, ANN202 - (replay or None, static output or None)
        if not self.graphs_on:
            return None, None
        return capture(lambda: self._call(fn), dev)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, hop) -> (B, Q, 1) codes; a graph's output is overwritten by the next replay."""
        self._x.copy_(x)
        if self._enc is None:
            return self._call(lambda: self.codec.encode(self._x))
        self._enc.replay()
        return self._enc_out

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K, 1) -> (B, 1, hop) audio; a graph's output is overwritten by the next replay. The codes'
        range is not checked (the speech model's audio tokens; a check is a GPU sync)."""
        self._codes.copy_(codes)
        if self._dec is None:
            return self._call(lambda: self.codec.decode(self._codes, check_values=False))
        self._dec.replay()
        return self._dec_out
