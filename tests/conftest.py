"""Shared fixtures.

The demo backend: tiny models built once per session, and real mlx_lm.server processes over
them that are always stopped when the session ends. Tests that start servers are marked
``@pytest.mark.server``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from qatcmp.demo.server import MlxLmServer
from qatcmp.demo.tinymodel import DEMO_VARIANTS, build_demo_models


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"4bit": dir, "6bit": dir, "8bit": dir}: the demo models, built once per session."""
    return build_demo_models(tmp_path_factory.mktemp("demo-models"), DEMO_VARIANTS)


class DemoServers:
    """Starts MlxLmServers for the session and stops every one of them at its end.

    ``multi``: one server holding the three variants (started on first use, then shared);
    ``single(variant)``: a shared server for one variant served with ``--model DIR``;
    ``start(models)``: a fresh server the caller owns (stop it, or leave it to the session).
    """

    def __init__(self, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
        self.models = models
        self._tmp = tmp_path_factory
        self._started: list[MlxLmServer] = []
        self._single: dict[str, MlxLmServer] = {}

    def start(self, models: Mapping[str, Path] | Path, **kwargs) -> MlxLmServer:
        kwargs.setdefault("workdir", self._tmp.mktemp("mlx-server"))
        server = MlxLmServer(models, **kwargs)
        self._started.append(server)
        server.start()
        return server

    @functools.cached_property
    def multi(self) -> MlxLmServer:
        return self.start(self.models)

    def single(self, variant: str) -> MlxLmServer:
        if variant not in self._single:
            self._single[variant] = self.start(self.models[variant])
        return self._single[variant]

    def stop_all(self) -> None:
        for server in self._started:
            server.stop()


@pytest.fixture(scope="session")
def mlx_servers(
    demo_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoServers]:
    servers = DemoServers(demo_models, tmp_path_factory)
    try:
        yield servers
    finally:
        servers.stop_all()
