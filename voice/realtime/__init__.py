"""The OpenAI Realtime protocol on `parley serve`: `GET /v1/realtime` (WebSocket).

    protocol.py  client events -> typed dataclasses (validation), server event names per dialect,
                 base64 PCM16 helpers, `error` events
    config.py    the session settings (`session.update`), rendered as GA or beta `session` objects
    inbuf.py     the input audio buffer: 24 kHz appends -> 16 kHz VAD chunks on the input clock
    playout.py   where the client's playback of the agent's audio is (echo guard, truncation)
    response.py  one response and the items / response objects it renders
    session.py   one connection: input buffer, VAD turn taking, responses, barge-in
    route.py     the aiohttp handler (session limit, read loop, one writer task)

See voice/realtime/README.md for what is supported. Nothing is imported or loaded here.
"""
