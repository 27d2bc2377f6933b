"""The bundled speech components, each a small front-end over one model family.

    vad              Silero VAD (ONNX): `SileroVAD`, one `VADStream` per audio stream
    asr              Whisper (openai-whisper model code): `WhisperASR.load(...).transcribe_batch`
    whisper_convert  CTranslate2 Whisper weights -> openai-whisper state dict (used by asr)
    tts              Piper joe + espeak-ng / flite voices: `load_voice(name).synthesize(text)`
    llm              chat LLMs: local SmolLM2 (model.gguf) or an OpenAI-compatible server: `load_llm`

Importing this package is cheap; each module imports its model runtime on first use.
"""
