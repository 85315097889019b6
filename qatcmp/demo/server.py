"""Run mlx-lm's own OpenAI-compatible server (``mlx_lm.server``) as a child process.

One model directory is served with ``--model DIR``. Several are laid out as a Hugging Face hub
cache (``models--ORG--NAME/refs/main``, ``snapshots/<hash>/``) that the server reads offline,
so one server answers for every variant and a request's ``model`` field picks the variant
(the server keeps one model resident and swaps on demand, like oMLX under memory pressure).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from qatcmp.errors import QatcmpError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
HUB_ORG = "qatcmp-demo"
LOG_TAIL_LINES = 8
_PORT_TAKEN = "Address already in use"
_PORT_ATTEMPTS = 3
_POLL_READ_TIMEOUT = 10.0


class DemoUnavailableError(QatcmpError):
    """mlx / mlx-lm are not installed."""


class ServerStartError(QatcmpError):
    """mlx_lm.server did not come up (it died, or no completion within the timeout)."""


def require_demo_dependencies() -> None:
    """Raise DemoUnavailableError unless mlx-lm and an mlx build can be imported."""
    for module in ("mlx_lm", "mlx.core"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # the parent package is missing
            found = False
        if not found:
            raise DemoUnavailableError(
                f"the demo backend needs mlx-lm and mlx ({module} is not installed): "
                "pip install 'qatcmp[demo]'"
            )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def hub_model_id(variant: str) -> str:
    """The id a multi-model server knows a variant by, e.g. ``qatcmp-demo/tiny-4bit``."""
    return f"{HUB_ORG}/tiny-{re.sub(r'[^A-Za-z0-9._-]', '-', variant)}"


# Servers still running when the interpreter exits (a forgotten stop(), Ctrl-C) are killed.
# A strong reference: dropping the object must not orphan its process.
_RUNNING: set[MlxLmServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


class MlxLmServer:
    """``python -m mlx_lm server`` on 127.0.0.1, as a child process in its own process group.

    Use as a context manager, or call start() and stop(); stop() kills the whole group and is
    safe to call twice. After start(), ``base_url`` is ``http://127.0.0.1:PORT/v1`` and
    ``model_ids`` maps each variant name to the id to send as ``"model"``.
    """

    def __init__(
        self,
        models: Mapping[str, Path] | Path,
        *,
        port: int | None = None,
        workdir: Path,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.log_path = Path(log_path) if log_path is not None else self.workdir / "mlx_lm-server.log"
        self.extra_args = list(extra_args)
        self._requested_port = port
        self.port: int | None = port
        self._process: subprocess.Popen[bytes] | None = None
        if isinstance(models, Mapping):
            if not models:
                raise ValueError("MlxLmServer needs at least one model")
            self._single: Path | None = None
            self._models = {name: Path(path) for name, path in models.items()}
            self.model_ids = {name: hub_model_id(name) for name in self._models}
        else:
            self._single = Path(models).resolve()
            self._models = {self._single.name: self._single}
            # The server lists (and accepts) a --model directory under its absolute path.
            self.model_ids = {self._single.name: str(self._single)}

    # ------------------------------------------------------------------ public

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("MlxLmServer: start() it first")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 180) -> None:
        """Start the server and wait until it answers a real chat completion."""
        if self.is_running():
            return
        require_demo_dependencies()
        for path in self._models.values():
            if not (path / "config.json").is_file():
                raise ServerStartError(f"not a model directory (no config.json): {path}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        hub_cache = self._prepare_hub_cache()
        deadline = time.monotonic() + timeout
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                if self._requested_port is None:
                    self.port = free_port()
                elif not _port_is_free(self._requested_port):
                    # mlx_lm.server would hang after failing to bind, and the poll below
                    # could reach whoever holds the port.
                    raise ServerStartError(f"port {self._requested_port} on {HOST} is already in use")
                self._spawn(hub_cache)
                failure = self._wait_ready(deadline)
                if failure is None:
                    log.info("mlx_lm.server ready at %s (pid %s)", self.base_url, self.pid)
                    return
                code = self._kill()
                # Another process took the port between free_port() and the bind: try another.
                if self._requested_port is None and attempt < _PORT_ATTEMPTS and _PORT_TAKEN in failure:
                    log.debug("port %s was taken, retrying", self.port)
                    continue
                last_lines = "\n".join(failure.splitlines()[-LOG_TAIL_LINES:])
                raise ServerStartError(
                    f"mlx_lm.server failed to start (exit code {code}); "
                    f"last lines of {self.log_path}: {_one_line(last_lines)}"
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the server's whole process group (SIGTERM, then SIGKILL) and reap it."""
        self._kill()
        if self._requested_port is None:
            self.port = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def __enter__(self) -> MlxLmServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.port else "not started"
        return f"MlxLmServer({', '.join(self.model_ids)} at {where})"

    # ------------------------------------------------------------------ internals

    def _prepare_hub_cache(self) -> Path:
        """An HF hub cache folder holding the variants (multi-model) or nothing (single).

        The server needs HF_HUB_CACHE to exist even for --model DIR, or /v1/models fails."""
        hub = self.workdir / "hub"
        if hub.exists():
            shutil.rmtree(hub)
        hub.mkdir(parents=True)
        if self._single is not None:
            return hub
        for name, source in self._models.items():
            org, repo = self.model_ids[name].split("/")
            repo_dir = hub / f"models--{org}--{repo}"
            files = sorted(p for p in source.iterdir() if p.is_file())
            digest = hashlib.sha1()
            for path in files:
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
            commit = digest.hexdigest()
            snapshot = repo_dir / "snapshots" / commit
            snapshot.mkdir(parents=True)
            for path in files:
                shutil.copy2(path, snapshot / path.name)
            (repo_dir / "refs").mkdir()
            (repo_dir / "refs" / "main").write_text(commit)
        return hub

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "mlx_lm", "server", "--host", HOST, "--port", str(self.port)]
        if self._single is not None:
            command += ["--model", str(self._single)]
        return command + self.extra_args

    def _spawn(self, hub_cache: Path) -> None:
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_HUB_CACHE=str(hub_cache),
            HF_HUB_DISABLE_TELEMETRY="1",
            PYTHONUNBUFFERED="1",
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self._command()
        log.debug("starting %s", " ".join(command))
        with open(self.log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # its own process group, killed as one
            )
        _RUNNING.add(self)

    def _kill(self) -> int | None:
        """Kill the process group and reap the server; its exit code, None if none ran."""
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is None:
            return None
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # Anything the server started (g++ compiling MLX kernels) shares its group.
        _signal_group(process.pid, signal.SIGKILL)
        try:
            return process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("mlx_lm.server (pid %s) did not exit after SIGKILL", process.pid)
            return None

    def _wait_ready(self, deadline: float) -> str | None:
        """Poll a chat completion until one succeeds (None) or the server has failed (the
        tail of its log). /health answers before the model has loaded, so it proves nothing."""
        assert self._process is not None
        model = next(iter(self.model_ids.values()))
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Are you ready?"}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
        url = f"{self.base_url}/chat/completions"
        while True:
            tail = self.log_tail(40)
            # After a failed bind the server logs the error but does not exit.
            if self._process.poll() is not None or _PORT_TAKEN in tail:
                return tail
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(
                    "mlx_lm.server gave no chat completion within the start timeout; "
                    f"last lines of {self.log_path}: {_one_line(self.log_tail())}"
                )
            # A bounded wait, so the checks above run again if something else holds the port
            # (and accepts without answering), or the first load is slow.
            wait = min(remaining, _POLL_READ_TIMEOUT)
            try:
                response = httpx.post(url, json=body, timeout=httpx.Timeout(wait, connect=1.0))
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if response.status_code == 200 and response.json().get("choices"):
                return None
            raise ServerStartError(
                f"mlx_lm.server answered HTTP {response.status_code} to a test completion for "
                f"{model!r}: {response.text[:300]!r}; last lines of {self.log_path}: "
                f"{_one_line(self.log_tail())}"
            )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) or "(empty)"
