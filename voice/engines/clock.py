"""One frame clock per direct engine: every frame period, all sessions in one batch.

Each tick (one codec frame: 40 ms for the shipped codec v2) takes one user frame per session from its inbox, runs ONE
batched streaming codec encode over all slots, ONE generator step (a CUDA graph on GPU) and ONE
batched streaming codec decode, then hands every session its frame. Sessions join and leave at
any tick: a slot is reused with ``codec.reset_streaming(mask)`` and the generator's slot reset
(no recapture, no per-session model or codec copy; the codec runs over all ``max_batch`` rows, so
its cost is that of the full batch whatever the number of sessions).

A session whose frame is not there at its tick (late client, lost packets) does not hold the
others: its frame is silence (zeros through the encoder) and ``missed`` counts it; a session
that has not sent its first frame yet does not advance at all. An inbox longer than
``max_backlog`` frames drops its oldest frame if that one is quiet (``dropped``), so a late burst
does not build up latency for long, while speech is kept (up to ``max_burst`` frames: a client
of the Realtime protocol may send seconds of audio at once).
A session can be ``muted``: its input is then the codec's silence codes (half duplex while
the agent replies, as in training) and its audio inbox is discarded.

``tick()`` runs one frame (tests drive it by hand); ``start()`` runs it on a thread paced on the
monotonic clock's frame grid (``next_deadline``): a tick that overruns its period is counted and
the next ones start at once until the clock is back on the grid, so a few slow ticks cost no real
time on average (the inbox holds the frames that came meanwhile); a clock more than ``max_backlog``
frames behind restarts the grid from now (``resyncs``) rather than replay a stall as a burst.
``timing()`` gives p50/p99 ms per stage and the share of the frame period (for the benchmark).
On CUDA the codec's encode and decode are CUDA graphs (codec/graph.py; its eager launches took 7-8 + 6 ms
a tick in a loaded server against 2.8 + 2.4 alone, H200 run 5). A tick waits for the GPU twice (the step's
tokens, the decoded audio); ``start()`` lowers the process's GIL switch interval to ``gil_switch_s`` (1 ms)
so the clock gets the GIL back soon after each wait.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from model.generator import SpeechGenerator
from model.layout import Undelayer

log = logging.getLogger(__name__)

STAGES = ("encode", "step", "decode", "tick")
# The clock thread gives up the GIL while it waits for the GPU (two waits a tick); Python hands it back
# only after the switch interval (5 ms by default) if another thread runs Python meanwhile (the engine
# host's event loop: every session's frames), i.e. up to +10 ms a tick under load. 1 ms while it runs.
GIL_SWITCH_S = 0.001


@dataclass
class ClockFrame:
    """What one session gets from one tick."""

    slot: int
    t: float  # arrival time of the user frame it answers (given to push), else the tick's time
    text: int  # text token (PAD when silent)
    audio: np.ndarray  # (hop,) float32 decoded agent audio (zeros before the first whole frame)
    position: int  # frame index since the session joined
    missed: bool  # this tick's user frame was missing and replaced by silence


@dataclass
class _Slot:
    """Per-session state of the clock (host side; the model and codec state is in their batch rows)."""

    sink: Callable[[ClockFrame], None]
    undelay: Undelayer
    inbox: collections.deque = field(default_factory=collections.deque)  # of ((hop,) float32, t)
    started: bool = False  # first user frame arrived
    muted: bool = False
    missed: int = 0
    dropped: int = 0
    frames: int = 0


class FrameClock:
    def __init__(self, gen: SpeechGenerator, codec: torch.nn.Module, silence: np.ndarray,
                 frame_s: float | None = None, max_backlog: int = 2, max_burst: int = 64,
                 quiet_rms: float = 0.01, history: int = 4096, gil_switch_s: float | None = GIL_SWITCH_S,
                 codec_graphs: bool | None = None) -> None:
        self.gen, self.layout = gen, gen.layout
        self.device = gen.device
        self.codec = codec.to(self.device).eval()
        self.hop = codec.hop_length
        self.frame_s = frame_s if frame_s is not None else self.hop / codec.sample_rate
        self.B, self.max_backlog, self.max_burst, self.quiet_rms = gen.max_batch, max_backlog, max_burst, quiet_rms
        self.silence = torch.as_tensor(silence, dtype=torch.long, device=self.device)  # (K,)
        self._silence_np = np.asarray(silence, dtype=np.int64)
        self.gil_switch_s = gil_switch_s
        self.codec.start_streaming(self.B)
        self.codec_graphed = False  # encode / decode as CUDA graphs (codec/graph.py): on CUDA unless codec_graphs
        self._encode, self._decode = self.codec.encode, self.codec.decode
        if codec_graphs if codec_graphs is not None else self.device.type == "cuda":
            try:
                from codec.graph import GraphedCodec  # noqa: PLC0415

                g = GraphedCodec(self.codec, self.B, self.layout.n_q)
                self._encode, self._decode, self.codec_graphed = g.encode, g.decode, g.graphs_on
            except Exception:  # noqa: BLE001 - slower, not broken: the eager codec as before
                log.exception("frame clock: the codec's CUDA graphs failed to capture; streaming eagerly")
        self.slots: dict[int, _Slot] = {}
        self.lock = threading.Lock()  # join/leave/tick
        self.times: collections.deque = collections.deque(maxlen=history)  # (enc, step, dec, tick, n, i)
        self.n_ticks = 0
        self.overruns = self.missed = self.dropped = self.resyncs = 0  # totals since reset_timing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- sessions ---------------------------------------------------------------------------
    def join(self, sink: Callable[[ClockFrame], None]) -> int:
        """A slot for a new session (RuntimeError when all are taken); ``sink`` gets its frames."""
        with self.lock:
            s = self.gen.join()
            mask = torch.zeros(self.B, dtype=torch.bool)
            mask[s] = True
            self.codec.reset_streaming(mask.to(self.device))
            self.slots[s] = _Slot(sink, Undelayer(self.layout))
            return s

    def leave(self, slot: int) -> None:
        with self.lock:
            if self.slots.pop(slot, None) is not None:
                self.gen.leave(slot)

    def push(self, slot: int, frame: np.ndarray, t: float | None = None) -> None:
        """One user frame (hop,) float32 at the codec's rate, arrived at ``t`` (monotonic; default
        now); thread-safe."""
        st = self.slots.get(slot)
        if st is None or st.muted:
            return
        st.inbox.append((np.asarray(frame, dtype=np.float32), time.monotonic() if t is None else t))
        st.started = True
        while len(st.inbox) > self.max_backlog:
            oldest = st.inbox[0][0]
            if len(st.inbox) <= self.max_burst and float(np.sqrt(np.mean(oldest**2))) >= self.quiet_rms:
                break  # speech: kept
            st.inbox.popleft()
            st.dropped += 1
            self.dropped += 1

    def mute(self, slot: int, muted: bool) -> None:
        st = self.slots.get(slot)
        if st is not None:
            st.muted = muted
            st.inbox.clear()
            st.started = st.started or muted

    def counts(self, slot: int) -> dict[str, int]:
        st = self.slots[slot]
        return {"frames": st.frames, "missed": st.missed, "dropped": st.dropped}

    # --- one frame ----------------------------------------------------------------------------
    @torch.no_grad()
    def tick(self) -> dict[int, ClockFrame]:
        """Run one frame for every session; returns (and hands to the sinks) their frames."""
        with self.lock:
            t0 = time.perf_counter()
            now = time.monotonic()
            audio = np.zeros((self.B, self.hop), dtype=np.float32)  # (B, hop)
            adv = np.zeros(self.B, dtype=bool)
            muted = np.zeros(self.B, dtype=bool)
            missed: dict[int, bool] = {}
            t_in: dict[int, float] = {}
            for s, st in self.slots.items():
                if not st.started:
                    continue
                adv[s], muted[s], missed[s] = True, st.muted, False
                if st.muted:
                    continue
                if st.inbox:
                    audio[s], t_in[s] = st.inbox.popleft()
                else:  # late: silence, counted
                    missed[s] = True
                    st.missed += 1
                    self.missed += 1
            x = torch.from_numpy(audio).to(self.device)[:, None]  # (B, 1, hop)
            codes = self._encode(x)[:, : self.layout.n_q, 0]  # (B, K)
            mt = torch.from_numpy(muted).to(self.device)
            codes = torch.where(mt[:, None], self.silence[None], codes)
            t1 = time.perf_counter()
            text, cols, pos = self.gen.step_rows(codes, torch.from_numpy(adv).to(self.device))
            rows = torch.cat([text[:, None], cols, pos[:, None]], 1).cpu().numpy()  # (B, 1 + K + 1): one wait
            text, cols, pos = rows[:, 0], rows[:, 1:-1], rows[:, -1]
            t2 = time.perf_counter()
            dec = np.repeat(self._silence_np[None], self.B, 0)  # (B, K)
            has = np.zeros(self.B, dtype=bool)
            for s in missed:
                f = self.slots[s].undelay.push(cols[s])
                if f is not None:
                    dec[s], has[s] = f, True
            wav = self._decode(torch.from_numpy(dec).to(self.device)[:, :, None])  # (B, 1, hop)
            wav = wav[:, 0].float().cpu().numpy()
            t3 = time.perf_counter()
            out: dict[int, ClockFrame] = {}
            for s, m in missed.items():
                st = self.slots[s]
                st.frames += 1
                a = wav[s] if has[s] else np.zeros(self.hop, dtype=np.float32)
                out[s] = ClockFrame(s, t_in.get(s, now), int(text[s]), a, int(pos[s]), m)
            self.times.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, len(missed), self.n_ticks))
            self.n_ticks += 1
            sinks = [(self.slots[s].sink, f) for s, f in out.items()]
        for sink, f in sinks:
            sink(f)
        return out

    # --- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            if self.gil_switch_s is not None:  # process-wide: the clock is this process's real-time thread
                sys.setswitchinterval(min(sys.getswitchinterval(), self.gil_switch_s))
            self._thread = threading.Thread(target=self._run, name="frame-clock", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and the codec's streaming state (the clock cannot tick after this)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.codec.stop_streaming()

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            if self.slots:
                self.tick()
            nxt, late, resync = next_deadline(nxt, time.monotonic(), self.frame_s, self.max_backlog)
            if self.slots:
                self.overruns += late
                self.resyncs += resync
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    # --- timing -----------------------------------------------------------------------------
    def reset_timing(self) -> None:
        self.times.clear()
        self.overruns = self.missed = self.dropped = self.resyncs = 0

    def timing(self, since: int = 0) -> dict:
        """Per stage (encode, step, decode, tick): p50/p99 ms and share of the frame over the
        ticks numbered >= ``since`` (of the last ``history``); counters since ``reset_timing``."""
        t = np.array(self.times, dtype=np.float64).reshape(-1, 6)
        t = t[t[:, 5] >= since]
        res: dict = {"frame_ms": 1000 * self.frame_s, "ticks": len(t), "next_tick": self.n_ticks,
                     "overruns": self.overruns, "resyncs": self.resyncs,
                     "device": str(self.device), "slots": self.B,
                     "sessions_p50": float(np.median(t[:, 4])) if len(t) else 0.0}
        for i, name in enumerate(STAGES):
            ms = 1000 * t[:, i] if len(t) else np.zeros(1)
            p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
            res[name] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                         "share_p50": round(p50 / (1000 * self.frame_s), 4),
                         "share_p99": round(p99 / (1000 * self.frame_s), 4)}
        res["missed"], res["dropped"] = self.missed, self.dropped
        return res


def next_deadline(nxt: float, now: float, frame_s: float, max_lag_frames: int) -> tuple[float, bool, bool]:
    """The deadline of the next tick after the one due at ``nxt`` ended at ``now`` -> (deadline,
    late: it ended after the next deadline, resync: more than ``max_lag_frames`` behind, the grid
    restarts from now). A late clock keeps its grid and catches up by ticking at once."""
    nxt += frame_s
    if now <= nxt:
        return nxt, False, False
    if now - nxt > max_lag_frames * frame_s:
        return now, True, True
    return nxt, True, False
