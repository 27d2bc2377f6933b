"""One `parley bench latency|concurrency` run: each target measured in turn, then the report.

A target is a running server (`url`) or, with no URL, a local `parley serve --engine ENGINE`
started for the run on a free loopback port (`voice.bench.local`). Tables go to stdout,
progress to stderr; the JSON report and the plot are written where asked.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from dataclasses import dataclass

from model.common.errors import ParleyError
from voice.bench.concurrency import ConcurrencyConfig, measure_concurrency
from voice.bench.latency import LatencyConfig, measure_latency, print_progress
from voice.bench.local import LocalServer
from voice.bench.report import write_json
from voice.bench.stats import ratio
from voice.bench.utterances import Utterance


@dataclass(frozen=True)
class Target:
    url: str | None  # None: start a local `parley serve --engine engine`
    engine: str | None  # with a URL: the engine asked for in the offer (None: the server's)

    @property
    def label(self) -> str:
        return self.engine or self.url or "?"


def _print_report(rep) -> None:  # noqa: ANN001 - a LatencyReport or ConcurrencyReport
    print(rep.table())
    for note in rep.notes:
        print(f"note: {note}")
    print()


def server_log_path(path: str | None, t: Target, targets: list[Target]) -> str | None:
    """Where a local server's log is kept: `path`, with the engine in the name when there are several."""
    if path is None or len(targets) == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{t.engine or 'default'}{p.suffix}"))


def run_latency(targets: list[Target], utterances: list[Utterance], cfg: LatencyConfig,
                server_args: list[str], out: str | None = None, plot: str | None = None,
                server_log: str | None = None) -> int:
    """Measures every target; with two or more, prints the first/second ratios. Exit code."""
    reports, failed = [], []
    for t in targets:
        print(f"bench latency: {t.label}: {cfg.turns} turns, {len(utterances)} utterance(s)", file=sys.stderr)
        progress = print_progress("  ", cfg.turns)
        try:
            if t.url is None:
                with LocalServer(t.engine, server_args, server_log_path(server_log, t, targets)) as local_url:
                    print(f"  local server {local_url} (engine {t.engine})", file=sys.stderr)
                    rep = asyncio.run(measure_latency(local_url, utterances, cfg, t.engine, progress))
            else:
                rep = asyncio.run(measure_latency(t.url, utterances, cfg, t.engine, progress))
        except ParleyError as e:
            if len(targets) == 1:
                raise
            # comparing engines: one that cannot run must not lose the others' measurements
            print(f"parley: error: {t.label}: {e}", file=sys.stderr)
            failed.append(f"{t.label}: {e}")
            continue
        reports.append(rep)
        _print_report(rep)
    if not reports:
        raise ParleyError("no engine could be measured: " + "; ".join(failed))
    data: dict = reports[0].to_dict() if len(reports) == 1 else {"reports": [r.to_dict() for r in reports]}
    if failed:
        data["failed"] = failed
    if len(reports) > 1:
        a, b = reports[0], reports[1]
        comp = {}
        for name, fa, fb in (("voice_to_voice", a.v2v(), b.v2v()), ("barge_in_stop", a.stop(), b.stop())):
            for key in ("p50", "p90"):
                r = ratio(fa, fb, key)
                comp[f"{name}_{key}_ratio"] = r
                if r is not None:
                    print(f"{name.replace('_', ' ')} {key}: {a.engine} / {b.engine} = {r:.2f}x")
        data["comparison"] = {"a": a.engine, "b": b.engine, **comp}
    if out:
        write_json(out, data)
        print(f"report: {out}", file=sys.stderr)
    if plot:
        from voice.bench.plot import plot_reports  # noqa: PLC0415 - matplotlib only when asked

        plot_reports(reports, plot)
        print(f"plot: {plot}", file=sys.stderr)
    return 0 if not failed and all(r.counts()["answered"] for r in reports) else 1


def run_concurrency(targets: list[Target], utterances: list[Utterance], cfg: ConcurrencyConfig,
                    server_args: list[str], out: str | None = None, server_log: str | None = None) -> int:
    """Ramps sessions on every target until real time breaks; prints each report. Exit code."""
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    reports = []
    for t in targets:
        if t.url is None:
            extra = list(server_args)
            if not any(a.startswith("--max-sessions") for a in extra):
                extra += ["--max-sessions", str(max(cfg.max_sessions, 1))]
            server = LocalServer(t.engine, extra, server_log_path(server_log, t, targets))
            with server as local_url:
                rep = asyncio.run(measure_concurrency(local_url, utterances, cfg, t.engine, log, server.cpu_s))
        else:
            rep = asyncio.run(measure_concurrency(t.url, utterances, cfg, t.engine, log))
        reports.append(rep)
        _print_report(rep)
    if out:
        data = reports[0].to_dict() if len(reports) == 1 else {"reports": [r.to_dict() for r in reports]}
        write_json(out, data)
        print(f"report: {out}", file=sys.stderr)
    return 0
