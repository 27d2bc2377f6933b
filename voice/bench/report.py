"""The latency report: per-turn results, summaries, JSON in and out, the printed table."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from voice.bench.stats import Summary, summarize, table


@dataclass
class TurnResult:
    """One user turn as measured at the client. Times in seconds since the session start."""

    index: int
    audio: str  # source file name of the user's utterance
    barge_in: bool = False  # this utterance interrupted the agent
    speech_start: float | None = None  # user speech start (clean source), s
    speech_end: float | None = None  # user speech end (clean source), s
    reply_onset: float | None = None  # first agent audio heard, s
    v2v_ms: float | None = None  # voice-to-voice latency = reply_onset - speech_end
    early: bool = False  # the agent started before the user finished (not counted in stats)
    timed_out: bool = False  # no agent audio within the timeout
    stop_ms: float | None = None  # barge-in: agent silent - interrupting speech start
    stopped: bool | None = None  # barge-in: did the agent fall silent while the user spoke
    agent_was_speaking: bool | None = None  # barge-in: agent audio was playing when it began
    stages: dict[str, float] = field(default_factory=dict)  # server stage breakdown, ms
    server_total_ms: float | None = None  # server: its end of speech -> first audio queued
    server_stop_ms: float | None = None  # server: barge-in VAD decision -> output flushed
    user_text: str | None = None  # transcript from the server, if sent
    agent_text: str | None = None  # agent text from the server, if sent
    underruns: int = 0  # playout underruns during the turn
    gap_ms: int | None = None  # silence the server inserted mid-reply (engine behind real time); None: not sent


@dataclass
class LatencyReport:
    engine: str
    url: str
    turns: list[TurnResult]
    settings: dict
    host: dict = field(default_factory=dict)
    date: str = ""
    events: int = 0  # data-channel events received
    event_log: list[dict] = field(default_factory=list)  # [{"t_client": s since start, **event}]
    notes: list[str] = field(default_factory=list)

    # -- summaries ---------------------------------------------------------------------------
    def v2v(self) -> Summary | None:
        return summarize([t.v2v_ms for t in self.turns if t.v2v_ms is not None and not t.early])

    def stop(self) -> Summary | None:
        return summarize([t.stop_ms for t in self.turns if t.stop_ms is not None and t.stopped])

    def stage_names(self) -> list[str]:
        names: list[str] = []
        for t in self.turns:
            for k in t.stages:
                if k not in names:
                    names.append(k)
        return names

    def stage(self, name: str) -> Summary | None:
        return summarize([t.stages[name] for t in self.turns if name in t.stages])

    def server_total(self) -> Summary | None:
        return summarize([t.server_total_ms for t in self.turns if t.server_total_ms is not None])

    def unseen_by_server(self) -> Summary | None:
        """Client v2v minus the server's own figure: transport, jitter buffers, playout queue."""
        return summarize([
            t.v2v_ms - t.server_total_ms
            for t in self.turns
            if t.v2v_ms is not None and not t.early and t.server_total_ms is not None
        ])

    def counts(self) -> dict:
        bi = [t for t in self.turns if t.barge_in and t.agent_was_speaking]
        return {
            "turns": len(self.turns),
            "answered": sum(t.v2v_ms is not None and not t.early for t in self.turns),
            "early": sum(t.early for t in self.turns),
            "timed_out": sum(t.timed_out for t in self.turns),
            "barge_ins": len(bi),
            "barge_ins_not_stopped": sum(not t.stopped for t in bi),
            "underruns": sum(t.underruns for t in self.turns),
            "reply_gap_ms": sum(t.gap_ms or 0 for t in self.turns),
        }

    def table(self) -> str:
        rows: list[tuple[str, Summary | None]] = [
            ("voice-to-voice", self.v2v()),
            ("barge-in stop", self.stop()),
        ]
        rows += [(f"  server: {n}", self.stage(n)) for n in self.stage_names()]
        if self.server_total() is not None:
            rows += [("  server: total", self.server_total()),
                     ("  not seen by the server", self.unseen_by_server())]
        c = self.counts()
        foot = (
            f"turns {c['turns']}, answered {c['answered']}, early {c['early']}, "
            f"timed out {c['timed_out']}, barge-ins {c['barge_ins']} "
            f"(not stopped {c['barge_ins_not_stopped']}), underruns {c['underruns']}, "
            f"reply gaps {c['reply_gap_ms']} ms"
        )
        load = self.host.get("load_avg_1m_at_start"), self.host.get("load_avg_1m")
        if load[0] is not None and load[1] is not None:
            foot += f"\nhost load average (1 min) at start / end: {load[0]} / {load[1]} on {self.host.get('cores')} cores"
        return table(rows, title=f"engine {self.engine} @ {self.url} (ms)") + "\n" + foot

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        def s(x: Summary | None) -> dict | None:
            return None if x is None else x.to_dict()

        return {
            "engine": self.engine,
            "url": self.url,
            "date": self.date,
            "host": self.host,
            "settings": self.settings,
            "summary": {
                "voice_to_voice_ms": s(self.v2v()),
                "barge_in_stop_ms": s(self.stop()),
                "stages_ms": {n: s(self.stage(n)) for n in self.stage_names()},
                "server_total_ms": s(self.server_total()),
                "not_seen_by_server_ms": s(self.unseen_by_server()),
                "counts": self.counts(),
            },
            "events": self.events,
            "notes": self.notes,
            "event_log": self.event_log,
            "turns": [asdict(t) for t in self.turns],
        }

    @classmethod
    def from_dict(cls, d: dict) -> LatencyReport:
        return cls(
            engine=d["engine"],
            url=d["url"],
            turns=[TurnResult(**t) for t in d["turns"]],
            settings=d.get("settings", {}),
            host=d.get("host", {}),
            date=d.get("date", ""),
            events=d.get("events", 0),
            notes=d.get("notes", []),
            event_log=d.get("event_log", []),
        )


def host_info() -> dict:
    """Hardware the client ran on (the server is the same machine when started locally)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    try:  # other work on the machine skews CPU numbers: say how busy it was
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import torch  # noqa: PLC0415 - only for the GPU name

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - torch missing or broken: no GPU info
        pass
    return info


def write_json(path: str | Path, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
