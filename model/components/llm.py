"""Chat LLMs behind one interface: the local Llama (SmolLM2 GGUF) or an OpenAI-compatible server.

    llm = load_llm("smollm2")                         # bundled SmolLM2-135M-Instruct, on model/llama.py
    llm = load_llm("/path/to/model.gguf")             # any llama-architecture GGUF
    llm = load_llm("http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")  # vLLM, llama.cpp, Ollama
    for piece in llm.stream_chat([{"role": "user", "content": "Hi!"}]):
        print(piece, end="", flush=True)

``stream_chat`` yields text pieces as they are generated (whole characters). Both backends are
safe to call from several threads at once (the local one keeps all per-call state, KV cache and
RNG, inside the call; the weights are shared read-only).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from typing import Iterator

from model.common.errors import ParleyError

log = logging.getLogger(__name__)

# Chosen on 24 short factual questions (voice/bench/facts.py, SmolLM2-135M, greedy): the earlier
# "friendly voice assistant ... never use lists" prompt got 62 %, this one 83 % (with the examples
# as chat turns too, and 10 instead of 15 words per reply); sampling at 0.6 lowers it to ~70 %.
SPOKEN_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one short, correct sentence of plain English."
SPOKEN_EXAMPLES: tuple[dict, ...] = (  # few-shot turns after the system prompt: short spoken answers
    {"role": "user", "content": "What is the capital of Canada?"},
    {"role": "assistant", "content": "The capital of Canada is Ottawa."},
    {"role": "user", "content": "What is five plus one?"},
    {"role": "assistant", "content": "Five plus one is six."},
    {"role": "user", "content": "How are you today?"},
    {"role": "assistant", "content": "I'm doing well, thanks for asking!"},
)

DEFAULT_SPEC = "smollm2"


class ChatLLM(ABC):
    """A chat model: messages [{"role": "system"|"user"|"assistant", "content": str}] -> reply."""

    name: str = "llm"

    @abstractmethod
    def stream_chat(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the reply as text pieces, as they are generated."""

    def new_state(self) -> object | None:
        """Per-conversation state to pass as ``state=`` (None: the backend keeps none)."""
        return None

    def chat(self, messages: list[dict], **kwargs) -> str:
        """The whole reply as one string (same keyword arguments as ``stream_chat``)."""
        return "".join(self.stream_chat(messages, **kwargs))


def _check_messages(messages: list[dict]) -> None:
    if not messages:
        raise ParleyError("chat needs at least one message")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ParleyError(f"bad chat message {m!r}: want {{'role': system|user|assistant, 'content': str}}")


