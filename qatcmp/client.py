"""The client for OpenAI-compatible chat servers. Every backend quirk lives here.

Servers disagree on almost everything a benchmark needs (see docs/backends.md in the
project's reference material): where reasoning comes back (``reasoning_content``,
``reasoning``, inline ``<think>`` tags, an unclosed think block when the budget runs out),
how errors look (OpenAI's nested object, mlx-lm's string, an error JSON inside an HTTP 200,
an error event inside a 200 stream), keepalives (SSE comments, ``"model": "keepalive"``
chunks, leading spaces before a JSON body) and overload (429/503 with Retry-After, 409 while
loading, 507 out of memory, a connection cut after the 200). The rest of qatcmp sees one
``Completion``.

Requests go through httpx directly rather than the openai SDK: the SDK hides the raw stream,
and these quirks have to be seen to be handled.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from qatcmp import __version__
from qatcmp.config import ServerConfig

# Statuses worth another try: overload, server-side trouble, a model loading (409) or
# out of memory for now (507).
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 507}
# Statuses that will not change by asking again: the request or the credentials are wrong.
FATAL_STATUS = {400, 401, 403, 404, 405, 413, 422}

RETRY_AFTER_CAP = 600.0

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class RequestFailed(Exception):
    """A request failed. ``retryable`` says whether asking again may help."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class RetryableError(RequestFailed):
    def __init__(self, message: str, *, kind: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, kind=kind, retryable=True, status=status, retry_after=retry_after)


class FatalRequestError(RequestFailed):
    def __init__(self, message: str, *, kind: str, status: int | None = None):
        super().__init__(message, kind=kind, retryable=False, status=status)


@dataclass
class Completion:
    """One answer, or the reason there is none (``error``)."""

    content: str | None = None
    reasoning: str | None = None
    reasoning_source: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    latency_s: float | None = None
    ttft_s: float | None = None
    attempts: int = 1
    error: str | None = None
    error_kind: str | None = None
    error_status: int | None = None
    fatal: bool = False  # the error will not go away by asking again
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def split_think_tags(content: str | None) -> tuple[str | None, str | None]:
    """Separate inline reasoning from the answer: ``<think>…</think>answer``, an answer
    after a bare ``</think>`` (the template opened the block), or an unclosed ``<think>``
    (the token budget ran out while thinking). Returns (content, reasoning)."""
    if content is None:
        return None, None
    close = content.rfind(THINK_CLOSE)
    if close >= 0:
        head, answer = content[:close], content[close + len(THINK_CLOSE) :]
        open_at = head.find(THINK_OPEN)
        reasoning = head[open_at + len(THINK_OPEN) :] if open_at >= 0 else head
        return answer.lstrip("\n"), reasoning.strip("\n")
    open_at = content.find(THINK_OPEN)
    if open_at >= 0:
        # Unclosed: everything after <think> is unfinished reasoning, there is no answer.
        before = content[:open_at].strip()
        return (before or None), content[open_at + len(THINK_OPEN) :].strip("\n")
    return content, None


def normalize_usage(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep every usage field the server sent; lift cached tokens to the top level."""
    if not raw:
        return None
    usage = dict(raw)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        usage["cached_tokens"] = details["cached_tokens"]
    return usage


def error_message(payload: Any, fallback: str = "") -> str:
    """The server's error text, whichever shape it uses."""
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or json.dumps(err))[:500]
        if isinstance(err, list):  # FastAPI validation details
            return "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)[:500]
        if err is not None:
            return str(err)[:500]
    return (fallback or "").strip()[:500]


def _parse_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare on local servers; fall back to backoff


def _payload_error(payload: Any) -> tuple[str, bool] | None:
    """An error object inside a successful HTTP response: (message, retryable)."""
    if isinstance(payload, dict) and "error" in payload and not payload.get("choices"):
        message = error_message(payload, "error")
        err = payload.get("error")
        kind = err.get("type") if isinstance(err, dict) else None
        retryable = kind not in ("invalid_request_error", "authentication_error", "not_found_error")
        return message, retryable
    return None


class _StreamState:
    """Accumulates an SSE chat stream."""

    def __init__(self, started: float):
        self.started = started
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.reasoning_source: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.ttft: float | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        found = _payload_error(chunk)
        if found is not None:
            message, retryable = found
            cls = RetryableError if retryable else FatalRequestError
            kind = "queue_full" if "queue full" in message.lower() else "stream_error"
            raise cls(f"error in stream: {message}", kind=kind)
        if chunk.get("model") == "keepalive":
            return
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or choice.get("message") or {}
            for source in ("reasoning_content", "reasoning"):
                piece = delta.get(source)
                if piece:
                    self._first_token()
                    self.reasoning.append(piece)
                    self.reasoning_source = self.reasoning_source or source
            piece = delta.get("content")
            if piece:
                self._first_token()
                self.content.append(piece)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started


