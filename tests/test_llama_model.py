"""The Llama decoder on a tiny random config: cache == full forward, per-row positions, resets."""

from __future__ import annotations

import pytest
import torch

from model.llama import KVCache, Llama, LlamaConfig

CFG = LlamaConfig(vocab_size=97, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96,
                  rope_theta=10000.0, max_seq_len=64)


@pytest.fixture(scope="module")
def model() -> Llama:
    torch.manual_seed(0)
    return Llama(CFG).eval()


def test_cached_incremental_equals_full(model: Llama) -> None:
    torch.manual_seed(1)
    ids = torch.randint(0, CFG.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(ids)  # (B, T, V)
        cache = model.new_cache(2, 32)
        pieces = [model(ids[:, :7], positions=torch.zeros(2, dtype=torch.long), cache=cache)]
        for t in range(7, 20):  # then one token at a time
            pieces.append(model(ids[:, t:t + 1], positions=torch.full((2,), t), cache=cache))
    inc = torch.cat(pieces, 1)
    assert inc.shape == full.shape == (2, 20, CFG.vocab_size)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=1e-4)


def test_later_input_does_not_change_earlier_output(model: Llama) -> None:
    torch.manual_seed(2)
    ids = torch.randint(0, CFG.vocab_size, (1, 12))
    ids2 = ids.clone()
    ids2[:, 8:] = (ids2[:, 8:] + 1) % CFG.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(ids2)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_batched_rows_at_different_positions_equal_per_row(model: Llama) -> None:
    """Row 0 starts at step 0, row 1 joins 5 steps later; each equals its own single-row run."""
    torch.manual_seed(3)
    seqs = torch.randint(0, CFG.vocab_size, (2, 15))
    cache = model.new_cache(2, 32)
    pos = torch.zeros(2, dtype=torch.long)
    out: list[list[torch.Tensor]] = [[], []]
    with torch.no_grad():
        for step in range(20):
            active = [step < 15, 5 <= step]  # row 1 starts at step 5
            tok = torch.stack([seqs[0, min(step, 14)], seqs[1, max(0, min(step - 5, 14))]])[:, None]
            logits = model(tok, positions=pos, cache=cache)[:, 0]
            for r in range(2):
                if active[r]:
                    out[r].append(logits[r])
            pos = pos + torch.tensor(active, dtype=torch.long)  # idle rows rewrite the same slot
        for r in range(2):
            ref = model(seqs[r:r + 1])[0]  # (15, V)
            torch.testing.assert_close(torch.stack(out[r]), ref, atol=1e-5, rtol=1e-4)


def test_reset_rows_starts_a_fresh_stream(model: Llama) -> None:
    torch.manual_seed(4)
    old, new = torch.randint(0, CFG.vocab_size, (2, 10))
    model.setup_cache(2, 32)
    with torch.no_grad():
        model(torch.stack([old, old]), positions=torch.zeros(2, dtype=torch.long), use_cache=True)
        model.reset_rows(torch.tensor([True, False]))  # row 0 forgets, row 1 keeps its past
        # row 0: a 4-token stream from position 0; row 1 continues at position 10
        out = model(torch.stack([new[:4], new[:4]]), positions=torch.tensor([0, 10]), use_cache=True)
        fresh = model(new[None, :4])[0]
        cont = model(torch.cat([old, new[:4]])[None])[0, 10:]
    torch.testing.assert_close(out[0], fresh, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1], cont, atol=1e-5, rtol=1e-4)
    # rows given by index, and a stream that starts at a position > 0 sees no stale slots
    model.reset_rows([1])
    with torch.no_grad():
        late = model(new[None, :1].expand(2, 1), positions=torch.tensor([4, 3]), use_cache=True)
    alone = model(new[None, :1], positions=torch.tensor([[3]]))[0, 0]
    torch.testing.assert_close(late[1, 0], alone, atol=1e-5, rtol=1e-4)


def test_embeds_hidden_and_tied_head(model: Llama) -> None:
    ids = torch.randint(0, CFG.vocab_size, (1, 6))
    with torch.no_grad():
        h = model(embeds=model.tok_embeddings(ids), return_hidden=True)
        logits = model(ids)
    assert h.shape == (1, 6, CFG.dim)
    torch.testing.assert_close(model.output(h), logits)
    assert model.output.weight is model.tok_embeddings.weight
    assert not any("cache" in k for k in model.state_dict())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_close_to_fp32(model: Llama, dtype: torch.dtype) -> None:
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    low = Llama(CFG).eval()
    low.load_state_dict(model.state_dict())
    low.to(dtype)
    with torch.no_grad():
        ref = model(ids)
        cache = low.new_cache(2, 16)
        a = low(ids[:, :5], positions=torch.zeros(2, dtype=torch.long), cache=cache)
        b = low(ids[:, 5:], positions=torch.full((2,), 5), cache=cache)
    got = torch.cat([a, b], 1).float()
    assert got.dtype == torch.float32 and (got - ref).abs().max() < 0.05


