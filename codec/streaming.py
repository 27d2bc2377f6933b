"""One streaming protocol for every stateful layer (after kyutai-labs/moshi `modules/streaming.py`).

A `StreamingModule[S]` owns an explicit, typed `@dataclass` state `S` while streaming:

    with model.streaming(batch_size=2):     # starts streaming on every StreamingModule inside
        y1 = model(x[..., :1280])           # each call continues where the last one stopped
        y2 = model(x[..., 1280:2560])
        model.reset_streaming(mask)         # rows where mask is True start a new stream
    # leaving the block drops all states; outside it, forward() is a plain full pass

Outside `streaming()`, a module processes a whole signal at once (training, offline eval); the
streamed outputs joined are equal to that full pass (tests/test_codec_streaming.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Generic, Iterator, TypeVar

import torch
from torch import nn


@dataclass
class State:
    """Base of every streaming state: tensors with the batch as first dimension."""

    batch_size: int

    def reset(self, mask: torch.Tensor) -> None:
        """Zero the rows where `mask` (B,) is True: those streams start over."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.batch_size:
                v.masked_fill_(mask.view(-1, *([1] * (v.dim() - 1))).to(v.device), 0)


S = TypeVar("S", bound=State)


class StreamingModule(nn.Module, Generic[S]):
    """A module with an optional streaming state (None when not streaming)."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: S | None = None

    def _init_streaming_state(self, batch_size: int) -> S:
        raise NotImplementedError

    @property
    def is_streaming(self) -> bool:
        return self._streaming_state is not None

    def _streaming_modules(self) -> Iterator["StreamingModule"]:
        for m in self.modules():
            if isinstance(m, StreamingModule):
                yield m

    def start_streaming(self, batch_size: int) -> None:
        for m in self._streaming_modules():
            if type(m)._init_streaming_state is not StreamingModule._init_streaming_state:
                m._streaming_state = m._init_streaming_state(batch_size)
            else:  # a container: mark as streaming with an empty state
                m._streaming_state = State(batch_size)  # type: ignore[assignment]

    def stop_streaming(self) -> None:
        for m in self._streaming_modules():
            m._streaming_state = None

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        """Stream inside the block; every state is dropped when it ends."""
        self.start_streaming(batch_size)
        try:
            yield
        finally:
            self.stop_streaming()

    def reset_streaming(self, mask: torch.Tensor | None = None) -> None:
        """Restart the streams where `mask` (B,) bool is True (all streams when mask is None)."""
        for m in self._streaming_modules():
            st = m._streaming_state
            if st is None:
                raise RuntimeError("reset_streaming() called outside `with module.streaming(...)`")
            if mask is None:
                mask_ = torch.ones(st.batch_size, dtype=torch.bool)
            else:
                mask_ = mask
                if mask_.shape != (st.batch_size,):
                    raise ValueError(f"mask shape {tuple(mask_.shape)} != ({st.batch_size},)")
            st.reset(mask_)


class StreamingSequential(StreamingModule[State], nn.Sequential):  # type: ignore[misc]
    """nn.Sequential that is also a streaming container (so `.streaming()` works on it)."""

    def __init__(self, *mods: nn.Module) -> None:
        nn.Sequential.__init__(self, *mods)
        self._streaming_state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for m in self:
            x = m(x)
        return x