def finish_completion(
    content: str | None,
    reasoning: str | None,
    reasoning_source: str | None,
    finish_reason: str | None,
) -> Completion:
    """Turn raw content/reasoning into the recorded answer."""
    notes: list[str] = []
    if not reasoning and content and (THINK_OPEN in content or THINK_CLOSE in content):
        content, reasoning = split_think_tags(content)
        reasoning_source = "think_tags" if reasoning is not None else None
    if finish_reason == "length" and reasoning and content and _repeats_reasoning(content, reasoning):
        # oMLX re-sends cut-off reasoning as content at the end of a stream (and some
        # templates leave it there): that text is thinking, not an answer.
        content = None
        notes.append("content repeated the unfinished reasoning; dropped")
    # Streaming and non-streaming answers of the same server differ in surrounding newlines;
    # normalise so that lengths and texts compare across transports.
    if content is not None:
        content = content.lstrip()
    if reasoning is not None:
        reasoning = reasoning.strip()
    return Completion(
        content=content,
        reasoning=reasoning or None,
        reasoning_source=reasoning_source if reasoning else None,
        finish_reason=finish_reason,
        notes=notes,
    )


def mark_unfinished_thinking(result: Completion) -> None:
    """A thinking model cut off by the budget before it closed its thinking block: oMLX's
    non-streaming parser then returns the unfinished reasoning as ``content`` with no
    reasoning field and no tag. That text is thinking, not an answer."""
    if result.finish_reason == "length" and not result.reasoning and result.content and result.content.strip():
        result.reasoning = result.content.strip()
        result.reasoning_source = "unclosed_in_content"
        result.content = None
        result.notes.append("cut off while thinking: the content was unfinished reasoning; moved to reasoning")


def _repeats_reasoning(content: str, reasoning: str) -> bool:
    text = content.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
    return bool(text) and (text in reasoning or reasoning.strip() in text)


def completion_from_json_body(text: str) -> Completion:
    """A non-streamed chat completion body. oMLX keeps the connection alive with spaces before
    the JSON; a connection cut after the 200 leaves only those spaces; an error may come as
    JSON inside the 200."""
    stripped = text.strip()
    if not stripped:
        raise RetryableError("empty response body after HTTP 200 (connection cut?)", kind="empty_body")
    try:
        payload = json.loads(stripped)
    except ValueError:
        raise RetryableError(f"response is not JSON: {stripped[:120]!r}", kind="bad_json") from None
    found = _payload_error(payload)
    if found is not None:
        message, retryable = found
        cls = RetryableError if retryable else FatalRequestError
        raise cls(f"error inside HTTP 200: {message}", kind="error_in_200")
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices:
        raise RetryableError("response has no choices", kind="no_choices")
    choice = choices[0]
    message = choice.get("message") or {}
    reasoning, source = None, None
    for name in ("reasoning_content", "reasoning"):
        if message.get(name):
            reasoning, source = message[name], name
            break
    if choice.get("finish_reason") is None:
        raise RetryableError("response has no finish reason", kind="no_finish_reason")
    result = finish_completion(message.get("content"), reasoning, source, choice["finish_reason"])
    result.usage = normalize_usage(payload.get("usage"))
    return result


# --------------------------------------------------------------------------- client


def _backoff_wait(initial: float, maximum: float):
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RequestFailed) and exc.retry_after is not None:
            # The server said when to come back: do so (within reason), whatever our backoff.
            return min(exc.retry_after, RETRY_AFTER_CAP) + random.uniform(0, 0.25)
        # Exponential backoff with full jitter, so many clients do not retry in lockstep.
        ceiling = min(maximum, initial * (2 ** (state.attempt_number - 1)))
        return random.uniform(ceiling / 2, ceiling)

    return wait


