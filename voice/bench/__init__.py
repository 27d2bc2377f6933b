"""The voice benchmarks: `parley bench components|latency|concurrency`.

The latency ones drive a server through the product client (`voice.client`: peer, player,
recorder, signal) exactly as `parley talk` does.

components  load time / speed of VAD, ASR, TTS and LLM on this machine; with --cascade-batch K,...
            K concurrent cascade requests one by one vs batched across sessions (cascade_batch)
latency     conversation turns: voice-to-voice and barge-in stop latency
concurrency ramp of simultaneous sessions until real time breaks
report, stats, plot, events   JSON report, percentiles and tables, PNG, server stage breakdown
local       starting a local `parley serve` when no URL is given
runs        one run over several targets (URLs or local servers): tables, comparison, report
"""
