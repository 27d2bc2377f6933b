"""Direct speech model with tiny dimensions: streaming == full forward, batched generator ==
per-session, sessions joining/leaving mid-stream, a CPU training step, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("model.llama")  # the backbone (LLM helper's module)

from model.depth import DepthConfig
from model.generator import SpeechGenerator
from model.layout import StreamLayout
from model.llama import LlamaConfig
from model.speech_sampling import SpeechSamplingParams
from model.speech import SpeechConfig, SpeechModel

LAYOUT = StreamLayout(n_q=4, card=16, text_card=64, delays=(0, 1, 1, 1))
STAIR = StreamLayout(n_q=4, card=16, text_card=64, delays=(0, 1, 2, 3))
GREEDY = SpeechSamplingParams(0.0, 0, 0.0, 0)


def tiny_config(layout: StreamLayout = LAYOUT, audio_head: str = "depth") -> SpeechConfig:
    bb = LlamaConfig(
        vocab_size=layout.text_card, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
    )
    return SpeechConfig(
        backbone=bb, layout=layout, depth=DepthConfig(dim=32, n_layers=2, n_heads=4, ffn_dim=64),
        audio_emb_dim=16, lora_rank=4, audio_head=audio_head,
    )


def tiny_model(seed: int = 0, layout: StreamLayout = LAYOUT, audio_head: str = "depth") -> SpeechModel:
    torch.manual_seed(seed)
    m = SpeechModel(tiny_config(layout, audio_head))
    with torch.no_grad():  # non-zero adapters, so that they take part in every check
        for n, p in m.named_parameters():
            if n.endswith("lora_b"):
                p.normal_(0, 0.2)
            if n.endswith("text_special_head.weight"):
                p.normal_(0, 0.5)
    return m.eval()


def user_stream(seed: int, T: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, LAYOUT.card, size=(LAYOUT.n_q, T))


def run_alone(model: SpeechModel, user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gen = SpeechGenerator(model, max_batch=1, max_frames=32, sampling=GREEDY)
    s = gen.join()
    outs = [gen.step({s: user[:, t]})[s] for t in range(user.shape[1])]
    return np.array([o.text for o in outs]), np.stack([o.audio for o in outs], axis=1)


@pytest.fixture(scope="module")
def model() -> SpeechModel:
    return tiny_model()


@pytest.mark.parametrize("head", ["depth", "delay"])
def test_streaming_equals_full_forward(head: str) -> None:
    model = tiny_model(layout=LAYOUT if head == "depth" else STAIR, audio_head=head)
    L, T = model.cfg.layout, 12
    user = user_stream(1, T)
    text, audio = run_alone(model, user)
    for k, d in enumerate(L.delays):
        assert (audio[k, :d] == L.audio_init).all() and (audio[k, d:] != L.audio_init).all()
    agent_in = np.full((L.n_q, T), L.audio_init)
    agent_in[:, 1:] = audio[:, :-1]
    text_in = np.full(T, L.text_bos)
    text_in[1:] = text[:-1]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.long)[None]  # noqa: E731
    with torch.no_grad():
        tl, al = model(as_t(user), as_t(agent_in), as_t(text_in), as_t(text), as_t(np.where(audio == L.audio_init, 0, audio)))
    assert (tl[0].argmax(-1).numpy() == text).all()
    mask = audio != L.audio_init
    assert (al[0].argmax(-1).numpy().T[mask] == audio[mask]).all()
    # causality: changing a later user frame never changes earlier outputs
    user2 = user.copy()
    user2[:, 8:] = (user2[:, 8:] + 3) % L.card
    text2, audio2 = run_alone(model, user2)
    assert (text2 != text).any() or (audio2 != audio).any()  # the later frames do matter
    assert (text2[:8] == text[:8]).all() and (audio2[:, :8] == audio[:, :8]).all()


def drive_join_leave(gen: SpeechGenerator, streams: dict[str, np.ndarray], length: int,
                     frames: int) -> dict[str, list]:
    """Sessions a, b, c join at frames 0, 2, 3; a leaves after ``length`` frames and d joins at once
    (reusing its slot); b skips frame 5. -> each session's frame outputs, in order."""
    slot: dict[str, int] = {}
    t_of = {name: 0 for name in streams}
    got: dict[str, list] = {name: [] for name in streams}
    schedule = {0: ["a"], 2: ["b"], 3: ["c"]}
    for frame in range(frames):
        for name in schedule.get(frame, []):
            slot[name] = gen.join()
        if "a" in slot and t_of["a"] == length:
            gen.leave(slot.pop("a"))
            slot["d"] = gen.join()  # reuses a's slot (and its cache row) at once
        push = {s: streams[n][:, t_of[n]] for n, s in slot.items()
                if t_of[n] < length and not (n == "b" and frame == 5)}  # b skips one step
        outs = gen.step(push)
        for name, s in slot.items():
            if s in outs:
                got[name].append(outs[s])
                t_of[name] += 1
    return got


def test_batched_sessions_join_and_leave(model: SpeechModel) -> None:
    """Three sessions in a 2... 3-slot generator, starting and stopping at different frames, one
    pausing a frame, and a new session reusing a freed slot: each equals its run alone."""
    streams = {name: user_stream(10 + i, 10) for i, name in enumerate("abcd")}
    alone = {name: run_alone(model, u) for name, u in streams.items()}
    gen = SpeechGenerator(model, max_batch=3, max_frames=32, sampling=GREEDY)
    got = drive_join_leave(gen, streams, length=10, frames=30)
    for name in streams:
        assert len(got[name]) == 10, name
        text = np.array([o.text for o in got[name]])
        audio = np.stack([o.audio for o in got[name]], axis=1)
        assert (text == alone[name][0]).all(), name
        assert (audio == alone[name][1]).all(), name
    with pytest.raises(RuntimeError):
        for _ in range(4):
            gen.join()


