"""Parley's audio rates and frame sizes, defined once, derived values beside them (leaf module).

All audio inside Parley is float32 mono in [-1, 1] at one of two rates:

    speech  16 kHz   Silero VAD, Whisper, the codec, distillation traces
    WebRTC  48 kHz   Opus in the browser; 20 ms frames

TTS voices have their own native rates and are resampled where needed.
"""

SPEECH_SR = 16000  # Hz: VAD, ASR, codec and distill user audio

VAD_CHUNK = 512  # samples per Silero VAD step at SPEECH_SR
VAD_CHUNK_MS = VAD_CHUNK * 1000 // SPEECH_SR  # 32 ms
VAD_CHUNK_S = VAD_CHUNK / SPEECH_SR  # 0.032 s

WEBRTC_SR = 48000  # Hz: Opus / WebRTC
WEBRTC_FRAME_MS = 20  # one WebRTC audio frame
WEBRTC_FRAME = WEBRTC_SR * WEBRTC_FRAME_MS // 1000  # 960 samples
WEBRTC_FRAME_S = WEBRTC_FRAME / WEBRTC_SR  # 0.02 s

CODEC_HOP = 640  # samples per frame of the shipped codec (v2: ratios 8 * 5 * 4 * 4); code reads codec.hop_length
CODEC_FRAME_RATE = SPEECH_SR / CODEC_HOP  # 25 Hz: one codec frame = one speech-model step
CODEC_FRAME_MS = CODEC_HOP * 1000 // SPEECH_SR  # 40 ms
