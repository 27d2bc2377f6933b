"""Client-side latency benchmarks over real WebRTC (`parley bench latency|concurrency`).

player      real-time "microphone" track: utterances on demand, capture time of every sample
recorder    received agent audio with packet-arrival and playout times (before aiortc's jitter buffer)
signal      speech bounds on the clean source; agent onset/offset detection (pure numpy)
client      one WebRTC session against a Parley server (SDP over POST /offer, data-channel events)
latency     conversation turns: voice-to-voice and barge-in stop latency
concurrency ramp of simultaneous sessions until real time breaks
report, stats, plot, events   JSON report, percentiles and tables, PNG, server stage breakdown
local       starting a local `parley serve` when no URL is given
"""
