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
from pydantic import ValidationError

from qatcmp import __version__
from qatcmp.concurrency import ServerGate, Ticket, congestion_pause
from qatcmp.config import ServerConfig
from qatcmp.records import Usage

# Statuses worth another try: overload, server-side trouble, a model loading (409) or
# out of memory for now (507).
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 507}
# Statuses that will not change by asking again: the request or the credentials are wrong.
FATAL_STATUS = {400, 401, 403, 404, 405, 413, 422}

RETRY_AFTER_CAP = 600.0

# Failures that mean "the server is full, ask later": they lower the server's concurrency and,
# while the server answers others, do not count against the request's attempts. oMLX 0.5.3
# signals a full queue after the 200: an error event in the stream, or one space and a cut.
CONGESTION_KINDS = {"queue_full", "http_429", "http_503", "http_507", "empty_body", "cut_before_answer"}
# Attempts that did not count (congestion while others were answered, an outage): a bound,
# so that no request can loop for ever.
MAX_UNCOUNTED_ATTEMPTS = 500
# Bytes of an error body or a model list worth reading.
ERROR_BODY_CAP = 256 * 1024
LISTING_CAP = 16 * 1024 * 1024
# Exceptions a malformed answer can raise while it is taken apart (wrong types, nesting
# too deep for the JSON decoder, undecodable text): a retried error, never a crash.
MALFORMED = (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError, UnicodeError)

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


def normalize_usage(raw: Any) -> dict[str, Any] | None:
    """Keep every flat usage field the server sent; lift cached tokens to the top level.
    A usage that is not an object, or token counts that are not numbers, are a malformed
    answer."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise RetryableError(f"malformed usage: {_kind_of(raw)}", kind="bad_shape")
    # Only scalars and one level of objects of scalars (prompt_tokens_details): a hostile
    # server's deep structures are not worth storing.
    usage = {str(k): v for k, v in raw.items() if _flat(v) or (isinstance(v, dict) and all(_flat(x) for x in v.values()))}
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        usage["cached_tokens"] = details["cached_tokens"]
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
        value = usage.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RetryableError(f"malformed usage: {name} is {_kind_of(value)}", kind="bad_shape")
    try:
        Usage.model_validate(usage)
    except ValidationError as exc:
        raise RetryableError(f"malformed usage: {exc.errors()[0]['msg']}", kind="bad_shape") from None
    return usage


def _flat(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _kind_of(value: Any) -> str:
    text = json.dumps(value)[:40] if _flat(value) else type(value).__name__
    return f"{type(value).__name__} {text}" if _flat(value) else text


def _text(value: Any, name: str) -> str | None:
    """A text field of an answer: a string (encodable as UTF-8) or nothing."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RetryableError(f"malformed answer: {name} is {_kind_of(value)}", kind="bad_shape")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RetryableError(f"malformed answer: {name} holds a lone surrogate (invalid text)", kind="bad_text") from None
    return value


def _choices(payload: dict[str, Any]) -> list[dict[str, Any]]:
    choices = payload.get("choices")
    if choices is None:
        return []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise RetryableError(f"malformed answer: choices is {_kind_of(choices)}", kind="bad_shape")
    return choices


