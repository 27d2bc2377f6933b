"""The direct engine's frame clock on a tiny random speech model and codec (CPU): batched sessions
joining/leaving at different ticks equal each session run alone, a late session gets silence
(counted) without holding the others, and no per-session model or codec copies exist."""

from __future__ import annotations

import copy
import gc
import time

import numpy as np
import pytest
import torch

pytest.importorskip("model.llama")

from model.generator import SpeechGenerator  # noqa: E402
from tests.test_s2s_model import GREEDY, tiny_model  # noqa: E402
from voice.engines.clock import ClockFrame, FrameClock  # noqa: E402

HOP = 1280


@pytest.fixture(scope="module")
def parts(one_torch_thread):
    from codec.model import CodecConfig, ParleyCodec

    torch.manual_seed(0)
    codec = ParleyCodec(CodecConfig(n_filters=4, dimension=16, n_q=4, bins=16, lstm=1)).eval()
    return tiny_model(), codec


def make_clock(parts, B: int, share: bool = False) -> FrameClock:
    model, codec = parts
    gen = SpeechGenerator(model, max_batch=B, max_frames=8, sampling=GREEDY)  # ring wraps in the test
    return FrameClock(gen, codec if share else copy.deepcopy(codec), np.zeros(4, dtype=np.int64))


def audio(seed: int, n: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, HOP))).astype(np.float32)


def run_alone(parts, frames: np.ndarray) -> list[ClockFrame]:
    clock = make_clock(parts, 1)
    got: list[ClockFrame] = []
    s = clock.join(got.append)
    for f in frames:
        clock.push(s, f)
        clock.tick()
    return got


def test_batched_sessions_equal_alone_with_join_leave_and_late(parts) -> None:
    n = 12
    streams = {name: audio(20 + i, n) for i, name in enumerate("abcd")}
    late_tick = 4  # b's frame 4 misses its tick: silence in its place, then b continues
    alone = {name: run_alone(parts, f) for name, f in streams.items() if name != "b"}
    b_ref = streams["b"].copy()
    b_ref = np.concatenate([b_ref[:late_tick], np.zeros((1, HOP), np.float32), b_ref[late_tick:]])[:n + 1]
    alone["b"] = run_alone(parts, b_ref)

    clock = make_clock(parts, 3)
    got: dict[str, list[ClockFrame]] = {k: [] for k in streams}
    slot: dict[str, int] = {}
    sent = {k: 0 for k in streams}
    joins = {0: "a", 2: "b", 3: "c"}
    for tick in range(40):
        if tick in joins:
            name = joins[tick]
            slot[name] = clock.join(got[name].append)
        if "a" in slot and sent["a"] == n and len(got["a"]) == n:
            clock.leave(slot.pop("a"))
            slot["d"] = clock.join(got["d"].append)  # reuses a's slot at once
        for name, s in slot.items():
            if name == "b" and tick == 2 + late_tick:
                continue  # b is late this tick
            if sent[name] < n:
                clock.push(s, streams[name][sent[name]])
                sent[name] += 1
        clock.tick()
    assert sum(f.missed for f in got["b"][: n + 1]) == 1 and got["b"][late_tick].missed
    assert clock.counts(slot["b"])["missed"] > 1  # (after its stream ended: silence every tick)
    for name in streams:
        g, ref = got[name][: len(alone[name])], alone[name]
        if name == "b":
            g = g[: n + 1]
        assert len(g) == len(ref) and [f.position for f in g] == list(range(len(ref))), name
        assert [f.text for f in g] == [f.text for f in ref], name
        np.testing.assert_allclose(np.stack([f.audio for f in g]), np.stack([f.audio for f in ref]),
                                   atol=1e-5, err_msg=name)
    assert any(np.abs(f.audio).max() > 0 for f in got["a"])


