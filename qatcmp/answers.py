"""Taking a server's answer apart: one ``Completion`` out of whatever came back.

Where reasoning is (``reasoning_content``, ``reasoning``, inline ``<think>`` tags, an unclosed
think block when the budget ran out), how errors look (OpenAI's nested object, mlx-lm's
string, an error JSON inside an HTTP 200, an error event inside a stream), and every shape a
broken or hostile server may send instead: each field is checked for its type, text for
encodability, the answer for its size. A malformed answer is a ``RetryableError`` naming the
reason, never an exception that escapes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from qatcmp.records import Usage


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
