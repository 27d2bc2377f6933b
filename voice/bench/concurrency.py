"""`parley bench concurrency`: ramp simultaneous sessions until real time breaks.

Steps of 1, 2, 4, ... sessions (up to --max, which is always tried last; or the steps given, e.g. 64,96,128). At each step all
sessions connect, start at random offsets within `stagger_s` (users do not speak in sync), and
run `turns` ordinary turns each. A step is **held** when
  * no session was refused, timed out, failed to connect or was closed by the server,
  * output underruns stay under `underrun_limit` (fraction of received frames that missed
    their slot in a player with a `jitter_ms` buffer),
  * the replies' gaps stay under `gap_limit` (silence the server inserted while an engine was still
    generating, `agent_done`'s `gap_ms`, as a fraction of the replies' played + gap time: an engine
    behind real time shows here, not in the underruns, since the server keeps sending frames), and
  * voice-to-voice p90 over all turns of the step stays under `p90_limit_ms` (default: twice
    the p90 of the first step, the single-session one: given steps start with it unless a limit is
    given; i.e. "latency degraded by contention").
The ramp stops at the first step not held; the answer is the largest step held.

Beside the client-side numbers, each step keeps the server's own view when it has one
(`GET /stats?since=N`, the direct engine's frame clock over the ticks of that step: p50/p99 ms of
the whole tick, the batched codec encode, the generator step and the codec decode, their share of
the frame period, and the user frames that missed their tick). The server's `GET /health`
(engine, device, weights) goes into the report, so every row says which weights it ran.

The client is Python too (aiortc, Opus, SRTP): one process lags past ~16-32 sessions, which would
measure the client, not the server. Larger steps spread their sessions over client processes
(`client_procs`; default one per 16 sessions, at most half the cores); each process returns
its sessions as `SessionResult`s, and every step reports the client's worst lag. Each step also
reports the cores the server's processes (a local server: the engine host and its front workers)
and the client's used (CPU seconds per second of the step): which side ran out of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

from model.common.errors import ParleyError
from voice.bench.latency import LatencyConfig, lost_note, run_turns
from voice.bench.local import tree_cpu_s
from voice.bench.report import host_info
from voice.bench.stats import Summary, summarize
from voice.bench.utterances import Utterance
from voice.client.opus import shared as opus_packets
from voice.client.peer import ClientPeer


@dataclass(frozen=True)
class ConcurrencyConfig:
    max_sessions: int = 8
    steps: tuple[int, ...] = ()  # the steps, ascending (the last is max_sessions); (): 1, 2, 4, ... max_sessions
    turns: int = 2  # turns per session per step
    stagger_s: float = 2.0  # sessions start at uniform(0, stagger_s)
    p90_limit_ms: float | None = None  # None: 2 x the first step's p90 (one session on the ramp)
    underrun_limit: float = 0.01  # fraction of received frames
    gap_limit: float = 0.01  # fraction of the replies' time filled with silence by the server
    jitter_ms: float = 60.0
    seed: int = 0
    client_procs: int = 0  # client processes at the largest step; 0: one per 16 sessions, <= half the cores
    sessions_per_proc: int = 8  # a step spreads its sessions over ceil(n / this) processes


@dataclass
class SessionResult:
    """One client session of a step, as plain numbers (it comes back from a client process)."""

    error: str = ""  # it could not connect (refused, timed out)
    lost: str | None = None  # the server closed it before its turns were done
    v2v: list[float] = field(default_factory=list)  # ms, answered turns (not early ones)
    timeouts: int = 0
    frames: int = 0  # received audio frames from the first turn on
    underruns: int = 0
    max_lag_ms: float = 0.0  # worst lateness of this client's own sender
    played_ms: float = 0.0  # the server's agent_done events
    gap_ms: float = 0.0


@dataclass
class Step:
    sessions: int
    held: bool = False
    reason: str = ""
    v2v: dict | None = None  # Summary as dict
    underrun_rate: float = 0.0
    gap_rate: float = 0.0  # replies' gap_ms / (played_ms + gap_ms), from the servers' agent_done events
    timeouts: int = 0
    failed_sessions: int = 0
    client_max_lag_ms: float = 0.0  # worst lateness of the client's own sender
    client_procs: int = 1  # client processes the step's sessions ran in
    wall_s: float = 0.0
    server_cores: float | None = None  # CPU seconds of the server's processes per second of the step
    client_cores: float | None = None  # the same for the bench client (this process and its children but the server)
    frame_clock: dict | None = None  # the server's frame-clock timing over this step (direct engine)


@dataclass
class ConcurrencyReport:
    url: str
    engine: str
    max_held: int
    steps: list[Step] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    date: str = ""
    notes: list[str] = field(default_factory=list)
    server: dict = field(default_factory=dict)  # the server's GET /health (engine, device, weights)

    def to_dict(self) -> dict:
        return {
            "url": self.url,
            "engine": self.engine,
            "server": self.server,
            "max_held": self.max_held,
            "date": self.date,
            "host": self.host,
            "settings": self.settings,
            "notes": self.notes,
            "steps": [asdict(s) for s in self.steps],
        }

    def table(self) -> str:
        head = (f"{'sessions':>8}{'held':>6}{'p50':>8}{'p90':>8}{'max':>8}{'underruns':>11}{'gaps':>7}"
                f"{'timeouts':>10}{'cores srv/cli':>15}  reason")
        lines = [f"engine {self.engine} @ {self.url}: voice-to-voice (ms) per step", head, "-" * len(head)]
        for s in self.steps:
            v = s.v2v or {}
            f = lambda k: f"{v[k]:.0f}" if k in v else "-"  # noqa: E731
            c = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
            lines.append(
                f"{s.sessions:>8}{'yes' if s.held else 'NO':>6}{f('p50'):>8}{f('p90'):>8}{f('max'):>8}"
                f"{s.underrun_rate:>10.1%} {s.gap_rate:>6.1%} {s.timeouts:>10}"
                f"{c(s.server_cores) + '/' + c(s.client_cores):>15}  {s.reason}"
            )
        lines.append(f"largest number of real-time sessions held: {self.max_held}")
        clock = [s for s in self.steps if s.frame_clock]
        if clock:
            sv = self.server
            lines += ["", f"server frame clock ({sv.get('device', '?')}, weights {sv.get('weights', '?')}, "
                      f"codec {sv.get('codec', '?')}): ms per {clock[0].frame_clock['frame_ms']:.0f} ms frame, p50/p99",
                      clock_header(), "-" * len(clock_header())]
            lines += [clock_row(s.sessions, s.frame_clock) for s in clock]
        return "\n".join(lines)


def clock_header() -> str:
    return (f"{'sessions':>8}{'ticks':>7}{'tick':>14}{'share':>13}{'encode':>14}{'step':>14}{'decode':>14}"
            f"{'missed':>8}{'overruns':>9}")


def clock_row(n: int, fc: dict) -> str:
    """One line of the frame-clock table from FrameClock.timing()."""
    pp = lambda k: f"{fc[k]['p50_ms']:.1f}/{fc[k]['p99_ms']:.1f}"  # noqa: E731
    share = f"{fc['tick']['share_p50']:.0%}/{fc['tick']['share_p99']:.0%}"
    return (f"{n:>8}{fc['ticks']:>7}{pp('tick'):>14}{share:>13}{pp('encode'):>14}{pp('step'):>14}"
            f"{pp('decode'):>14}{fc['missed']:>8}{fc['overruns']:>9}")


async def server_json(url: str, path: str) -> dict | None:
    """GET url + path as JSON; None when the server does not have it (older server, other engine)."""
    import aiohttp  # noqa: PLC0415

    try:
        async with aiohttp.ClientSession() as http, http.get(url + path, timeout=aiohttp.ClientTimeout(10)) as r:
            return await r.json() if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


def parse_steps(text: str) -> tuple[int, ...]:
    """`--max`: "N" (the ramp up to N) or ascending steps "64,96,128"."""
    try:
        steps = tuple(int(x) for x in str(text).split(","))
    except ValueError:
        raise ParleyError(f"--max wants a number or ascending numbers like 64,96,128, not {text!r}") from None
    if min(steps) < 1 or list(steps) != sorted(set(steps)):
        raise ParleyError(f"--max: steps must be ascending and at least 1, not {text!r}")
    return steps


def planned_steps(cfg: "ConcurrencyConfig") -> list[int]:
    """The steps to run: the given ones or the ramp; given steps without `p90_limit_ms` start with one
    session, whose p90 sets the limit (a first step of 112 would measure its own limit under load)."""
    steps = list(cfg.steps) or ramp(cfg.max_sessions)
    return [1, *steps] if cfg.p90_limit_ms is None and steps[0] != 1 else steps


def ramp(max_sessions: int) -> list[int]:
    steps, n = [], 1
    while n < max_sessions:
        steps.append(n)
        n *= 2
    steps.append(max_sessions)
    return steps


def session_result(sess: ClientPeer, turns: list, lcfg: LatencyConfig, jitter_s: float) -> SessionResult:
    r = SessionResult(lost=lost_note(sess, turns, lcfg))  # closed by the server: its turns count
    r.v2v = [t.v2v_ms for t in turns if t.v2v_ms is not None and not t.early]
    r.timeouts = sum(t.timed_out for t in turns)
    if sess.recorder is not None and sess.recorder.frames:
        rec = sess.recorder
        t_from = rec.frames[0].arrival + 1.0  # from the first turn on (set-up is not real time)
        r.frames = rec.frames_between(t_from, float("inf"))
        r.underruns = rec.underruns(t_from, float("inf"), jitter_s)
    r.max_lag_ms = sess.player.max_lag * 1000
    for e in sess.events:
        if e.type == "agent_done":
            r.played_ms += e.data.get("played_ms") or 0
            r.gap_ms += e.data.get("gap_ms") or 0
    return r


async def _one(
    url: str, engine: str | None, utts: list[Utterance], lcfg: LatencyConfig, start: float, k: int, jitter_s: float
) -> SessionResult:
    """One session: connect at wall-clock time `start`, run its turns, measure."""
    await asyncio.sleep(max(0.0, start - time.time()))
    sess = ClientPeer(url, engine=engine)
    try:
        await sess.connect()
    except ParleyError as e:
        return SessionResult(error=str(e))
    try:
        turns = await run_turns(sess, utts, lcfg, first_utt=k)
    finally:
        await sess.close()
    return session_result(sess, turns, lcfg, jitter_s)


Plan = list[tuple[int, float, LatencyConfig]]  # (session index, wall-clock start, its config)


async def _run_plan(url: str, engine: str | None, utts: list[Utterance], plan: Plan, jitter_s: float) -> list:
    for u in utts:  # encode the questions once for this process's sessions, before any of them starts
        opus_packets().utterance(u.audio)
    return list(await asyncio.gather(*(_one(url, engine, utts, c, start, k, jitter_s) for k, start, c in plan)))


def _client_process(url: str, engine: str | None, utts: list[Utterance], plan: Plan, jitter_s: float) -> list:
    """A client process's share of a step (runs in a spawned process: its own event loop)."""
    return asyncio.run(_run_plan(url, engine, utts, plan, jitter_s))


