"""`parley bench latency`: conversation turns over one WebRTC session, timed at the client.

A session is a sequence of turns. A normal turn waits until the agent's reply is over (the
server's "agent_done" event when it sends one) and the agent has been quiet for `quiet_s`,
pauses like a person would (`pause_s` + random jitter), plays the next utterance and waits
for the reply:

    voice-to-voice = first agent audio heard (onset, confirmed)  -  end of the user's speech

Every `barge_in_every`-th turn instead starts `barge_after_s` after the previous reply began,
while the agent is still talking:

    stop latency = agent audio falls silent (held for HOLD_MS)  -  start of the interrupting speech

and the interrupting utterance then gets its own voice-to-voice figure (onset searched after
the agent fell silent). The server's stage breakdown for a turn is taken from the data-channel
latency event received while that turn was current (`events.turn_stages`).
"""

from __future__ import annotations

import asyncio
import datetime
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aiortc.mediastreams import MediaStreamError

from voice.bench import events as ev
from voice.bench.report import LatencyReport, TurnResult, host_info
from voice.bench.utterances import Utterance
from voice.client.opus import shared as opus_packets
from voice.client import signal as sig
from voice.client.peer import ClientPeer

POLL_S = 0.01  # how often received audio is re-examined


@dataclass(frozen=True)
class LatencyConfig:
    turns: int = 10  # user turns per session
    pause_s: float = 0.8  # silence between the end of a reply and the next question ...
    pause_jitter_s: float = 0.6  # ... plus uniform(0, jitter): natural, not periodic
    barge_in_every: int = 3  # every K-th turn interrupts the reply before it (0: never)
    barge_after_s: float = 0.8  # interrupt this long after the reply became audible
    quiet_s: float = 1.0  # the agent is done after this much silence ...
    max_reply_s: float = 30.0  # ... or after this long (then the next turn starts anyway)
    reply_timeout_s: float = 20.0  # no agent audio this long after the user's speech: timed out
    hold_ms: float = sig.HOLD_MS  # silence that counts as "the agent stopped" in barge-in
    jitter_ms: float = 60.0  # jitter buffer of the player used to count underruns
    seed: int = 0


Progress = Callable[[TurnResult], None]


def print_progress(prefix: str = "", total: int | None = None, stream=sys.stderr) -> Progress:  # noqa: ANN001
    def show(t: TurnResult) -> None:
        parts = [f"{prefix}turn {t.index + 1}" + (f"/{total}" if total else "")]
        parts.append("barge-in" if t.barge_in else "        ")
        if t.stop_ms is not None:
            parts.append(f"stop {t.stop_ms:5.0f} ms" + ("" if t.stopped else " (NOT stopped)"))
        elif t.barge_in and not t.agent_was_speaking:
            parts.append("(agent already silent)")
        if t.timed_out:
            parts.append("no reply (timeout)")
        elif t.early:
            parts.append(f"EARLY reply ({t.v2v_ms:.0f} ms)")
        elif t.v2v_ms is not None:
            parts.append(f"voice-to-voice {t.v2v_ms:5.0f} ms")
        if t.stages:
            parts.append(" ".join(f"{k}={v:.0f}" for k, v in t.stages.items()))
        print("  ".join(parts), file=stream, flush=True)

    return show


def _replies_pending(sess: ClientPeer) -> bool:
    """The server has a user turn open (started, not yet ended: the user may still be talking, or
    its end is being decided) or said a turn ended and has not yet said that its reply is over.

    A Parley server sends "turn_start" and "turn_end" for every user turn and "agent_done" when the
    reply to it has been played (or interrupted); a reply that pauses between clauses (slow TTS) is
    not over, and a turn whose end is still being judged will have a reply. Servers that send no such
    events are judged by their audio alone.
    """
    starts = sum(e.type == "turn_start" for e in sess.events)
    ends = sum(e.type == "turn_end" for e in sess.events)
    done = sum(e.type == "agent_done" for e in sess.events)
    return done < ends or starts > ends


