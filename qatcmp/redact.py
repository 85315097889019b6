"""Secrets never reach disk or screen: one mask, applied where text leaves the process.

The secrets are the values qatcmp itself sends: API keys (read from the environment),
configured header values and credentials inside a ``base_url`` (``http://user:pass@host``).
A server may echo any of them back in an error body; so every record, manifest and printed
line goes through :func:`mask` / :func:`mask_obj` on its way out (the JSONL and manifest
writers, the CLI's error line, progress and summary lines, ``check``'s table). On top of the
known values, anything shaped like URL credentials or ``Bearer <token>`` is masked too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
# Literal values shorter than this are not masked: masking "1" or "on" would mangle every
# answer, and a value that short is no secret anyway.
MIN_SECRET_LENGTH = 4

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:\"']+(?::[^/\s@\"']*)?@")
_BEARER = re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{4,}")

_secrets: set[str] = set()
_ordered: list[str] = []


def register(values: Iterable[str | None]) -> None:
    """Remember secret values (and their JSON-escaped and URL-encoded forms) for masking."""
    added = False
    for value in values:
        if not value or len(value) < MIN_SECRET_LENGTH:
            continue
        for form in (value, json.dumps(value)[1:-1], unquote(value)):
            if len(form) >= MIN_SECRET_LENGTH and form not in _secrets:
                _secrets.add(form)
                added = True
    if added:
        _ordered[:] = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers


def url_credentials(url: str) -> list[str]:
    """The user name and password inside a URL, if any."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    return [v for v in (parts.username, parts.password) if v]


def register_config(config: Any) -> None:
    """Register every secret a loaded servers.yaml can make qatcmp send."""
    import os

    import base64

    values: list[str | None] = []
    for server in config.servers:
        credentials = url_credentials(server.base_url)
        values += credentials
        if credentials:  # sent as HTTP basic auth: base64("user:password")
            pair = ":".join(credentials if len(credentials) == 2 else [*credentials, ""])
            values.append(base64.b64encode(unquote(pair).encode()).decode())
        values += list(server.headers.values())
        if server.api_key_env:
            values.append(os.environ.get(server.api_key_env))
    register(values)


def mask(text: str) -> str:
    """The text with every known secret and credential-shaped string replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
    if "earer" in text or "EARER" in text or "asic" in text or "ASIC" in text:
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return text


def mask_obj(obj: Any) -> Any:
    """A copy of a JSON-like value with every string (keys included) masked."""
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, dict):
        return {mask(k) if isinstance(k, str) else k: mask_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_obj(v) for v in obj]
    return obj


def clear() -> None:
    """Forget the registered values (tests)."""
    _secrets.clear()
    _ordered.clear()
