"""Stopping a replica as soon as the transcript shows it answered (shared by the replica tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path


def stop_once_it_answered(transcript: Path, server: str, stop: Callable[[], None], timeout: float) -> threading.Thread:
    """Start a thread that calls ``stop`` once a record in ``transcript`` names ``server``."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if transcript.exists() and f'"server":"{server}"' in transcript.read_text().replace(" ", ""):
                stop()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    return watcher
