"""The WebRTC client of `parley serve` (`parley talk`); the benchmarks in `voice.bench` reuse it.

    peer      `ClientPeer`: SDP exchange, microphone track, recorder, data-channel event log
    player    a real-time "microphone" track that plays utterances on demand
    recorder  the agent's audio as received, with a time for every sample
    signal    level-based speech detection (pure numpy)
    talk      `VoiceClient` / `talk()`: ask a question from a WAV file, get the reply and its latency
"""