def client_procs(n: int, cfg: ConcurrencyConfig) -> int:
    """Client processes for a step of n sessions (1: in this process)."""
    cap = cfg.client_procs or max(1, (os.cpu_count() or 2) // 2)
    return max(1, min(cap, math.ceil(n / cfg.sessions_per_proc), n))


async def run_step(
    url: str, engine: str | None, utts: list[Utterance], n: int, cfg: ConcurrencyConfig,
    pool: ProcessPoolExecutor | None = None,
) -> Step:
    rng = random.Random(cfg.seed + n)
    lcfg = LatencyConfig(turns=cfg.turns, barge_in_every=0, jitter_ms=cfg.jitter_ms)
    before = await server_json(url, "/stats")
    since = ((before or {}).get("frame_clock") or {}).get("next_tick", 0)
    procs = client_procs(n, cfg) if pool is not None else 1
    m0, t0 = time.monotonic(), time.time() + (3.0 if procs > 1 else 0.0)  # processes spawn and import first
    plan = [(k, t0 + rng.uniform(0, cfg.stagger_s), replace(lcfg, seed=cfg.seed + 1000 * n + k)) for k in range(n)]
    jitter_s = cfg.jitter_ms / 1000
    if procs == 1:
        results = await _run_plan(url, engine, utts, plan, jitter_s)
    else:
        loop = asyncio.get_running_loop()
        shares = await asyncio.gather(*(
            loop.run_in_executor(pool, _client_process, url, engine, utts, plan[i::procs], jitter_s)
            for i in range(procs)
        ))
        results = [r for share in shares for r in share]
    step = Step(sessions=n, wall_s=time.monotonic() - m0, client_procs=procs)
    step.frame_clock = ((await server_json(url, f"/stats?since={since}")) or {}).get("frame_clock")
    v2v, frames, under, played_ms, gap_ms = [], 0, 0, 0.0, 0.0
    errors = [r.error for r in results if r.error]
    lost = [r.lost for r in results if not r.error and r.lost]
    step.failed_sessions = len(errors)
    for r in results:
        if r.error:
            continue
        v2v += r.v2v
        step.timeouts += r.timeouts
        frames, under = frames + r.frames, under + r.underruns
        step.client_max_lag_ms = max(step.client_max_lag_ms, r.max_lag_ms)
        played_ms, gap_ms = played_ms + r.played_ms, gap_ms + r.gap_ms
    s: Summary | None = summarize(v2v)
    step.v2v = None if s is None else s.to_dict()
    step.underrun_rate = under / frames if frames else 0.0
    step.gap_rate = gap_ms / (played_ms + gap_ms) if played_ms + gap_ms else 0.0
    if errors and step.failed_sessions == n and n == 1:
        raise ParleyError(errors[0])  # not even one session: the server is not usable
    if errors:
        step.reason = f"{step.failed_sessions} session(s) failed: {errors[0]}"
    if lost:
        step.reason = "; ".join(filter(None, [step.reason, f"{len(lost)} session(s): {lost[0]}"]))
    return step


async def measure_concurrency(
    url: str, utts: list[Utterance], cfg: ConcurrencyConfig, engine: str | None = None, log=print,  # noqa: ANN001
    server_cpu: Callable[[], float | None] | None = None,
) -> ConcurrencyReport:
    """The ramp; `server_cpu` (a local server's CPU seconds so far) adds the server's cores per step."""
    report = ConcurrencyReport(
        url=url,
        engine=engine or "server default",
        max_held=0,
        settings=asdict(cfg),
        host=host_info(),
        date=datetime.date.today().isoformat(),
        server=await server_json(url, "/health") or {},
    )
    limit = cfg.p90_limit_ms
    with contextlib.ExitStack() as stack:
        pool, most = None, client_procs(cfg.max_sessions, cfg)
        if most > 1:  # spawned once for the ramp, shut down with it
            pool = ProcessPoolExecutor(most, mp_context=multiprocessing.get_context("spawn"))
            stack.callback(pool.shutdown, cancel_futures=True)
        for n in planned_steps(cfg):
            procs = client_procs(n, cfg) if pool is not None else 1
            log(f"concurrency: {n} session(s) ..." + (f" ({procs} client processes)" if procs > 1 else ""))
            srv0, cli0 = server_cpu() if server_cpu else None, tree_cpu_s(os.getpid())
            step = await run_step(url, engine, utts, n, cfg, pool)
            srv1, cli1 = server_cpu() if server_cpu else None, tree_cpu_s(os.getpid())
            srv = srv1 - srv0 if srv0 is not None and srv1 is not None else None
            if srv is not None:
                step.server_cores = srv / step.wall_s
            if cli0 is not None and cli1 is not None:  # a local server is this process's child: not the client's
                step.client_cores = (cli1 - cli0 - (srv or 0.0)) / step.wall_s
            p90 = (step.v2v or {}).get("p90")
            if limit is None and not report.steps and p90 is not None:  # the first step sets it
                limit = 2 * p90
                report.settings["p90_limit_ms"] = limit
            if not step.reason:
                if step.timeouts:
                    step.reason = f"{step.timeouts} turn(s) without a reply"
                elif p90 is None:
                    step.reason = "no turn answered"
                elif step.underrun_rate > cfg.underrun_limit:
                    step.reason = f"underruns {step.underrun_rate:.1%} > {cfg.underrun_limit:.1%}"
                elif step.gap_rate > cfg.gap_limit:
                    step.reason = f"reply gaps {step.gap_rate:.1%} > {cfg.gap_limit:.1%} (the engine behind real time)"
                elif limit is not None and p90 > limit:
                    step.reason = f"p90 {p90:.0f} ms > limit {limit:.0f} ms"
            step.held = not step.reason
            if step.client_max_lag_ms > 50:
                report.notes.append(
                    f"{n} sessions: the benchmark client itself lagged {step.client_max_lag_ms:.0f} ms "
                    f"in {step.client_procs} process(es) (client CPU-bound: results are a lower bound for the server)"
                )
            report.steps.append(step)
            log(f"  {n} session(s): {'held' if step.held else 'NOT held: ' + step.reason}")
            if not step.held:
                break
            report.max_held = n
    return report
