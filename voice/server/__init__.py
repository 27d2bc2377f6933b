"""`parley serve`: the real-time voice agent over WebRTC.

    app       aiohttp app: demo page, POST /offer (signalling), session limit
    session   one peer connection: input audio -> VAD turn taking -> engine -> output track + events
    inputs    the input side: frames -> mono, shorter jitter buffer, VAD batched over sessions
    turns     turn taking: VAD hysteresis state machine with an echo guard
    tracks    the agent's output track: 20 ms frames of 48 kHz audio from a queue
    events    the data-channel event schema sent to the client

The engines that answer a turn live in `voice.engines`.
"""
