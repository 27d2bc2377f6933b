"""Capture one call as a CUDA graph: two warm-up calls on a side stream (allocations, kernel selection),
then the capture. `thread_local` capture lets other threads (a frame clock) keep using the GPU meanwhile.

    graph, out = capture(lambda: model(static_ids, return_hidden=True), device)
    graph.replay()                      # refills `out` from the static inputs' current values
"""

from __future__ import annotations

from typing import Any, Callable


def capture(fn: Callable[[], Any], device) -> tuple[Any, Any]:  # noqa: ANN001 - torch.device
    """-> (torch.cuda.CUDAGraph, what fn returned inside the capture: the static outputs)."""
    import torch  # noqa: PLC0415

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = fn()
    return graph, out
