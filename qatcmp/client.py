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
from typing import Any

import httpx

from qatcmp import __version__
from qatcmp.answers import (  # noqa: F401  (re-exported: the client's public names)
    Completion,
    FatalRequestError,
    RequestFailed,
    RetryableError,
    _loads,
    _StreamState,
    completion_from_json_body,
    error_message,
    finish_completion,
    mark_unfinished_thinking,
    printable,
    split_think_tags,
)
from qatcmp.concurrency import ServerGate, Ticket, congestion_pause
from qatcmp.config import ServerConfig

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



# --------------------------------------------------------------------------- client


def _parse_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare on local servers; fall back to backoff



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
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection at all: the server is not there (an outage, if it lasts).
            raise RetryableError(_describe_transport_error(exc), kind="connection") from None
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out ({type(exc).__name__})", kind="timeout") from None
        except httpx.TransportError as exc:
            # Connected, then cut before the headers: a server shedding load (oMLX's full
            # queue cuts right after the 200) or going down - the next connect tells which.
            raise RetryableError(_describe_transport_error(exc), kind="cut_before_answer") from None
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
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
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