class ChatClient:
    """Talks to one server. Safe to share between concurrent tasks."""

    def __init__(
        self,
        server: ServerConfig,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.server = server
        t = server.timeouts
        headers = {"User-Agent": f"qatcmp/{__version__}", **server.headers}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=server.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=60.0, pool=None),
            limits=httpx.Limits(max_connections=server.max_concurrency + 4, max_keepalive_connections=server.max_concurrency),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- chat

    async def complete(self, body: dict[str, Any], *, thinking: bool = False) -> Completion:
        """Send a chat completion with retries; never raises for a failed request: the
        returned Completion carries the error instead. ``thinking``: the request asked the
        model to think (decides how a cut-off answer without separated reasoning is read)."""
        retries = self.server.retries
        attempts = 0
        started = time.monotonic()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(retries.max_attempts),
                wait=_backoff_wait(retries.initial_backoff, retries.max_backoff),
                retry=retry_if_exception_type(RetryableError),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    result = await self._complete_once(body)
        except RequestFailed as exc:
            return Completion(
                error=exc.message,
                error_kind=exc.kind,
                error_status=exc.status,
                fatal=not exc.retryable,
                attempts=attempts,
                latency_s=time.monotonic() - started,
            )
        result.attempts = attempts
        if thinking:
            mark_unfinished_thinking(result)
        return result

    async def _complete_once(self, body: dict[str, Any]) -> Completion:
        started = time.monotonic()
        total = self.server.timeouts.total
        try:
            coro = self._stream(body, started) if body.get("stream") else self._plain(body, started)
            if total is None:
                result = await coro
            else:
                result = await asyncio.wait_for(coro, timeout=total)
        except asyncio.TimeoutError:
            raise RetryableError(f"no complete answer within {total:g} s", kind="timeout") from None
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out ({type(exc).__name__})", kind="timeout") from None
        except httpx.TransportError as exc:
            raise RetryableError(_describe_transport_error(exc), kind="connection") from None
        result.latency_s = time.monotonic() - started
        return result

    async def _plain(self, body: dict[str, Any], started: float) -> Completion:
        response = await self._http.post("chat/completions", json=body)
        text = (await response.aread()).decode("utf-8", errors="replace")
        _raise_for_status(response, text)
        return completion_from_json_body(text)

    async def _stream(self, body: dict[str, Any], started: float) -> Completion:
        state = _StreamState(started)
        async with self._http.stream("POST", "chat/completions", json=body) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", errors="replace")
                _raise_for_status(response, text)
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                # Some servers answer a streaming request with a plain JSON body (often an
                # error); read it as such.
                return completion_from_json_body((await response.aread()).decode("utf-8", errors="replace"))
            async for line in response.aiter_lines():
                if not line or line.startswith(":"):
                    continue  # SSE comment (keepalive) or event separator
                if not line.startswith("data:"):
                    continue  # event:, id:, retry: fields carry nothing we need
                data = line[5:].strip()
                if data == "[DONE]":
                    state.done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise RetryableError(f"unparsable stream chunk: {data[:120]!r}", kind="bad_chunk") from None
                state.feed(chunk)
        if state.finish_reason is None:
            why = "without a finish reason" if state.done else "before [DONE]"
            raise RetryableError(f"stream ended {why}", kind="stream_cut")
        result = finish_completion(
            "".join(state.content) if state.content else None,
            "".join(state.reasoning) if state.reasoning else None,
            state.reasoning_source,
            state.finish_reason,
        )
        result.usage = normalize_usage(state.usage)
        result.ttft_s = state.ttft
        return result

    # ----------------------------------------------------------------- introspection

    async def get_json(self, path: str, *, timeout: float = 10.0, root: bool = False) -> Any:
        """GET a JSON document from the server (``root``: relative to the host, not /v1).
        Raises RequestFailed."""
        url = _root_url(self.server.base_url) + path if root else path.lstrip("/")
        try:
            response = await self._http.get(url, timeout=timeout)
        except httpx.TimeoutException:
            raise RetryableError(f"GET {path}: timed out", kind="timeout") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"GET {path}: {_describe_transport_error(exc)}", kind="connection") from None
        text = response.text
        _raise_for_status(response, text, what=f"GET {path}")
        try:
            return json.loads(text)
        except ValueError:
            raise RetryableError(f"GET {path}: not JSON", kind="bad_json") from None

    async def list_models(self) -> list[str]:
        payload = await self.get_json("models")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise RetryableError("GET /models: unexpected answer", kind="bad_json")
        return [str(entry.get("id")) for entry in data if isinstance(entry, dict)]


def _raise_for_status(response: httpx.Response, text: str, *, what: str = "") -> None:
    status = response.status_code
    if status < 400:
        return
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError:
        payload = None
    message = error_message(payload, text) or response.reason_phrase
    prefix = f"{what}: " if what else ""
    full = f"{prefix}HTTP {status}: {message}"
    if status in FATAL_STATUS:
        raise FatalRequestError(full, kind=f"http_{status}", status=status)
    raise RetryableError(full, kind=f"http_{status}", status=status, retry_after=_parse_retry_after(response))


def _describe_transport_error(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection refused"
        return f"cannot connect ({reason})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed by the server mid-answer ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _root_url(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port"""
    for suffix in ("/v1",):
        if base_url.endswith(suffix):
            return base_url[: -len(suffix)]
    return base_url
