"""`parley bench concurrency` with the direct engine: the server's frame-clock timing per step
(GET /stats?since=N) and the weights it ran (GET /health) reach the report and its table."""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
from aiohttp import web

pytest.importorskip("model.llama")

from tests.test_s2s_engine import parts  # noqa: E402, F401 - the tiny model + codec fixture
from voice.bench.concurrency import ConcurrencyReport, Step, server_json  # noqa: E402
from voice.server.app import Server, ServerConfig  # noqa: E402


def test_stats_and_health_reach_the_report(parts) -> None:  # noqa: F811
    from voice.engines.direct import DirectConfig, DirectEngine

    model, codec = parts
    eng = DirectEngine(DirectConfig(device="cpu", max_sessions=2, weights="tiny"), model=model,
                       codec=copy.deepcopy(codec), detokenize=lambda ids: "")

    async def main() -> tuple[dict, dict, dict]:
        server = Server(eng, ServerConfig(max_sessions=2))
        runner = web.AppRunner(server.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
        try:
            s = eng.session()
            for _ in range(3):
                eng.clock.push(s.slot, np.zeros(1280, np.float32))
                await asyncio.sleep(0.1)
            first = await server_json(url, "/stats")
            later = await server_json(url, f"/stats?since={first['frame_clock']['next_tick']}")
            health = await server_json(url, "/health")
            assert await server_json(url, "/nope") is None
            await s.close()
            return first, later, health
        finally:
            await runner.cleanup()

    first, later, health = asyncio.run(main())
    fc = first["frame_clock"]
    assert fc["ticks"] >= 2 and fc["device"] == "cpu" and fc["frame_ms"] == 80.0
    assert fc["step"]["p50_ms"] > 0 and fc["tick"]["p99_ms"] >= fc["tick"]["p50_ms"]
    assert later["frame_clock"]["ticks"] < fc["ticks"] + 3
    assert health["weights"] == "tiny" and health["engine"] == "direct"

    rep = ConcurrencyReport(url="u", engine="direct", max_held=1, server=health,
                            steps=[Step(sessions=1, held=True, v2v={"p50": 300, "p90": 310, "max": 320}, frame_clock=fc)])
    table = rep.table()
    assert "server frame clock (cpu, weights tiny" in table and "encode" in table
    assert rep.to_dict()["steps"][0]["frame_clock"]["tick"] == fc["tick"]
