"""A local OpenAI-compatible server that misbehaves on cue, for fault-injection tests.

It listens on a real loopback socket (so dropped connections and timeouts are real) and
answers each chat request according to a script: a list of behaviours consumed one per
request, falling back to ``ok`` when the script is empty. Behaviours imitate what oMLX and
mlx-lm really do (see the project's backend notes): keepalive comments and chunks, error
events inside a 200 stream, an error JSON after leading spaces, a connection cut mid-answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer_for(body: dict[str, Any]) -> str:
    """A deterministic answer that names the question, so tests can spot mix-ups."""
    last = body["messages"][-1]["content"]
    letter = "ABCD"[sum(map(ord, last)) % 4]
    return f"The answer is ({letter})."


class Behaviour:
    OK = "ok"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "MisbehavingServer._Server"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.path.endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in owner.models]})
        else:
            self._json(404, {"error": "Not Found"})

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if owner.api_key and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._json(401, {"error": {"message": "Invalid API key", "type": "authentication_error"}})
            return
        behaviour = owner.next_behaviour()
        owner.requests.append({"body": body, "behaviour": behaviour, "headers": dict(self.headers)})
        if body.get("model") not in owner.models:
            self._json(404, {"error": {"message": f"Model '{body.get('model')}' not found", "type": "not_found_error"}})
            return
        kind, _, arg = behaviour.partition(":")
        handler = getattr(self, f"_b_{kind}")
        handler(body, arg)

    # ------------------------------------------------------------ behaviours

    def _b_ok(self, body: dict[str, Any], arg: str) -> None:
        time.sleep(self.server.owner.delay)
        if body.get("stream"):
            self._sse_answer(body)
        else:
            self._json(200, self._completion(body))

    def _b_status(self, body: dict[str, Any], arg: str) -> None:
        code, _, retry_after = arg.partition(",")
        headers = {"Retry-After": retry_after} if retry_after else {}
        self._json(int(code), {"error": {"message": f"simulated {code}", "type": "server_error"}}, headers)

    def _b_mlxerror(self, body: dict[str, Any], arg: str) -> None:
        self._json(int(arg), {"error": f"simulated mlx-lm error {arg}"})

    def _b_error_in_200(self, body: dict[str, Any], arg: str) -> None:
        # oMLX non-streaming: spaces as keepalive, then an error object instead of a completion.
        payload = b"   " + json.dumps({"error": {"message": "memory guard: not enough memory", "type": "server_error"}}).encode()
        self._raw_response(200, "application/json", payload)

    def _b_spaces_then_cut(self, body: dict[str, Any], arg: str) -> None:
        # oMLX 0.5.3 with a full queue, non-streaming: HTTP 200, one space, connection cut.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b" ")
        self.wfile.flush()
        self._cut()

    def _b_stream_error(self, body: dict[str, Any], arg: str) -> None:
        # oMLX 0.5.3 with a full queue, streaming: keepalive, role chunk, error event, [DONE].
        self._sse_start()
        self._sse({"model": "keepalive", "choices": []})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        self._sse({"error": {"message": "Scheduler waiting queue full", "type": "server_error"}})
        self._sse_raw("data: [DONE]\n\n")
        self._sse_end()

    def _b_cut_mid_stream(self, body: dict[str, Any], arg: str) -> None:
        self._sse_start()
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"reasoning_content": "Let me think"}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"content": "The ans"}, "finish_reason": None}]})
        self._cut()

    def _b_no_done(self, body: dict[str, Any], arg: str) -> None:
        # A stream that simply ends: no finish reason, no [DONE], connection closed cleanly.
        self._sse_start()
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"content": "The answer"}, "finish_reason": None}]})
        self._sse_end()

    def _b_slow(self, body: dict[str, Any], arg: str) -> None:
        time.sleep(float(arg or 5))
        self._b_ok(body, "")

    def _b_length(self, body: dict[str, Any], arg: str) -> None:
        # oMLX, Qwen-style template, streaming, budget exhausted while thinking: partial
        # reasoning as reasoning_content, then the same text again as one content delta.
        self._sse_start()
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"reasoning_content": "Okay, let"}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"content": "<think>\nOkay, let"}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        self._sse({"id": "x", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})
        self._sse_raw("data: [DONE]\n\n")
        self._sse_end()

    # ------------------------------------------------------------ helpers

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "reasoning_content": "Thinking it over.", "content": answer_for(body)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28, "total_time": 0.01},
        }

    def _sse_answer(self, body: dict[str, Any]) -> None:
        self._sse_start()
        self._sse_raw(": keepalive\n\n")
        self._sse({"model": "keepalive", "choices": []})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Thinking "}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"reasoning_content": "it over."}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"content": answer_for(body)}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._sse({
            "id": "x",
            "choices": [],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": 8,
                "total_tokens": 28,
                "prompt_tokens_details": {"cached_tokens": 4},
                "time_to_first_token": 0.01,
                "generation_tokens_per_second": 800.0,
            },
        })
        self._sse_raw("data: [DONE]\n\n")
        self._sse_end()

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._raw_response(status, "application/json", json.dumps(payload).encode(), headers)

    def _raw_response(self, status: int, ctype: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, obj: Any) -> None:
        self._sse_raw(f"data: {json.dumps(obj)}\n\n")

    def _sse_raw(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()

    def _sse_end(self) -> None:
        self.wfile.flush()

    def _cut(self) -> None:
        # Close the socket abruptly (RST), as a crashed or overloaded server would.
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.connection.close()
        self.close_connection = True


class MisbehavingServer:
    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        owner: "MisbehavingServer"

        def handle_error(self, request, client_address) -> None:
            pass  # the client hung up (a timeout test): expected, not worth a traceback

    def __init__(self, models: list[str] | None = None, api_key: str | None = None, delay: float = 0.0):
        self.models = models or ["test-model"]
        self.api_key = api_key
        self.delay = delay  # seconds before every answer, to keep a run busy
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = self._Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def queue(self, *behaviours: str) -> None:
        with self._lock:
            self.script.extend(behaviours)

    def next_behaviour(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else Behaviour.OK

    def chat_requests(self) -> list[dict[str, Any]]:
        return list(self.requests)

    def __enter__(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
