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
            if owner.models_deep:
                self._raw_response(200, "application/json", b"[" * 100_000 + b"]" * 100_000)
                return
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in owner.models]})
        elif self.path.endswith("/models/status") and owner.model_status is not None:
            self._json(200, owner.model_status)  # oMLX's per-model status, as given
        elif self.path == "/api/status" and owner.status is not None:
            # oMLX's shape: version, active and waiting requests (no limit: see preflight.py).
            self._json(200, {"status": "ok", "version": "0.5.3", "active_requests": owner.in_flight,
                             "waiting_requests": 0, **owner.status})
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
        if body.get("model") not in owner.models:
            owner.requests.append({"body": body, "behaviour": behaviour, "headers": dict(self.headers)})
            self._json(404, {"error": {"message": f"Model '{body.get('model')}' not found", "type": "not_found_error"}})
            return
        if owner.capacity is not None and behaviour == Behaviour.OK:
            if not owner.admit():
                # oMLX 0.5.3 with a full waiting queue: the 200 is already sent.
                owner.requests.append({"body": body, "behaviour": "queue_full", "headers": dict(self.headers)})
                if owner.refusal != "queue_full":  # a server that says so with a status (429, 503)
                    self._b_status(body, owner.refusal)
                elif body.get("stream"):
                    self._b_stream_error(body, "")
                else:
                    self._b_spaces_then_cut(body, "")
                return
            owner.requests.append({"body": body, "behaviour": behaviour, "headers": dict(self.headers)})
            self._slot_held = True
            try:
                self._b_ok(body, "")
            finally:
                self._free_slot()
            return
        owner.requests.append({"body": body, "behaviour": behaviour, "headers": dict(self.headers)})
        kind, _, arg = behaviour.partition(":")
        handler = getattr(self, f"_b_{kind}")
        handler(body, arg)

    # ------------------------------------------------------------ behaviours

    def _b_ok(self, body: dict[str, Any], arg: str) -> None:
        if body.get("stream"):
            self._sse_answer(body)  # the delay comes after the first token, as generation does
        else:
            time.sleep(self.server.owner.delay)
            self._free_slot()
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

    def _free_slot(self) -> None:
        # A server frees a request's slot when generation ends, before the last bytes go out.
        if getattr(self, "_slot_held", False):
            self._slot_held = False
            self.server.owner.leave()

    # ------------------------------------------------------------ hostile servers

    def _b_echo(self, body: dict[str, Any], arg: str) -> None:
        # A server that echoes the request's headers in its error (401, 400, 500 or inside a 200).
        echoed = "; ".join(f"{k}={v}" for k, v in self.headers.items())
        message = f"invalid api key: auth={self.headers.get('Authorization')} headers: {echoed}"
        if arg == "200":
            self._raw_response(200, "application/json", b"  " + json.dumps({"error": {"message": message, "type": "server_error"}}).encode())
        else:
            self._json(int(arg or 401), {"error": {"message": message, "type": "authentication_error" if arg == "401" else "server_error"}})

    def _b_hostile_chunk(self, body: dict[str, Any], arg: str) -> None:
        # One malformed chunk in an otherwise normal-looking stream.
        chunks = {
            "surrogate": '{"choices":[{"index":0,"delta":{"content":"bad \\ud800 text"},"finish_reason":null}]}',
            "deep": "[" * 100_000 + "]" * 100_000,
            "choices_string": '{"choices":"abc"}',
            "choices_int": '{"choices":[1]}',
            "list": "[1, 2]",
            "int_content": '{"choices":[{"index":0,"delta":{"content":5},"finish_reason":null}]}',
            "usage_lots": '{"choices":[],"usage":"lots"}',
            "int_finish": '{"choices":[{"index":0,"delta":{},"finish_reason":1}]}',
            "deep_usage": '{"choices":[],"usage":{"prompt_tokens":"many"}}',
        }
        self._sse_start()
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello "}, "finish_reason": None}]})
        self._sse_raw(f"data: {chunks[arg]}\n\n")
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._sse_raw("data: [DONE]\n\n")

    def _b_hostile_body(self, body: dict[str, Any], arg: str) -> None:
        bodies = {
            "surrogate": b'{"choices":[{"index":0,"message":{"content":"x \\udc80"},"finish_reason":"stop"}]}',
            "deep": b"{\"a\":" * 100_000 + b"1" + b"}" * 100_000,
            "choices_string": b'{"choices":"abc"}',
            "choices_int": b'{"choices":[1]}',
            "list": b"[1, 2]",
            "int_content": b'{"choices":[{"index":0,"message":{"content":5},"finish_reason":"stop"}]}',
            "usage_lots": b'{"choices":[{"index":0,"message":{"content":"ok"},"finish_reason":"stop"}],"usage":"lots"}',
            "int_finish": b'{"choices":[{"index":0,"message":{"content":"ok"},"finish_reason":1}]}',
        }
        self._raw_response(200, "application/json", bodies[arg])

    def _b_endless(self, body: dict[str, Any], arg: str) -> None:
        # A fast stream that never ends (until the client hangs up), or one endless line.
        self._sse_start()
        piece = "x" * 60_000
        chunk = f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}, 'finish_reason': None}]})}\n\n".encode()
        try:
            if arg == "line":
                self.wfile.write(b"data: ")
                while True:
                    self.wfile.write(piece.encode())
            while True:
                self.wfile.write(chunk)
        except OSError:
            pass

    def _b_huge(self, body: dict[str, Any], arg: str) -> None:
        # An answer of ``arg`` MB that finishes properly.
        size = int(float(arg) * 1_000_000)
        self._sse_start()
        piece = "y" * 100_000
        for _ in range(size // len(piece) + 1):
            self._sse({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        self._sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._sse_raw("data: [DONE]\n\n")

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
        time.sleep(self.server.owner.delay)
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"reasoning_content": "it over."}, "finish_reason": None}]})
        self._sse({"id": "x", "choices": [{"index": 0, "delta": {"content": answer_for(body)}, "finish_reason": None}]})
        self._free_slot()
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

    def __init__(self, models: list[str] | None = None, api_key: str | None = None, delay: float = 0.0,
                 *, capacity: int | None = None, status: dict[str, Any] | None = None, port: int = 0,
                 models_deep: bool = False, refusal: str = "queue_full", model_status: Any = None):
        self.models = models or ["test-model"]
        self.api_key = api_key
        self.delay = delay  # seconds before every answer, to keep a run busy
        # capacity N: like oMLX with a full queue, refuse (after the 200) any request that
        # arrives while N are being answered.
        self.capacity = capacity
        self.refusal = refusal  # how it refuses: like oMLX 0.5.3 ("queue_full") or a status ("429", "503")
        self.status = status  # serve oMLX's /api/status, with these extra fields
        self.model_status = model_status  # serve oMLX's /v1/models/status, this payload
        self.models_deep = models_deep
        self.in_flight = 0
        self.peak_in_flight = 0
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = self._Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def admit(self) -> bool:
        with self._lock:
            if self.in_flight >= (self.capacity or 0):
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

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
        self.stop()

    def stop(self) -> None:
        """Stop listening: new connections are refused (an outage)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
