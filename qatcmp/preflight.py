"""Before the first question: what each server says about itself, and does every variant of
the run answer at all?

A wrong model id or API key should fail in seconds, not hours later when that variant's
turn comes. A model the server lists is taken as served (oMLX lists every model it serves);
any other gets one tiny request (one token). The server's own word on how many requests it
admits at once, where it gives it, is compared with ``max_concurrency``.
"""

from __future__ import annotations

import math

from typing import Any

from qatcmp.client import ChatClient, RequestFailed
from qatcmp.config import Config, ModelConfig
from qatcmp.errors import QatcmpError
from qatcmp.records import ServerInfo
from qatcmp.replica_check import model_entry
from qatcmp.request import request_template

PREFLIGHT_PROMPT = "Say OK."
# Where servers state their concurrency limit. oMLX 0.5.3's public /api/status reports only
# active_requests and waiting_requests (the limit, scheduler.max_concurrent_requests, is in
# its admin settings, which need an admin session); other servers and later versions may
# put it on their status page under one of these names.
CAPACITY_KEYS = ("max_concurrent_requests", "max_num_seqs", "max_concurrency", "max_running_requests")


class RunAborted(QatcmpError):
    """A problem that every further request would hit too (wrong key, unknown model...)."""


async def describe_server(client: ChatClient) -> ServerInfo:
    """What the server says about itself; oMLX adds per-model status and its version."""
    info = ServerInfo(base_url=client.server.base_url)
    try:
        info.models = await client.list_models()
    except RequestFailed as exc:
        info.error = exc.message
        return info
    try:
        status = await client.get_json("models/status", timeout=5.0)
        if isinstance(status, dict) and shallow(status):
            info.model_status = status
    except RequestFailed:
        pass  # not oMLX: nothing more to learn
    try:
        status = await client.get_json("/api/status", timeout=5.0, root=True)
        if isinstance(status, dict) and shallow(status):
            # Server-side settings that change timings (prefix cache, loaded models) live here.
            info.status = status
            if isinstance(status.get("version"), (str, int, float)):
                info.version = str(status["version"])[:100]
    except RequestFailed:
        pass
    return info


def shallow(value: Any, limit: int = 32) -> bool:
    """Nested at most ``limit`` deep (checked without recursion): what a server says about
    itself is stored in the manifest, and a hostile depth must not reach the writers."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def check_reachable(name: str, info: ServerInfo) -> None:
    """Refuse to start a run against a server that does not answer at all."""
    if info.error is None:
        return
    if "cannot connect" in info.error or "timed out" in info.error or "before answering" in info.error:
        raise RunAborted(f"server '{name}' at {info.base_url}: {info.error}")
    if "HTTP 401" in info.error or "HTTP 403" in info.error:
        raise RunAborted(f"server '{name}' at {info.base_url}: {info.error} (check the API key in api_key_env)")


def stated_capacity(info: ServerInfo) -> int | None:
    """How many requests the server says it runs at once, if it says so."""
    for source in (info.status, info.model_status):
        found = _find_capacity(source, depth=0)
        if found is not None:
            return found
    return None


def _find_capacity(value: Any, depth: int) -> int | None:
    if not isinstance(value, dict) or depth > 2:
        return None
    for key in CAPACITY_KEYS:
        number = value.get(key)
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            return number
    for nested in value.values():
        found = _find_capacity(nested, depth + 1)
        if found is not None:
            return found
    return None


def capacity_warning(name: str, max_concurrency: int, info: ServerInfo) -> str | None:
    capacity = stated_capacity(info)
    if capacity is None or max_concurrency <= capacity:
        return None
    return (
        f"server '{name}': max_concurrency {max_concurrency} is above the {capacity} requests it runs at once; "
        f"the rest wait in its queue or are refused (qatcmp lowers its own limit when the server is full); "
        f"set max_concurrency: {capacity}"
    )


def preflight_body(config: Config, model: ModelConfig) -> dict[str, Any]:
    """The variant's own request (model id, switches, extras) asking for one token."""
    body = request_template(config, model, 0)
    body["max_tokens"] = 1
    body["stream"] = False
    body.pop("stream_options", None)
    body["messages"] = [{"role": "user", "content": PREFLIGHT_PROMPT}]
    return body


async def preflight(config: Config, models: list[ModelConfig], clients: dict[str, ChatClient],
                    infos: dict[str, ServerInfo]) -> list[str]:
    """Check every variant before the first question. Raises RunAborted (one line) for a
    variant that cannot work; returns warnings for checks that could not decide."""
    warnings: list[str] = []
    for model in models:
        listed = infos[model.server].models
        if listed and model.model in listed:
            continue
        completion = await clients[model.server].complete(preflight_body(config, model), max_attempts=1)
        if completion.error is None:
            continue
        if completion.fatal:
            raise RunAborted(f"model '{model.name}' ({model.model} on server '{model.server}'): {completion.error}")
        warnings.append(f"model '{model.name}': the check before the run failed ({completion.error}); trying the run anyway")
    return warnings


def resident_models(configured: int | None, info: ServerInfo, model_ids: list[str]) -> int:
    """How many models a server holds at once, for the scheduler: ``max_loaded_models`` from
    servers.yaml when given; else the most this run's models the server shows it can hold:
    those its model status (oMLX's /v1/models/status) shows loaded together (``loaded: true``,
    it evidently has the memory), or those whose sizes fit its model-memory limit together
    (`models_that_fit`); else 1 - mlx-lm's server holds one, and a server that says nothing is
    taken to hold one (switching under in-flight requests would make a one-model server evict
    and reload)."""
    if configured is not None:
        return configured
    distinct = list(dict.fromkeys(model_ids))
    loaded = sum(1 for model_id in distinct
                 if isinstance(entry := model_entry(info.model_status, model_id), dict) and entry.get("loaded") is True)
    return max(1, loaded, models_that_fit(info.model_status, distinct) or 0)


# oMLX's /v1/models/status: the limit on loaded weights at the top ("max_model_memory", bytes;
# null when disabled), each model's "estimated_size" (bytes; "actual_size" once loaded).
MEMORY_LIMIT_FIELDS = ("max_model_memory",)
SIZE_FIELDS = ("actual_size", "estimated_size")


def _positive_number(value: Any) -> float | None:
    # A server's JSON may say anything: only a finite positive number (not a bool) counts.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def models_that_fit(status: Any, model_ids: list[str]) -> int | None:
    """How many of ``model_ids`` fit the server's model-memory limit at once, whichever are
    chosen: the largest k whose k biggest sizes sum to at most the limit (oMLX evicts the least
    recently used model to load one past it). None when the limit or any size is not reported."""
    if not isinstance(status, dict) or not model_ids:
        return None
    limit = next((n for f in MEMORY_LIMIT_FIELDS if (n := _positive_number(status.get(f))) is not None), None)
    if limit is None:
        return None
    sizes = []
    for model_id in model_ids:
        entry = model_entry(status, model_id)
        size = next((n for f in SIZE_FIELDS if isinstance(entry, dict)
                     and (n := _positive_number(entry.get(f))) is not None), None)
        if size is None:
            return None
        sizes.append(size)
    fit, used = 0, 0.0
    for size in sorted(sizes, reverse=True):
        if used + size > limit:
            break
        fit, used = fit + 1, used + size
    return fit