def test_bad_inputs(model: Llama) -> None:
    with pytest.raises(ValueError):
        model()
    cache = model.new_cache(1, 4)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 1, dtype=torch.long), positions=torch.tensor([4]), cache=cache)
    with pytest.raises(ValueError):
        LlamaConfig(dim=50, n_heads=6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_decode_equals_eager(model: Llama, dtype: torch.dtype) -> None:
    """One decode step captured once, replayed for rows at different positions (with a reset)."""
    dev = torch.device("cuda")
    m = Llama(CFG).eval()
    m.load_state_dict(model.state_dict())
    m.to(dev, dtype)
    B, steps = 3, 12
    torch.manual_seed(5)
    toks = torch.randint(0, CFG.vocab_size, (steps, B), device=dev)
    starts = torch.tensor([0, 2, 5], device=dev)  # rows join at different steps
    reset_at = 8  # row 0 starts a new stream at this step

    def run(graph: bool) -> torch.Tensor:
        m.setup_cache(B, 32, device=dev, dtype=dtype)
        tok = torch.zeros(B, 1, dtype=torch.long, device=dev)
        pos = torch.zeros(B, dtype=torch.long, device=dev)
        step = lambda: m(tok, positions=pos, use_cache=True)[:, 0].float()  # noqa: E731
        if graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.no_grad():
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            m.reset_rows()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), torch.no_grad():
                out = step()
        outs = []
        for t in range(steps):
            if t == reset_at:
                m.reset_rows(torch.tensor([True, False, False], device=dev))
                pos[0] = 0
            tok.copy_(toks[t][:, None])
            if graph:
                g.replay()
                outs.append(out.clone())
            else:
                with torch.no_grad():
                    outs.append(step())
            pos.add_((torch.full((B,), t, device=dev) >= starts).long())
        return torch.stack(outs)  # (steps, B, V)

    eager, graphed = run(False), run(True)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(graphed, eager, atol=tol, rtol=tol)
    # and eager on GPU equals the CPU reference for row 2 (joins at step 5, never reset)
    ref = model(toks[5:, 2].cpu()[None]).float()[0]  # (7, V)
    row2 = eager[5:, 2].cpu()
    assert (row2 - ref).abs().max() < (1e-3 if dtype == torch.float32 else 0.1)


class _BandedCache(KVCache):
    """Reference for the ring: a long slot = position cache whose mask keeps the last W positions."""

    def __init__(self, window: int, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.window = window

    def attn_mask(self, positions: torch.Tensor, length: int) -> torch.Tensor:
        slots = torch.arange(length, device=positions.device)
        band = (slots[None, None, :] > positions[:, :, None] - self.window)[:, None]  # (B, 1, T, L)
        return super().attn_mask(positions, length) & band


def _steps(model: Llama, cache: KVCache, ids: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """One token per step for every row; row b at position starts[b] + t -> logits (B, T, V)."""
    pos0 = torch.tensor(starts)
    with torch.no_grad():
        return torch.cat([model(ids[:, t:t + 1], positions=pos0 + t, cache=cache) for t in range(ids.shape[1])], 1)


def test_ring_cache_equals_full_then_window(model: Llama) -> None:
    """Within its length the ring equals full attention; after wrap-around, windowed attention."""
    torch.manual_seed(7)
    W, T = 8, 30
    ids = torch.randint(0, CFG.vocab_size, (2, T))
    ring = model.new_cache(2, W, ring=True)
    got = _steps(model, ring, ids, [0, 3])  # rows at different positions
    with torch.no_grad():
        full = model(ids[:, :W])
    torch.testing.assert_close(got[0, :W], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1, :W - 3], full[1, :W - 3], atol=1e-5, rtol=1e-4)
    ref = _steps(model, _BandedCache(W, CFG, 2, 64), ids, [0, 3])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert (got[:, W:] - full[:, -1:]).abs().max() > 1e-3  # (the window does change the output)


def test_ring_cache_reset_one_row(model: Llama) -> None:
    """Resetting one row after wrap-around starts it fresh; the other row goes on unchanged."""
    torch.manual_seed(8)
    W = 6
    ids = torch.randint(0, CFG.vocab_size, (2, 20))
    ring = model.new_cache(2, W, ring=True)
    a = _steps(model, ring, ids[:, :14], [0, 0])
    ring.reset_rows(torch.tensor([False, True]))
    with torch.no_grad():
        b = torch.cat([model(ids[:, t:t + 1], positions=torch.tensor([t, t - 14]), cache=ring)
                       for t in range(14, 20)], 1)
    ref = _steps(model, _BandedCache(W, CFG, 2, 64), ids, [0, 0])
    torch.testing.assert_close(torch.cat([a, b], 1)[0], ref[0], atol=1e-5, rtol=1e-4)
    fresh = _steps(model, model.new_cache(1, W, ring=True), ids[1:, 14:], [0])
    torch.testing.assert_close(b[1], fresh[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):  # a chunk longer than the ring
        model(ids[:, :W + 1], positions=torch.zeros(2, dtype=torch.long), cache=ring)


@pytest.mark.gpu
def test_ring_cache_cuda_graph_equals_eager(model: Llama) -> None:
    """One captured decode step replayed past the ring's length equals the eager ring."""
    dev = torch.device("cuda")
    m = Llama(CFG).eval()
    m.load_state_dict(model.state_dict())
    m.to(dev)
    W, steps = 8, 24
    toks = torch.randint(0, CFG.vocab_size, (steps, 2, 1), device=dev)

    def run(graph: bool) -> torch.Tensor:
        m.setup_cache(2, W, device=dev, ring=True)
        tok = torch.zeros(2, 1, dtype=torch.long, device=dev)
        pos = torch.tensor([0, 3], device=dev)
        step = lambda: m(tok, positions=pos, use_cache=True)[:, 0].float()  # noqa: E731
        outs = []
        with torch.no_grad():
            if graph:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    step()
                torch.cuda.current_stream().wait_stream(s)
                m.reset_rows()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    out = step()
            for t in range(steps):
                tok.copy_(toks[t])
                if graph:
                    g.replay()
                    outs.append(out.clone())
                else:
                    outs.append(step())
                pos += 1
        return torch.stack(outs)

    torch.testing.assert_close(run(True), run(False), atol=1e-4, rtol=1e-4)