async def _wait_quiet(sess: ClientPeer, cfg: LatencyConfig, since: float) -> None:
    """Until the reply is over and the agent has been silent for `quiet_s` (or `max_reply_s`)."""
    deadline = since + cfg.max_reply_s
    while time.monotonic() < deadline:
        t = sess.now_playing()
        quiet = t - since >= cfg.quiet_s and not sess.loud_between(t - cfg.quiet_s, t)
        if quiet and not _replies_pending(sess):
            return
        await asyncio.sleep(0.05)


async def _wait_received(sess: ClientPeer, t: float, timeout: float = 2.0) -> None:
    """Until audio playing at time t has been received."""
    deadline = time.monotonic() + timeout
    while sess.now_playing() < t and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)


async def _sleep_until(t: float) -> None:
    d = t - time.monotonic()
    if d > 0:
        await asyncio.sleep(d)


async def run_turns(
    sess: ClientPeer,
    utts: list[Utterance],
    cfg: LatencyConfig,
    progress: Progress | None = None,
    first_utt: int = 0,
) -> list[TurnResult]:
    """Play `cfg.turns` turns on a connected session; return their measurements.

    When the server ends the connection (`sess.lost`) the turns measured so far are returned at
    once (fewer than `cfg.turns`; the caller says so) instead of waiting for audio that will
    never come.
    """
    results: list[TurnResult] = []
    starts: list[float] = []  # monotonic start of each turn's speech, to assign events
    play = asyncio.ensure_future(_play_turns(sess, utts, cfg, progress, first_utt, results, starts))
    lost = asyncio.ensure_future(sess.lost.wait())
    await asyncio.wait({play, lost}, return_when=asyncio.FIRST_COMPLETED)
    lost.cancel()
    track_ended = play.done() and isinstance(play.exception(), MediaStreamError)
    if track_ended:
        sess.lost.set()  # our track ended before the connection said it closed: the same loss
    if not play.done() or track_ended:  # the connection is gone: keep what was measured
        play.cancel()
        await asyncio.gather(play, return_exceptions=True)
        if results and results[-1].reply_onset is None:
            results.pop()  # the turn in flight has no answer to report
    else:
        play.result()
    _attach_events(sess, results, starts, cfg)
    return results


def lost_note(sess: ClientPeer, turns: list[TurnResult], cfg: LatencyConfig) -> str | None:
    """'the server closed the session after N of M turns', when it did."""
    if sess.lost.is_set() and len(turns) < cfg.turns:
        return f"the server closed the session after {len(turns)} of {cfg.turns} turns"
    return None


async def _play_turns(
    sess: ClientPeer,
    utts: list[Utterance],
    cfg: LatencyConfig,
    progress: Progress | None,
    first_utt: int,
    results: list[TurnResult],
    starts: list[float],
) -> None:
    rng = random.Random(cfg.seed)
    prev_onset: float | None = None
    last_activity = time.monotonic()
    for i in range(cfg.turns):
        utt = utts[(first_utt + i) % len(utts)]
        barge = (
            cfg.barge_in_every > 0 and i > 0 and i % cfg.barge_in_every == 0 and prev_onset is not None
        )
        if barge:
            await _sleep_until(prev_onset + cfg.barge_after_s)
        else:
            await _wait_quiet(sess, cfg, last_activity)
            await asyncio.sleep(cfg.pause_s + rng.uniform(0.0, cfg.pause_jitter_s))
        tr = TurnResult(index=i, audio=utt.name, barge_in=barge)
        pb = sess.player.play(utt.audio)
        s0 = await pb.started
        t_start = await sess.player.wait_sent(s0 + utt.bounds.start)
        starts.append(t_start)
        tr.speech_start = sess.rel(t_start)
        search_from = t_start
        if barge:
            await _wait_received(sess, t_start)
            tr.agent_was_speaking = sess.loud_between(t_start - 0.2, t_start)
        t_end = await sess.player.wait_sent(s0 + utt.bounds.end)
        sess.speech_ends.append(t_end)
        tr.speech_end = sess.rel(t_end)
        if barge and tr.agent_was_speaking:
            # the agent must fall silent while the user is still speaking
            t_stop = None
            limit = t_end + cfg.hold_ms / 1000 + 1.0
            while t_stop is None and time.monotonic() < limit:
                await asyncio.sleep(POLL_S)
                t_stop = sess.offset_after(t_start - 0.2, hold_ms=cfg.hold_ms)
            tr.stopped = t_stop is not None and t_stop <= t_end
            if t_stop is not None:
                tr.stop_ms = max(0.0, t_stop - t_start) * 1000
                search_from = max(t_start, t_stop)
            else:
                await _wait_quiet(sess, cfg, t_end)
                search_from = sess.now_playing()
        # the reply
        deadline = t_end + cfg.reply_timeout_s
        t_on = None
        while True:
            t_on = sess.onset_after(search_from)
            if t_on is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
        if t_on is None:
            tr.timed_out = True
            prev_onset = None
            last_activity = time.monotonic()
        else:
            tr.reply_onset = sess.rel(t_on)
            tr.v2v_ms = (t_on - t_end) * 1000
            tr.early = t_on < t_end
            prev_onset = t_on
            last_activity = t_on
        results.append(tr)
        if progress is not None:
            # events for this turn usually arrive with its first audio: give them a moment
            await asyncio.sleep(0.05)
            tr.stages = ev.turn_stages(sess.events, t_start, None)
            progress(tr)
    await _wait_quiet(sess, cfg, last_activity)