def test_ring_cache_continues_past_its_length() -> None:
    """A session goes on past max_frames (sliding window, no reset); within it nothing changes."""
    m = tiny_model()
    gen = SpeechGenerator(m, max_batch=1, max_frames=6, sampling=GREEDY)
    assert gen.model.backbone.cache.ring
    s = gen.join()
    user = user_stream(3, 20)
    outs = [gen.step({s: user[:, t]})[s] for t in range(20)]
    assert [o.position for o in outs] == list(range(20))
    text, audio = run_alone(m, user[:, :6])
    assert [o.text for o in outs[:6]] == list(text)
    assert (np.stack([o.audio for o in outs[:6]], axis=1) == audio).all()
    assert all(0 <= o.text < LAYOUT.text_card + 2 for o in outs)


def test_training_step_lowers_loss_on_fixed_batch() -> None:
    from distill.train import LossConfig, Turn, collate, compute_loss, make_example

    m = tiny_model(seed=1).train()
    rng = np.random.default_rng(0)
    silence = np.array([1, 2, 3, 4])
    turns = [
        Turn(rng.integers(0, 16, (4, 6)), rng.integers(0, 16, (4, 8)), list(rng.integers(0, 64, 5)))
        for _ in range(4)
    ]
    batch = collate([make_example(t, silence, LAYOUT, 2, 2, 64) for t in turns], LAYOUT)
    lc = LossConfig(codebook_weights=(2.0, 1.0, 1.0, 1.0))
    params = [p for p in m.parameters() if p.requires_grad]
    assert all(not p.requires_grad for n, p in m.backbone.named_parameters() if "lora_" not in n)
    opt = torch.optim.AdamW(params, lr=1e-2)
    first = None
    for _ in range(8):
        loss, metrics = compute_loss(m, batch, lc, LAYOUT)
        first = first if first is not None else metrics
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, last = compute_loss(m, batch, lc, LAYOUT)
    assert last["loss"] < 0.8 * first["loss"], (first, last)
    assert last["audio"] < first["audio"] and last["text"] < first["text"]


def test_checkpoint_round_trip(tmp_path) -> None:
    from model.speech_ckpt import read_trained, save_trained

    m = tiny_model(seed=2)
    files = save_trained(m, tmp_path, {"steps": 0}, dtype=torch.float32)
    cfg, sd, man = read_trained(tmp_path)
    assert cfg == m.cfg and man["steps"] == 0 and len(files) == 1
    m2 = SpeechModel(cfg)
    m2.backbone.load_state_dict(m.backbone.state_dict())  # the frozen backbone comes from the GGUF
    m2.load_trainable(sd)
    m2.eval()
    user = user_stream(5, 8)
    assert all((a == b).all() for a, b in zip(run_alone(m, user), run_alone(m2, user)))
    files[0].write_bytes(files[0].read_bytes()[:-10] + b"0123456789")
    from model.common.errors import ParleyError

    with pytest.raises(ParleyError):
        read_trained(tmp_path)
    # default storage: int8 rows (about 1 byte per parameter), close to the float weights
    files = save_trained(m, tmp_path / "q")
    _, sdq, manq = read_trained(tmp_path / "q")
    ref = m.trainable_state_dict()
    assert set(sdq) == set(ref) and manq["storage"].startswith("int8")
    for k, v in ref.items():
        tol = v.abs().amax(dim=-1, keepdim=True) / 250 if v.ndim >= 2 else 0
        assert ((sdq[k] - v).abs() <= tol + 1e-7).all(), k


@pytest.mark.gpu
def test_cuda_graph_equals_eager() -> None:
    m = tiny_model().cuda()
    user = user_stream(7, 10)
    res = []
    for graph in (False, True):
        gen = SpeechGenerator(m, max_batch=4, max_frames=32, sampling=GREEDY, dtype=torch.float32, cuda_graph=graph)
        s = gen.join()
        outs = [gen.step({s: user[:, t]})[s] for t in range(10)]
        res.append([(o.text, tuple(o.audio)) for o in outs])
    assert res[0] == res[1]


def test_sampler_draws_from_the_tempered_top_k() -> None:
    """Gumbel-max over the top-k draws each candidate with softmax(logit / T) over the k; never one outside."""
    from model.speech_sampling import sample_batch  # noqa: PLC0415

    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0, -3.0])
    n, t, k = 100_000, 0.7, 4
    ids = sample_batch(logits.repeat(n, 1), t, k)
    got = torch.bincount(ids, minlength=len(logits)).float() / n
    top = torch.topk(logits, k).indices
    want = torch.zeros_like(logits)
    want[top] = torch.softmax(logits[top] / t, -1)
    assert got[want == 0].sum() == 0, got
    assert torch.allclose(got, want, atol=0.006), (got, want)
    assert torch.equal(sample_batch(logits[None], 0.0, k), torch.tensor([5]))  # greedy
    full = torch.bincount(sample_batch(logits.repeat(n, 1), t, 0), minlength=len(logits)).float() / n
    assert torch.allclose(full, torch.softmax(logits / t, -1), atol=0.006)  # top_k 0: the whole vocabulary
