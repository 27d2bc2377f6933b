"""The end-of-turn forward through CUDA graphs (model/components/eou_graph.py): right padding to a bucket
leaves the last real token's hidden state as it was (causal), and the graph replays equal eager calls."""

from __future__ import annotations

import pytest
import torch

from model.llama import Llama, LlamaConfig


def _model() -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=256)
    return Llama(cfg).eval()


def test_right_padding_keeps_the_last_real_hidden_state() -> None:
    m = _model()
    ids = torch.randint(1, 300, (1, 23))
    padded = torch.zeros(1, 32, dtype=torch.long)
    padded[:, :23] = ids
    with torch.inference_mode():
        want = m(ids, return_hidden=True, last_only=True)[0, 0]
        got = m(padded, return_hidden=True)[0, 22]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_replays_equal_eager_calls() -> None:
    from model.components.eou_graph import BUCKETS, GraphedHidden

    m = _model().cuda()
    run = GraphedHidden(m)
    run.prepare()
    assert sorted(run.graphs) == list(BUCKETS)
    for n in (1, 5, 32, 33, 100):
        ids = torch.randint(1, 300, (n,)).tolist()
        with torch.inference_mode():
            want = m(torch.tensor([ids], device="cuda"), return_hidden=True, last_only=True)[0, 0]
        torch.testing.assert_close(run(ids), want, atol=1e-4, rtol=1e-4)
    assert run(list(range(1, 200))) is None  # longer than the last bucket: the caller runs it eagerly
