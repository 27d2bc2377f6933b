"""Shared pytest set-up: GPU tests are skipped without CUDA; shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _torch_threads(n: int):  # noqa: ANN202 - a fixture body: n torch threads, restored after
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small convolutions: OpenMP threads only contend on a loaded 2-core machine."""
    yield from _torch_threads(1)


@pytest.fixture(scope="module")
def two_torch_threads():
    yield from _torch_threads(2)


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory) -> Path:
    """A tiny random codec folder (4 codebooks of 32), for tokenizing fake traces fast."""
    import torch

    from codec.io import save_codec
    from codec.model import CodecConfig, ParleyCodec

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("codec")
    save_codec(ParleyCodec(CodecConfig(n_filters=4, dimension=8, lstm=0, n_q=4, bins=32)), d, {"note": "tiny random"})
    return d