class LocalChatLLM(ChatLLM):
    """SmolLM2 (or another llama GGUF) on the project's Llama and streaming engine."""

    def __init__(self, engine, name: str = "smollm2", repetition_penalty: float = 1.1) -> None:
        self.engine = engine  # model.text_generator.TextGenerator
        self.tokenizer = engine.tokenizer
        self.name = name
        self.repetition_penalty = repetition_penalty

    def _prompt(self, messages: list[dict], max_new_tokens: int) -> list[int]:
        """Chat template -> ids; drops the oldest turns (keeping system prompts) until it fits."""
        _check_messages(messages)
        budget = self.engine.model.cfg.max_seq_len - max_new_tokens
        msgs = list(messages)
        while True:
            ids = self.tokenizer.encode_chat(msgs)
            droppable = [i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"]
            if len(ids) <= budget or not droppable:
                break
            del msgs[droppable[0]]
        if len(ids) > budget:
            raise ParleyError(f"the conversation ({len(ids)} tokens) does not fit the context")
        return ids

    def stream_steps(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int | None = None,
        repetition_penalty: float | None = None,
        logprobs: bool = False,
        state=None,  # noqa: ANN001 - model.text_generator.ChatState: keep the KV cache between turns
    ) -> Iterator:
        """As ``stream_chat`` but yields ``model.text_generator.Step`` (token id, log-probability, text)."""
        from model.sampling import SamplingParams

        params = SamplingParams(
            temperature=temperature, top_p=top_p, seed=seed,
            repetition_penalty=self.repetition_penalty if repetition_penalty is None else repetition_penalty,
        )
        prompt = self._prompt(messages, max_new_tokens)
        yield from self.engine.stream(prompt, max_new_tokens, params, logprobs=logprobs, state=state)

    def new_state(self):  # noqa: ANN201
        """A per-conversation KV cache (``state=`` of stream_chat): only new tokens are prefilled."""
        from model.text_generator import ChatState

        return ChatState()

    def stream_chat(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int | None = None,
        repetition_penalty: float | None = None,
        state=None,  # noqa: ANN001 - see stream_steps
    ) -> Iterator[str]:
        for step in self.stream_steps(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                      top_p=top_p, seed=seed, repetition_penalty=repetition_penalty,
                                      state=state):
            if step.text:
                yield step.text


class OpenAIChatLLM(ChatLLM):
    """Any server speaking OpenAI's ``POST /v1/chat/completions`` with ``stream: true`` (SSE)."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ParleyError(f"bad LLM URL {base_url!r}: want http(s)://host[:port]/v1")
        path = u.path.rstrip("/")
        if path.endswith("/chat/completions"):
            path = path[: -len("/chat/completions")]
        if not path:
            path = "/v1"
        self.base_url = urllib.parse.urlunsplit((u.scheme, u.netloc, path, "", ""))
        self.api_key = api_key if api_key is not None else os.environ.get("PARLEY_LLM_API_KEY")
        self.timeout = timeout
        self._model = model
        self._lock = threading.Lock()
        self.name = f"{self.base_url} ({model or 'server default'})"

    def _request(self, path: str, body: dict | None = None) -> urllib.request.Request:
        headers = {"Accept": "text/event-stream" if body and body.get("stream") else "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        return urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                      method="GET" if body is None else "POST")

    def _open(self, req: urllib.request.Request):
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode("utf-8", "replace").strip()
            raise ParleyError(f"LLM server {req.full_url} answered HTTP {e.code}: {detail or e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ParleyError(f"LLM server {req.full_url} unreachable: {reason}") from None

    @property
    def model(self) -> str:
        """The model name sent to the server: given, or the first of ``GET /models``."""
        with self._lock:
            if self._model is None:
                try:
                    with self._open(self._request("/models")) as r:
                        data = json.loads(r.read())["data"]
                    self._model = str(data[0]["id"])
                except (ParleyError, KeyError, IndexError, ValueError, TypeError) as e:
                    log.info("no model list at %s/models (%s); using 'default'", self.base_url, e)
                    self._model = "default"
            return self._model

    def stream_chat(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.7,
        top_p: float = 0.9,
        seed: int | None = None,
    ) -> Iterator[str]:
        _check_messages(messages)
        body = {"model": self.model, "messages": messages, "stream": True, "max_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p}
        if seed is not None:
            body["seed"] = seed
        with self._open(self._request("/chat/completions", body)) as resp:
            if "text/event-stream" not in resp.headers.get("Content-Type", "text/event-stream"):
                yield from _non_streamed(resp.read())  # a server that ignored stream: true
                return
            for raw in resp:  # SSE: "data: {json}" lines, blank lines between events
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue  # comments (":"), "event:", "id:", blank lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    raise ParleyError(f"LLM server sent a malformed event: {data[:200]!r}") from None
                if "error" in event:
                    raise ParleyError(f"LLM server error: {event['error']}")
                for choice in event.get("choices", [])[:1]:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece


def _non_streamed(payload: bytes) -> Iterator[str]:
    try:
        event = json.loads(payload)
        content = event["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ParleyError(f"LLM server sent an unexpected answer: {payload[:200]!r}") from None
    if content:
        yield content


def _cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 matrix products natively (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_llm(
    spec: str = DEFAULT_SPEC,
    *,
    model: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    prefill_dtype: str | None = "auto",
    api_key: str | None = None,
    timeout: float = 60.0,
    repetition_penalty: float = 1.1,
) -> ChatLLM:
    """spec: "smollm2" (bundled GGUF), a local ``.gguf`` path, or an OpenAI-compatible base URL
    (``model=`` names the served model; default: the server's first).

    Local models: ``dtype`` of the decoder (float32, float16, bfloat16; default float16 on CPU,
    the fastest per token, same greedy tokens as float32; bfloat16 on CUDA). ``prefill_dtype``:
    a second copy of the weights that runs the prompt ("auto": bfloat16 on CPUs with native bf16,
    else float32, on CPU; none on CUDA; None: the decoder itself)."""
    if spec.startswith(("http://", "https://")):
        return OpenAIChatLLM(spec, model=model, api_key=api_key, timeout=timeout)
    if spec != "smollm2" and not spec.endswith(".gguf"):
        raise ParleyError(f"unknown LLM {spec!r}: use 'smollm2', a .gguf file or an http(s):// URL")
    import copy

    import torch

    from model.text_generator import TextGenerator
    from model.gguf import load_gguf

    on_cpu = not device.startswith("cuda")
    if dtype is None:
        dtype = "float16" if on_cpu else "bfloat16"
    if prefill_dtype == "auto":
        prefill_dtype = ("bfloat16" if _cpu_has_fast_bf16() else "float32") if on_cpu else None
    for d in (dtype, prefill_dtype):
        if d not in ("float32", "float16", "bfloat16", None):
            raise ParleyError(f"dtype must be float32, float16 or bfloat16, got {d!r}")
    llama, tok = load_gguf(None if spec == "smollm2" else spec, device=device, dtype=torch.float32)
    prefill = None
    if prefill_dtype is not None and prefill_dtype != dtype:
        prefill = copy.deepcopy(llama).to(getattr(torch, prefill_dtype))
    llama = llama.to(getattr(torch, dtype))
    name = "smollm2" if spec == "smollm2" else os.path.basename(spec)
    generator = TextGenerator(llama, tok, prefill_model=prefill)
    return LocalChatLLM(generator, name=name, repetition_penalty=repetition_penalty)
