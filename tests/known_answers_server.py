"""A local OpenAI-compatible server whose variants are right or wrong on each MMLU-Pro question
by a fixed rule: tests of adaptive runs know every answer's correctness in advance.

It serves GET /models and non-streaming POST /chat/completions on a real loopback socket,
finds the question by its prompt, and answers "The answer is (X)." with X the right letter or
a wrong one as the variant's rule says. Every request is logged as (model, question id).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from qatcmp.benchmarks import mmlu_pro
from qatcmp.records import MmluProItem
from qatcmp.request import request_seed

Rule = Callable[[MmluProItem], bool]


def bucket(item: MmluProItem, modulus: int) -> int:
    """A stable pseudo-random bucket of a question (not Python's salted hash)."""
    return int(hashlib.sha256(item.item_id.encode()).hexdigest(), 16) % modulus


class KnownAnswersServer:
    def __init__(self, rules: dict[str, Rule], *, delay: float = 0.0, run_seed: int | None = None):
        self.rules = rules
        self.delay = delay
        self.run_seed = run_seed
        self.fail: set[tuple[str, str]] = set()  # (model, item_id) answered with HTTP 400
        items, _ = mmlu_pro.load("builtin")
        # The builtin sample holds two questions with the same prompt (6672 and 6673): the
        # request's per-question seed tells them apart.
        self.by_prompt: dict[str, list[MmluProItem]] = {}
        for item in items:
            self.by_prompt.setdefault(mmlu_pro.build_messages(item)[-1]["content"], []).append(item)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in owner.rules]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                model = body.get("model")
                item = owner.find(body)
                if model not in owner.rules or item is None:
                    self._json(404, {"error": {"message": "unknown model or question"}})
                    return
                with owner._lock:
                    owner.requests.append((model, item.item_id))
                if (model, item.item_id) in owner.fail:
                    self._json(400, {"error": {"message": "this question is refused today"}})
                    return
                time.sleep(owner.delay)
                right = owner.rules[model](item)
                letter = item.answer if right else ("A" if item.answer != "A" else "B")
                self._json(200, {
                    "id": "x", "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"The answer is ({letter})."}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })

            def _json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def find(self, body: dict[str, Any]) -> MmluProItem | None:
        try:
            candidates = self.by_prompt.get(body["messages"][-1]["content"], [])
        except (KeyError, IndexError, TypeError):
            return None
        if len(candidates) > 1 and self.run_seed is not None:
            for item in candidates:
                if any(body.get("seed") == request_seed(self.run_seed, "mmlu_pro", item.item_id, s) for s in range(16)):
                    return item
        return candidates[0] if candidates else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> KnownAnswersServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