def _attach_events(
    sess: ClientPeer, results: list[TurnResult], starts: list[float], cfg: LatencyConfig
) -> None:
    for k, tr in enumerate(results):
        t_from = starts[k]
        t_to = starts[k + 1] if k + 1 < len(starts) else None
        tr.stages = ev.turn_stages(sess.events, t_from, t_to)
        tr.server_total_ms = ev.server_total_ms(sess.events, t_from, t_to)
        if tr.barge_in:
            # the barge-in event is about the previous reply, sent while this turn is current
            bi = ev.turn_event(sess.events, ev.BARGE_IN, t_from, t_to)
            if bi is not None and isinstance(bi.get("stop_ms"), (int, float)):
                tr.server_stop_ms = float(bi["stop_ms"])
        tr.user_text, tr.agent_text = ev.turn_texts(sess.events, t_from, t_to)
        tr.gap_ms = ev.turn_gap_ms(sess.events, t_from, t_to)
        tr.underruns = sess.recorder.underruns(t_from, t_to or time.monotonic(), cfg.jitter_ms / 1000)


async def measure_latency(
    url: str,
    utts: list[Utterance],
    cfg: LatencyConfig,
    engine: str | None = None,
    progress: Progress | None = None,
) -> LatencyReport:
    """Connect one session to `url`, run the turns, return the report."""
    host_before = host_info()
    for u in utts:  # the questions' Opus packets, before the clock matters
        opus_packets().utterance(u.audio)
    sess = ClientPeer(url, engine=engine)
    await sess.connect()
    try:
        turns = await run_turns(sess, utts, cfg, progress)
    finally:
        await sess.close()
    notes = [n for n in (lost_note(sess, turns, cfg),) if n]
    if sess.player.max_lag > 0.02:
        notes.append(f"client sender was late by up to {sess.player.max_lag * 1000:.0f} ms (CPU busy)")
    if sess.recorder is not None and sess.recorder.match_rate < 0.99:
        notes.append(f"only {sess.recorder.match_rate:.0%} of frames timed from packet arrival")
    return LatencyReport(
        engine=engine or str(sess.server_info.get("engine", "server default")),
        url=sess.url,
        turns=turns,
        settings={**asdict(cfg), "noise_floor_db": sess.floor_db, "threshold_db": sess.threshold_db},
        host={**host_info(), "load_avg_1m_at_start": host_before.get("load_avg_1m")},
        date=datetime.date.today().isoformat(),
        events=len(sess.events),
        event_log=[
            {"t_client": round(e.t - sess.t0, 3), **e.data} for e in sess.events if e.type != "vad"
        ],
        notes=notes,
    )