def test_mute_uses_silence_codes_and_no_copies(parts) -> None:
    from codec.model import ParleyCodec

    before = sum(type(o) is ParleyCodec for o in gc.get_objects())
    clock = make_clock(parts, 4, share=True)
    sinks = [[] for _ in range(4)]
    slots = [clock.join(sinks[i].append) for i in range(4)]
    with pytest.raises(RuntimeError):
        clock.join(lambda f: None)
    assert sum(type(o) is ParleyCodec for o in gc.get_objects()) == before
    assert clock.codec is parts[1] and clock.gen.model is parts[0]
    clock.mute(slots[0], True)
    clock.push(slots[0], audio(1, 1)[0])  # ignored while muted
    for s in slots[1:]:
        clock.push(s, audio(s, 1)[0])
    out = clock.tick()
    assert set(out) == set(slots) and not out[slots[0]].missed
    assert clock.counts(slots[0]) == {"frames": 1, "missed": 0, "dropped": 0}
    for _ in range(4):
        clock.push(slots[1], audio(2, 1)[0])
    assert clock.counts(slots[1])["dropped"] == 0  # speech is kept (a burst)
    for _ in range(3):
        clock.push(slots[1], np.zeros(HOP, np.float32))
    assert clock.counts(slots[1])["dropped"] == 0 and len(clock.slots[slots[1]].inbox) == 7
    for _ in range(4):  # the speech is consumed
        clock.tick()
    clock.push(slots[1], np.zeros(HOP, np.float32))  # then quiet frames beyond the backlog of 2 go
    assert clock.counts(slots[1])["dropped"] == 2 and len(clock.slots[slots[1]].inbox) == 2
    tm = clock.timing()
    assert tm["ticks"] == 5 and set(tm) >= {"encode", "step", "decode", "tick", "missed", "dropped"}
    assert tm["step"]["p50_ms"] > 0 and 0 < tm["tick"]["share_p50"]
    for s in slots:
        clock.leave(s)
    clock.codec.stop_streaming()


def test_thread_paced_and_a_stalled_session_does_not_hold_others(parts) -> None:
    clock = make_clock(parts, 2)
    clock.frame_s = 0.05
    got_a: list[ClockFrame] = []
    got_b: list[ClockFrame] = []
    a, b = clock.join(got_a.append), clock.join(got_b.append)
    clock.push(b, audio(3, 1)[0])  # b sends one frame, then stalls
    clock.start()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            clock.push(a, audio(4, 1)[0])
            time.sleep(0.05)
    finally:
        clock.stop()
    assert len(got_a) >= 10 and len(got_b) >= 10  # every tick ran for both
    assert clock.counts(b)["missed"] >= len(got_b) - 2
    gaps = np.diff([f.t for f in got_a])
    assert np.median(gaps) == pytest.approx(0.05, abs=0.02)


def test_late_ticks_catch_up_on_the_grid_and_a_stall_resyncs() -> None:
    """next_deadline: ticks that overrun (a slow one every 4th) keep the clock on its frame grid on
    average; a stall longer than the allowed lag restarts the grid instead of bursting."""
    from voice.engines.clock import next_deadline

    frame, now, nxt, late, resyncs = 0.04, 0.0, 0.0, 0, 0
    for i in range(100):  # ticks of 20 ms, every 4th 70 ms (mean 32.5 ms, under the 40 ms frame)
        now = max(now, nxt) + (0.07 if i % 4 == 3 else 0.02)  # a tick starts at its deadline or when the last ends
        nxt, was_late, resync = next_deadline(nxt, now, frame, max_lag_frames=2)
        late, resyncs = late + was_late, resyncs + resync
    assert late == 49 and resyncs == 0  # each 70 ms tick and the 20 ms one after it end late (the last has none)
    assert now == pytest.approx(3.96 + 0.07)  # on the grid: the last (70 ms) tick began at its 3.96 s deadline
    # (restarting the grid at each overrun, as before, ends at 4.75 s: the clock falls behind real time)
    stall = nxt + 0.5
    assert next_deadline(nxt, stall, frame, max_lag_frames=2) == (stall, True, True)
    assert next_deadline(nxt, nxt + 0.06, frame, max_lag_frames=2) == (nxt + frame, True, False)


@pytest.mark.gpu
def test_cuda_clock_captures_once_across_join_and_leave(parts) -> None:
    """On CUDA the generator step is one graph, captured at the first tick and kept across
    sessions joining and leaving (slot reuse, reset_streaming); outputs stay finite."""
    model, codec = parts
    gen = SpeechGenerator(copy.deepcopy(model), max_batch=4, max_frames=8, sampling=GREEDY, device="cuda")
    clock = FrameClock(gen, copy.deepcopy(codec), np.zeros(4, dtype=np.int64))
    got: list[ClockFrame] = []
    a = clock.join(got.append)
    clock.push(a, audio(1, 1)[0])
    clock.tick()
    graph = gen._graph  # noqa: SLF001
    assert graph is not None
    b = clock.join(got.append)
    for i in range(12):  # past the ring's length
        clock.push(a, audio(2 + i, 1)[0])
        clock.push(b, audio(40 + i, 1)[0])
        clock.tick()
        if i == 5:
            clock.leave(a)
            a = clock.join(got.append)
    assert gen._graph is graph  # noqa: SLF001
    assert all(np.isfinite(f.audio).all() for f in got) and len(got) == 25
    assert clock.timing()["device"].startswith("cuda")
    clock.stop()
