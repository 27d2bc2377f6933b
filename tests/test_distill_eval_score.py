"""distill.eval scoring with fakes for the codec and Whisper: the WER direction of each column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.eval import Generated, score, wer


def test_wer_normalizes_and_handles_empty() -> None:
    assert wer("Hello, world!", "hello world") == 0.0
    assert wer("a b c d", "a b") == pytest.approx(0.5)
    assert wer("a b", "a b c d") == pytest.approx(1.0)  # insertions count against the reference
    assert wer("a b", "") == 1.0 and wer("", "") == 0.0 and wer("", "x") == 1.0


class _Codec(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # (1, K, T) -> (1, 1, samples): the codes' frame count
        return torch.full((1, 1, 10), float(codes.shape[-1]))


class _ASR:
    def __init__(self, said: dict[int, str]) -> None:
        self.said = said

    def transcribe(self, wav: np.ndarray) -> str:
        return self.said[int(wav[0])]


def test_mono_wer_takes_the_monologue_as_reference() -> None:
    """The speech said two of the monologue's four words: 0.5 (not 1.0 as with the transcript as
    reference); silence of a non-empty monologue is 1.0; the teacher columns use the reply."""
    words = {1: "what", 2: "is", 3: "the", 4: "capital"}
    items = [Generated("a", "synthetic", "what is the capital", [1, 2, 3, 4], np.zeros((2, 5), np.int64)),
             Generated("b", "synthetic", "what is the capital", [1, 2], np.zeros((2, 0), np.int64))]
    asr = _ASR({5: "what is"})
    res = score(items, _Codec(), asr, lambda ids: " ".join(words[i] for i in ids))
    a, b = res["rows"]
    assert a["mono_wer"] == pytest.approx(0.5) and a["wer"] == pytest.approx(0.5)
    assert b["transcript"] == "" and b["mono_wer"] == 1.0 and b["words"] == 0.0
    assert a["mono_vs_teacher"] == 0.0 and b["mono_vs_teacher"] == pytest.approx(0.5)


def test_groups_report_corpus_wer_beside_the_mean_of_turns() -> None:
    """A looping transcript of a 2-word turn beside a perfect 8-word turn: the mean of turns is
    (5.0 + 0) / 2 = 250 %, the corpus WER 10 edits / 10 words = 100 %."""
    from distill.eval import corpus_wer, table

    words = {i: w for i, w in enumerate("a b c d e f g h".split(), 1)}
    items = [Generated("a", "synthetic", "a b", [1, 2], np.zeros((2, 5), np.int64)),
             Generated("b", "synthetic", "a b c d e f g h", list(range(1, 9)), np.zeros((2, 6), np.int64))]
    asr = _ASR({5: "x x x x x x x x x x", 6: "a b c d e f g h"})
    res = score(items, _Codec(), asr, lambda ids: " ".join(words[i] for i in ids))
    g = res["groups"]["all"]
    assert g["mono_wer_turn_mean"] == pytest.approx(2.5) and g["mono_wer"] == pytest.approx(1.0)
    assert g["wer"] == pytest.approx(1.0) and g["mono_vs_teacher"] == 0.0
    assert "| all | 2 | 100.0% / 250.0% |" in table(res)
    assert corpus_wer([("", "x"), ("a b", "a")]) == pytest.approx(0.5) and np.isnan(corpus_wer([]))
