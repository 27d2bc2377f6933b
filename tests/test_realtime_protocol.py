"""The Realtime protocol layer with a fake engine (the tone engine: fixed reply after 300 ms),
the real Silero VAD and real recorded speech: event codec, validation, event order, barge-in,
manual turns, the session limit, the beta dialect."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import numpy as np
import pytest

from realtime_util import RawClient, b64, connected, of_type, prompt_pcm, serve
from voice.engines.tone import ToneConfig, ToneEngine
from voice.realtime import protocol as p
from voice.realtime.config import Settings, apply_update, render_session, shape_of
from voice.realtime.playout import Playout, played_samples
from model.samples import have_prompts
from voice.server.echo_guard import EchoHint
from voice.server.turns import TurnConfig

pytestmark = pytest.mark.timeout(120)
needs_prompts = pytest.mark.skipif(not have_prompts(), reason="asterisk prompts / ffmpeg not installed")


# -- codec --------------------------------------------------------------------------------------
@pytest.mark.parametrize("msg, code", [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    ('{"event_id": "e1"}', "invalid_event"),
    ('{"type": "no.such.event"}', "invalid_event_type"),
    ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_base64"),
    ('{"type": "input_audio_buffer.append", "audio": "AAEC"}', "invalid_audio_format"),  # 3 bytes
    ('{"type": "input_audio_buffer.append"}', "invalid_value"),
    ('{"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": -1}', "invalid_value"),
    ('{"type": "conversation.item.truncate", "audio_end_ms": 10}', "invalid_value"),
    ('{"type": "session.update", "session": "audio"}', "invalid_value"),
])
def test_malformed_client_events_raise_protocol_errors(msg: str, code: str) -> None:
    with pytest.raises(p.ProtocolError) as e:
        p.parse_client_event(msg)
    assert e.value.code == code
    ev = p.error_event(e.value)
    assert ev["type"] == "error" and ev["error"]["code"] == code and ev["error"]["message"]


def test_client_events_parse_to_typed_events() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], dtype="<i2")
    ev = p.parse_client_event(json.dumps({"type": "input_audio_buffer.append", "event_id": "e7",
                                          "audio": base64.b64encode(pcm.tobytes()).decode()}))
    assert isinstance(ev, p.AudioAppend) and ev.event_id == "e7" and ev.pcm.tolist() == pcm.tolist()
    ev = p.parse_client_event('{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, '
                              '"audio_end_ms": 1500}')
    assert ev == p.ItemTruncate(None, "i", 0, 1500)
    assert isinstance(p.parse_client_event('{"type": "response.create"}'), p.ResponseCreate)
    assert isinstance(p.parse_client_event('{"type": "output_audio_buffer.clear"}'), p.Unsupported)
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    back = p.decode_pcm16(p.encode_pcm16(x)).astype(np.float32) / 32767
    assert np.abs(back - x).max() < 1e-4


def test_dialects_name_the_events_they_use() -> None:
    assert p.dialect_of({"OpenAI-Beta": "realtime=v1"}) == "beta" and p.dialect_of({}) == "ga"
    assert p.Names.of("ga").audio_delta == "response.output_audio.delta"
    assert p.Names.of("beta").audio_delta == "response.audio.delta"
    assert p.Names.of("beta").text_delta == "response.text.delta"
    assert p.Names.of("ga").transcript_delta == "response.output_audio_transcript.delta"


def test_session_update_accepts_both_shapes_and_refuses_other_formats() -> None:
    turn = TurnConfig()
    s = Settings()
    ga = apply_update(s, {"type": "realtime", "output_modalities": ["text"], "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad",
                                                                          "silence_duration_ms": 700}}}}, turn)
    assert ga.modalities == ("text",) and ga.vad is not None and ga.vad.silence_duration_ms == 700
    assert ga.vad.turn_config(turn).stop_ms == 700.0
    beta = apply_update(s, {"modalities": ["audio", "text"], "input_audio_format": "pcm16",
                            "turn_detection": None, "voice": "alloy"}, turn)
    assert beta.vad is None and beta.voice == "alloy" and beta.audio_out
    for bad in ({"input_audio_format": "g711_ulaw"}, {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
                {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}},
                {"turn_detection": {"type": "push_to_talk"}}, {"modalities": ["video"]},
                {"turn_detection": {"threshold": 3}}, {"type": "transcription"}):
        with pytest.raises(p.ProtocolError):
            apply_update(s, bad, turn)
    assert render_session(beta, "beta", "s")["turn_detection"] is None
    assert shape_of({"type": "realtime"}) == "ga" and shape_of({"modalities": ["text"]}) == "beta"
    assert shape_of({"instructions": "x"}) is None
    assert render_session(ga, "ga", "s")["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700


def test_noise_reduction_type_is_the_echo_hint() -> None:
    """GA audio.input.noise_reduction / beta input_audio_noise_reduction -> EchoHint (null: unknown)."""
    turn, s = TurnConfig(), Settings()
    assert s.echo_hint is EchoHint.UNKNOWN and render_session(s, "ga", "s")["audio"]["input"]["noise_reduction"] is None
    ga = apply_update(s, {"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "near_field"}}}}, turn)
    assert ga.echo_hint is EchoHint.NEAR_FIELD
    assert render_session(ga, "ga", "s")["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    beta = apply_update(s, {"input_audio_noise_reduction": {"type": "far_field"}}, turn)
    assert beta.echo_hint is EchoHint.FAR_FIELD and shape_of({"input_audio_noise_reduction": None}) == "beta"
    assert render_session(beta, "beta", "s")["input_audio_noise_reduction"] == {"type": "far_field"}
    assert apply_update(ga, {"instructions": "x"}, turn).echo_hint is EchoHint.NEAR_FIELD  # kept
    assert apply_update(ga, {"audio": {"input": {"noise_reduction": None}}}, turn).echo_hint is EchoHint.UNKNOWN
    for bad in ({"input_audio_noise_reduction": {"type": "headphones"}}, {"audio": {"input": {"noise_reduction": "x"}}}):
        with pytest.raises(p.ProtocolError):
            apply_update(s, bad, turn)


def test_playout_clock_and_truncation() -> None:
    frames: list[float] = []
    po = Playout(lambda t, f: frames.append(t))
    a = po.add("one two", np.ones(24000, np.float32), t=1.0)  # plays 1.0 .. 2.0
    b = po.add("three four", np.ones(12000, np.float32), t=1.2)  # queued: 2.0 .. 2.5
    assert b.t_start == 2.0 and po.playing(2.4) and not po.playing(2.6)
    po.advance(1.5)
    assert len(frames) == 25  # 20 ms frames played by t=1.5
    po.cut(2.25)
    assert played_samples([a, b]) == [24000, 6000]
    assert played_samples([a, b], audio_end_ms=1100) == [24000, 2400]
    assert not po.playing(2.3)


# -- over a socket (tone engine) ---------------------------------------------------------------
def _engine() -> ToneEngine:
    return ToneEngine(ToneConfig(delay_ms=300.0, reply_s=2.0))


@needs_prompts
def test_server_vad_turn_gets_the_response_lifecycle_and_errors_keep_the_socket() -> None:
    async def main() -> None:
        async with connected(_engine()) as (c, server):
            ws = c.ws
            for bad in ("{oops", '{"type": "bogus"}', '{"type": "input_audio_buffer.append", "audio": "%%"}',
                        json.dumps({"type": "input_audio_buffer.append", "audio": b64(b"\x01\x02\x03")}),
                        '{"type": "session.update", "session": {"input_audio_format": "g711_alaw"}}',
                        '{"type": "response.cancel"}', '{"type": "input_audio_buffer.commit"}'):
                await c.send(bad)
            await ws.send_bytes(b"\x00\x01")
            await c.until(lambda e: c.types().count("error") == 8)
            codes = [e["error"]["code"] for e in c.events if e["type"] == "error"]
            assert codes == ["invalid_json", "invalid_event_type", "invalid_base64", "invalid_audio_format",
                             "unsupported_audio_format", "response_cancel_not_active",
                             "input_audio_buffer_commit_empty", "invalid_event"], codes
            await c.append(prompt_pcm("vm-sorry"))
            done = await c.until(of_type("response.done"))
            assert done["response"]["status"] == "completed"
            t = c.types()
            order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "response.created",
                     "conversation.item.input_audio_transcription.completed", "response.output_item.added",
                     "response.content_part.added", "response.output_audio_transcript.delta",
                     "response.output_audio.delta", "response.output_audio.done",
                     "response.output_audio_transcript.done", "response.output_item.done", "response.done"]
            assert [t.index(x) for x in order] == sorted(t.index(x) for x in order), t
            started = next(e for e in c.events if e["type"] == "input_audio_buffer.speech_started")
            stopped = next(e for e in c.events if e["type"] == "input_audio_buffer.speech_stopped")
            assert started["item_id"] == stopped["item_id"]
            assert 0 <= started["audio_start_ms"] < 600 and 2800 < stopped["audio_end_ms"] < 3700, (started, stopped)
            audio = b"".join(base64.b64decode(e["delta"]) for e in c.events
                             if e["type"] == "response.output_audio.delta")
            assert abs(len(audio) / 2 / 24000 - 2.0) < 0.01  # the whole 2 s reply at 24 kHz
            item = done["response"]["output"][0]
            assert item["role"] == "assistant" and item["content"][0]["type"] == "output_audio"
            assert item["content"][0]["transcript"]
            await c.send({"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}})
            upd = await c.until(of_type("session.updated"))
            assert upd["session"]["instructions"] == "hi"
            await ws.close()
            await asyncio.sleep(0.1)
            assert server.sessions == {}

    asyncio.run(main())


def test_session_update_sets_the_sessions_echo_hint() -> None:
    async def main() -> None:
        async with connected(_engine()) as (c, server):
            sess = next(iter(server.sessions.values()))
            assert sess.guard.hint is EchoHint.UNKNOWN and sess.guard.gain_db() == TurnConfig().echo_gain_db
            await c.send({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"noise_reduction": {"type": "near_field"}}}}})
            up = await c.until(of_type("session.updated"))
            assert up["session"]["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
            assert sess.guard.hint is EchoHint.NEAR_FIELD and sess.guard.gain_db() == TurnConfig().echo_near_field_gain_db

    asyncio.run(main())


@needs_prompts
def test_barge_in_cancels_the_response_and_truncate_settles_the_history() -> None:
    async def main() -> None:
        engine = ToneEngine(ToneConfig(delay_ms=1500.0, reply_s=2.0))
        async with serve(engine) as (host, server), aiohttp.ClientSession() as http:
            async with http.ws_connect(f"ws://{host}/v1/realtime") as ws:
                c = RawClient(ws)
                await c.append(prompt_pcm("vm-sorry", tail_s=0.9))
                await c.until(of_type("response.created"))
                await c.append(prompt_pcm("demo-nomatch", lead_s=0.0))  # the user speaks over it
                done = await c.until(of_type("response.done"))
                assert done["response"]["status"] == "cancelled"
                assert done["response"]["status_details"]["reason"] == "turn_detected"
                assert "input_audio_buffer.speech_started" in c.types()
                second = await c.until(lambda e: e["type"] == "response.done" and e is not done, timeout=30)
                assert second["response"]["status"] == "completed"
                item = second["response"]["output"][0]["id"]
                await c.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                              "audio_end_ms": 700})
                tr = await c.until(of_type("conversation.item.truncated"))
                assert tr["item_id"] == item and tr["audio_end_ms"] == 700
                await c.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                              "audio_end_ms": 10**6})  # beyond the audio (a client's clock): clamped
                assert (await c.until(lambda e: e["type"] == "conversation.item.truncated" and e is not tr)
                        )["audio_end_ms"] == 2000  # the whole 2 s reply
                await c.send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                              "audio_end_ms": 700})
                await c.send({"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0,
                              "audio_end_ms": 0})
                err = await c.until(of_type("error"))
                assert err["error"]["code"] == "item_not_found"
                sess = next(iter(server.sessions.values()))
                sess._settle_pending()  # noqa: SLF001 - what the next turn would do
                hist = sess.engine_session.history
                assert hist[-1]["role"] == "assistant"
                assert 0 < len(hist[-1]["content"].split()) < len(engine.text.split()), hist

    asyncio.run(main())


@needs_prompts
def test_manual_turns_beta_names_by_session_shape_and_the_session_limit() -> None:
    async def main() -> None:
        async with serve(_engine(), max_sessions=1) as (host, server), aiohttp.ClientSession() as http:
            url = f"ws://{host}/v1/realtime"
            async with http.ws_connect(url) as ws:  # no beta header: GA until the client shows beta settings
                c = RawClient(ws)
                created = await c.until(of_type("session.created"))
                assert created["session"]["type"] == "realtime"  # GA session shape
                async with http.ws_connect(url) as ws2:  # server full
                    msg = await ws2.receive(timeout=5)
                    err = json.loads(msg.data)
                    assert err["type"] == "error" and err["error"]["code"] == "session_limit_reached"
                    assert (await ws2.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
                    assert ws2.close_code == 1013
                await c.send({"type": "session.update", "session": {"turn_detection": None,
                                                                    "modalities": ["text"]}})
                updated = await c.until(of_type("session.updated"))
                assert updated["session"]["input_audio_format"] == "pcm16"  # beta session shape
                await c.send({"type": "response.create"})  # nothing said yet: an empty response
                empty = await c.until(of_type("response.done"))
                assert empty["response"]["status"] == "completed" and empty["response"]["output"] == []
                await c.append(prompt_pcm("vm-sorry"))
                await c.send({"type": "input_audio_buffer.commit"})
                await c.until(of_type("input_audio_buffer.committed"))
                assert "input_audio_buffer.speech_started" not in c.types()  # no server VAD
                await c.send({"type": "response.create"})
                done = await c.until(lambda e: e["type"] == "response.done" and e is not empty)
                t = c.types()
                assert "response.text.delta" in t and "response.text.done" in t, t
                assert "conversation.item.created" in t and "response.audio.delta" not in t, t
                assert done["response"]["output"][0]["content"][0]["type"] == "text"
                await c.send({"type": "conversation.item.create", "item": {  # context from a framework
                    "id": "ctx1", "type": "message", "role": "system", "content": [{"type": "input_text", "text": "hi"}]}})
                ack = await c.until(lambda e: e["type"] == "conversation.item.created" and e["item"]["id"] == "ctx1")
                assert ack["item"]["content"][0]["text"] == "hi"
                assert "error" not in c.types()
            await asyncio.sleep(0.1)
            assert server.sessions == {}

    asyncio.run(main())


@needs_prompts
def test_direct_engine_behind_the_same_protocol() -> None:
    """The direct engine (tiny random speech model + codec, as tests/test_s2s_engine.py) answers a
    spoken turn through the same events; its audio leaves as 24 kHz deltas; closing frees its slot."""
    pytest.importorskip("model.llama")
    from tests.test_s2s_engine import make_engine, parts

    engine = make_engine(parts.__wrapped__(), start_timeout_s=1.0, max_reply_s=1.0, speech_rms=0.0)

    async def main() -> None:
        async with serve(engine) as (host, server), aiohttp.ClientSession() as http:
            for _ in range(3):  # more connections than the engine's 2 slots, one after the other
                async with http.ws_connect(f"ws://{host}/v1/realtime") as ws:
                    c = RawClient(ws)
                    await c.append(prompt_pcm("vm-sorry"))
                    done = await c.until(of_type("response.done"), timeout=60)
                    assert done["response"]["status"] == "completed"
                    audio = b"".join(base64.b64decode(e["delta"]) for e in c.events
                                     if e["type"] == "response.output_audio.delta")
                    assert len(audio) // 2 >= 0.9 * 24000, len(audio)  # ~1 s reply (max_reply_s)
                await asyncio.sleep(0.2)
                assert server.sessions == {}

    asyncio.run(main())


@needs_prompts
def test_beta_sdk_client_gets_beta_event_names() -> None:
    """`client.beta.realtime.connect` (sends `OpenAI-Beta: realtime=v1`, as pipecat's beta service
    does) gets the beta names: response.audio.delta, response.audio_transcript.delta, ..."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("websockets")

    async def main() -> None:
        async with serve(_engine()) as (host, _server):
            client = openai.AsyncOpenAI(api_key="sk-local", base_url=f"http://{host}/v1",
                                        websocket_base_url=f"ws://{host}/v1")  # beta: wss otherwise
            async with client.beta.realtime.connect(model="parley") as conn:
                await conn.session.update(session={"modalities": ["audio", "text"], "input_audio_format": "pcm16",
                                                   "turn_detection": {"type": "server_vad"}})
                pcm = prompt_pcm("vm-sorry")
                for i in range(0, len(pcm), 9600):
                    await conn.input_audio_buffer.append(audio=b64(pcm[i : i + 9600]))
                types = []
                async with asyncio.timeout(30):
                    async for ev in conn:
                        types.append(ev.type)
                        if ev.type == "response.done":
                            assert ev.response.status == "completed" and ev.response.modalities
                            break
            for name in ("session.created", "session.updated", "conversation.item.created", "response.audio.delta",
                         "response.audio_transcript.delta", "response.audio.done", "response.done"):
                assert name in types, (name, types)
            assert "response.output_audio.delta" not in types

    asyncio.run(main())


def test_server_shutdown_closes_realtime_sockets() -> None:
    async def main() -> None:
        async with connected(_engine()) as (c, server):
            await server.close()  # what Ctrl-C on `parley serve` does
            msg = await c.ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and c.ws.close_code == 1001
            assert server.sessions == {}

    asyncio.run(main())
