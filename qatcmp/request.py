"""The JSON body of a chat request for one model variant and one question.

Everything that decides the answer is sent explicitly - sampling, the thinking switch, the
seed - because servers' defaults differ and are not the model's recommended settings.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from qatcmp.config import Config, ModelConfig


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``; nested mappings merge key by key, so a model's
    ``chat_template_kwargs`` adds to the server's instead of replacing it."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def request_seed(base_seed: int, benchmark: str, item_id: str, sample: int) -> int:
    """A per-request seed: repeated samples of a question differ, a rerun is identical, and
    every variant gets the same seed for the same question (common random numbers, which
    make the paired comparison sharper)."""
    digest = hashlib.sha256(f"{base_seed}:{benchmark}:{item_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def request_template(config: Config, model: ModelConfig, run_seed: int) -> dict[str, Any]:
    """The body every request of this variant shares (no messages, no per-request seed).
    It is recorded in the run's spec: a change to it makes a different experiment."""
    server = config.server(model.server)
    sampling = config.sampling_for(model)
    body: dict[str, Any] = {"model": model.model}
    for name in ("temperature", "top_p", "top_k", "min_p", "max_tokens"):
        value = getattr(sampling, name)
        if value is not None:
            body[name] = value
    switch = model.thinking_switch or server.thinking_switch
    body = deep_merge(body, server.extra_body)
    body = deep_merge(body, switch.on if model.thinking else switch.off)
    body = deep_merge(body, model.extra_body)
    body["stream"] = server.stream
    if server.stream:
        body["stream_options"] = {"include_usage": True}
    body["seed"] = sampling.seed if sampling.seed is not None else run_seed
    return body


def build_request(
    template: dict[str, Any], messages: list[dict[str, Any]], benchmark: str, item_id: str, sample: int
) -> dict[str, Any]:
    body = copy.deepcopy(template)
    if body.get("seed") is not None:
        body["seed"] = request_seed(int(body["seed"]), benchmark, item_id, sample)
    body["messages"] = messages
    return body