def _inner(choice: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        value = choice.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise RetryableError(f"malformed answer: {name} is {_kind_of(value)}", kind="bad_shape")
        return value
    return {}


def printable(text: str) -> str:
    """Server text fit to print and store: no lone surrogates."""
    return text.encode("utf-8", "replace").decode("utf-8")


def error_message(payload: Any, fallback: str = "") -> str:
    """The server's error text, whichever shape it uses."""
    if isinstance(payload, dict):
        err = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(err, dict):
            return printable(str(err.get("message") or err.get("detail") or json.dumps(err))[:500])
        if isinstance(err, list):  # FastAPI validation details
            return printable("; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)[:500])
        if err is not None:
            return printable(str(err)[:500])
    return printable((fallback or "").strip()[:500])


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
    """Accumulates an SSE chat stream, within the answer size cap."""

    def __init__(self, started: float, *, max_chars: int, on_first_token=None):
        self.started = started
        self.max_chars = max_chars
        self.chars = 0
        self.on_first_token = on_first_token
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.reasoning_source: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.ttft: float | None = None

    def feed(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise RetryableError(f"malformed stream chunk: {_kind_of(chunk)}", kind="bad_shape")
        found = _payload_error(chunk)
        if found is not None:
            message, retryable = found
            cls = RetryableError if retryable else FatalRequestError
            kind = "queue_full" if "queue full" in message.lower() else "stream_error"
            raise cls(f"error in stream: {message}", kind=kind)
        if chunk.get("model") == "keepalive":
            return
        if chunk.get("usage"):
            self.usage = normalize_usage(chunk["usage"])
        for choice in _choices(chunk):
            delta = _inner(choice, "delta", "message")
            for source in ("reasoning_content", "reasoning"):
                piece = _text(delta.get(source), source)
                if piece:
                    self._take(piece)
                    self.reasoning.append(piece)
                    self.reasoning_source = self.reasoning_source or source
            piece = _text(delta.get("content"), "content")
            if piece:
                self._take(piece)
                self.content.append(piece)
            finish = _text(choice.get("finish_reason"), "finish_reason")
            if finish:
                self.finish_reason = finish

    def _take(self, piece: str) -> None:
        self.chars += len(piece)
        if self.chars > self.max_chars:
            raise RetryableError(f"answer longer than the cap ({self.max_chars / 1e6:g} MB of text; max_answer_mb)", kind="too_large")
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started
            if self.on_first_token is not None:
                self.on_first_token()


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


def completion_from_json_body(text: str, *, max_chars: int | None = None) -> Completion:
    """A non-streamed chat completion body. oMLX keeps the connection alive with spaces before
    the JSON; a connection cut after the 200 leaves only those spaces; an error may come as
    JSON inside the 200."""
    stripped = text.strip()
    if not stripped:
        raise RetryableError("empty response body after HTTP 200 (connection cut?)", kind="empty_body")
    payload = _loads(stripped, "response")
    found = _payload_error(payload)
    if found is not None:
        message, retryable = found
        cls = RetryableError if retryable else FatalRequestError
        raise cls(f"error inside HTTP 200: {message}", kind="error_in_200")
    if not isinstance(payload, dict):
        raise RetryableError(f"malformed answer: {_kind_of(payload)}", kind="bad_shape")
    choices = _choices(payload)
    if not choices:
        raise RetryableError("response has no choices", kind="no_choices")
    choice = choices[0]
    message = _inner(choice, "message")
    reasoning, source = None, None
    for name in ("reasoning_content", "reasoning"):
        value = _text(message.get(name), name)
        if value:
            reasoning, source = value, name
            break
    content = _text(message.get("content"), "content")
    finish = _text(choice.get("finish_reason"), "finish_reason")
    if finish is None:
        raise RetryableError("response has no finish reason", kind="no_finish_reason")
    if max_chars is not None and len(content or "") + len(reasoning or "") > max_chars:
        raise RetryableError(f"answer longer than the cap ({max_chars / 1e6:g} MB of text; max_answer_mb)", kind="too_large")
    result = finish_completion(content, reasoning, source, finish)
    result.usage = normalize_usage(payload.get("usage"))
    return result


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise RetryableError(f"{what} is JSON nested too deep", kind="bad_json") from None
    except ValueError:
        raise RetryableError(f"{what} is not JSON: {printable(text[:120])!r}", kind="bad_json") from None


# --------------------------------------------------------------------------- client


def backoff_delay(attempt: int, initial: float, maximum: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``."""
    if retry_after is not None:
        # The server said when to come back: do so (within reason), whatever our backoff.
        return min(retry_after, RETRY_AFTER_CAP) + random.uniform(0, 0.25)
    # Exponential backoff with full jitter, so many clients do not retry in lockstep.
    ceiling = min(maximum, initial * (2 ** (attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


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
        self.max_chars = int(server.max_answer_mb * 1_000_000)
        # Raw bytes of one answer: SSE framing costs ~150 bytes per token chunk.
        self.max_raw_bytes = max(8 * self.max_chars, 16_000_000)
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

    async def complete(
        self,
        body: dict[str, Any],
        *,
        thinking: bool = False,
        gate: ServerGate | None = None,
        max_attempts: int | None = None,
    ) -> Completion:
        """Send a chat completion with retries; never raises for a failed request: the
        returned Completion carries the error instead. ``thinking``: the request asked the
        model to think (decides how a cut-off answer without separated reasoning is read).

        With a ``gate`` (the run), every attempt waits for a slot of the server's adaptive
        limit; congestion while the server answers others, and failures during an outage,
        do not count as attempts. Raises ServerDown when the gate gives up on the server."""
        retries = self.server.retries
        limit = max_attempts or retries.max_attempts
        counted = uncounted = 0
        started = time.monotonic()
        ticket: Ticket | None = None
        while True:
            if gate is not None and ticket is None:
                ticket = await gate.acquire()
            failure: RequestFailed | None = None
            try:
                result = await self._complete_once(body, gate, ticket)
                if gate is not None:
                    gate.answered(ticket)
            except RequestFailed as exc:
                failure = exc
                counts = self._counts(exc, gate, ticket)
            except BaseException:
                if gate is not None:
                    gate.release(ticket)
                raise
            if failure is None or not counts or not failure.retryable:
                if gate is not None:
                    gate.release(ticket)  # a refused attempt queues for a slot again, behind the others
                    ticket = None
            if failure is None:
                break
            counted += int(counts)
            uncounted += int(not counts)
            if not failure.retryable or counted >= limit or uncounted >= MAX_UNCOUNTED_ATTEMPTS:
                if gate is not None and ticket is not None:
                    gate.release(ticket)
                return Completion(
                    error=failure.message,
                    error_kind=failure.kind,
                    error_status=failure.status,
                    fatal=not failure.retryable,
                    attempts=counted + uncounted,
                    latency_s=time.monotonic() - started,
                )
            try:
                if counts:
                    # An ordinary failure keeps its slot through the backoff, as a retry of
                    # the same request, before the next one.
                    await asyncio.sleep(backoff_delay(counted, retries.initial_backoff, retries.max_backoff, failure.retry_after))
                    if gate is not None:
                        gate.renew(ticket)
                elif failure.kind in CONGESTION_KINDS:
                    await asyncio.sleep(congestion_pause(failure.retry_after))
                # an outage: the gate holds the next attempt until the server is back
            except BaseException:
                if gate is not None and ticket is not None:
                    gate.release(ticket)
                raise
        result.attempts = counted + uncounted + 1
        if thinking:
            mark_unfinished_thinking(result)
        return result

    @staticmethod
    def _counts(exc: RequestFailed, gate: ServerGate | None, ticket: Ticket | None) -> bool:
        """Does this failed attempt count against the request's max_attempts?"""
        if gate is None or ticket is None:
            return True
        if exc.kind == "connection":
            return not gate.connection_failed(exc.message)
        if exc.kind in CONGESTION_KINDS:
            gate.congested(ticket)
            return not gate.busy_with_others(ticket)
        gate.heard_from()
        return True

    async def _complete_once(self, body: dict[str, Any], gate: ServerGate | None = None, ticket: Ticket | None = None) -> Completion:
        started = time.monotonic()
        total = self.server.timeouts.total
        on_first_token = (lambda: gate.first_token(ticket)) if gate is not None and ticket is not None else None
        try:
            coro = self._stream(body, started, on_first_token) if body.get("stream") else self._plain(body, started)
            if total is None:
                result = await coro
            else:
                result = await asyncio.wait_for(coro, timeout=total)
        except asyncio.TimeoutError:
            raise RetryableError(f"no complete answer within {total:g} s", kind="timeout") from None
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out ({type(exc).__name__})", kind="timeout") from None
        except httpx.TransportError as exc:
            # Before any response: the server is not there (refused, reset, gone).
            raise RetryableError(_describe_transport_error(exc), kind="connection") from None
        except MALFORMED as exc:
            raise RetryableError(f"malformed answer ({type(exc).__name__}: {printable(str(exc))[:200]})", kind="bad_shape") from None
        result.latency_s = time.monotonic() - started
        return result

    async def _plain(self, body: dict[str, Any], started: float) -> Completion:
        async with self._http.stream("POST", "chat/completions", json=body) as response:
            if response.status_code >= 400:
                _raise_for_status(response, await _read_capped(response, ERROR_BODY_CAP, truncate=True))
            text = await _read_answer_body(response, self.max_raw_bytes)
        return completion_from_json_body(text, max_chars=self.max_chars)

    async def _stream(self, body: dict[str, Any], started: float, on_first_token=None) -> Completion:
        state = _StreamState(started, max_chars=self.max_chars, on_first_token=on_first_token)
        async with self._http.stream("POST", "chat/completions", json=body) as response:
            if response.status_code >= 400:
                _raise_for_status(response, await _read_capped(response, ERROR_BODY_CAP, truncate=True))
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                # Some servers answer a streaming request with a plain JSON body (often an
                # error); read it as such.
                return completion_from_json_body(await _read_answer_body(response, self.max_raw_bytes), max_chars=self.max_chars)
            try:
                async for line in _lines(response, self.max_raw_bytes):
                    if not line or line.startswith(":"):
                        continue  # SSE comment (keepalive) or event separator
                    if not line.startswith("data:"):
                        continue  # event:, id:, retry: fields carry nothing we need
                    data = line[5:].strip()
                    if data == "[DONE]":
                        state.done = True
                        break
                    state.feed(_loads(data, "stream chunk"))
            except (httpx.TransportError, httpx.StreamError) as exc:
                if isinstance(exc, httpx.TimeoutException):
                    raise
                kind = "stream_cut" if state.ttft is not None else "cut_before_answer"
                raise RetryableError(f"connection closed by the server mid-answer ({exc})", kind=kind) from None
        if state.finish_reason is None:
            why = "without a finish reason" if state.done else "before [DONE]"
            raise RetryableError(f"stream ended {why}", kind="stream_cut" if state.ttft is not None else "cut_before_answer")
        result = finish_completion(
            "".join(state.content) if state.content else None,
            "".join(state.reasoning) if state.reasoning else None,
            state.reasoning_source,
            state.finish_reason,
        )
        result.usage = state.usage
        result.ttft_s = state.ttft
        return result

    # ----------------------------------------------------------------- introspection

    async def get_json(self, path: str, *, timeout: float = 10.0, root: bool = False) -> Any:
        """GET a JSON document from the server (``root``: relative to the host, not /v1).
        Raises RequestFailed."""
        url = _root_url(self.server.base_url) + path if root else path.lstrip("/")
        try:
            async with self._http.stream("GET", url, timeout=timeout) as response:
                if response.status_code >= 400:
                    _raise_for_status(response, await _read_capped(response, ERROR_BODY_CAP, truncate=True), what=f"GET {path}")
                text = await _read_capped(response, LISTING_CAP)
            return _loads(text, f"GET {path}")
        except httpx.TimeoutException:
            raise RetryableError(f"GET {path}: timed out", kind="timeout") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"GET {path}: {_describe_transport_error(exc)}", kind="connection") from None
        except MALFORMED as exc:
            raise RetryableError(f"GET {path}: malformed answer ({type(exc).__name__})", kind="bad_shape") from None

    async def list_models(self) -> list[str]:
        payload = await self.get_json("models")
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise RetryableError("GET /models: unexpected answer", kind="bad_json")
        return [printable(str(entry.get("id")))[:500] for entry in data if isinstance(entry, dict) and entry.get("id") is not None]

    async def is_up(self) -> bool:
        """Does the server answer HTTP at all (any status)? The outage probe."""
        try:
            response = await self._http.get("models", timeout=5.0)
            await response.aclose()
            return True
        except httpx.HTTPError:
            return False


async def _read_capped(response: httpx.Response, cap: int, *, truncate: bool = False) -> str:
    """The body as text, at most ``cap`` bytes: beyond it, cut (an error body) or refuse."""
    chunks: list[bytes] = []
    size = 0
    async for piece in response.aiter_bytes():
        size += len(piece)
        if size > cap:
            if truncate:
                chunks.append(piece[: len(piece) - (size - cap)])
                break
            raise RetryableError(f"response larger than {cap / 1e6:g} MB", kind="too_large")
        chunks.append(piece)
    return b"".join(chunks).decode("utf-8", errors="replace")


async def _read_answer_body(response: httpx.Response, cap: int) -> str:
    """A 200 body. A cut after the headers (oMLX's full queue: one space, then nothing) is
    congestion, not an outage."""
    try:
        return await _read_capped(response, cap)
    except (httpx.TransportError, httpx.StreamError) as exc:
        if isinstance(exc, httpx.TimeoutException):
            raise
        raise RetryableError(f"connection closed by the server mid-answer ({exc})", kind="cut_before_answer") from None


async def _lines(response: httpx.Response, cap: int):
    """The stream's lines, decoded; at most ``cap`` bytes in all (an endless stream, or one
    endless line, is refused before it fills the memory)."""
    buffer = bytearray()
    total = 0
    async for piece in response.aiter_bytes():
        total += len(piece)
        if total > cap:
            raise RetryableError(f"stream longer than {cap / 1e6:g} MB (max_answer_mb)", kind="too_large")
        scan_from = len(buffer)
        buffer += piece
        while (end := buffer.find(b"\n", scan_from)) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            scan_from = 0
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if buffer:
        yield bytes(buffer).decode("utf-8", errors="replace")


def _raise_for_status(response: httpx.Response, text: str, *, what: str = "") -> None:
    status = response.status_code
    if status < 400:
        return
    try:
        payload = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
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
        return f"connection closed by the server before answering ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _root_url(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port"""
    for suffix in ("/v1",):
        if base_url.endswith(suffix):
            return base_url[: -len(suffix)]
    return base_url
