"""How many models a server holds at once, from the memory it reports: oMLX's
/v1/models/status gives its limit on loaded weights (max_model_memory) and each model's size,
so the run's models that fit together are held together. Pure cases, hostile shapes, and a
real-HTTP run where the reported memory alone decides whether the next variant starts while
the previous one's last answers finish."""

from __future__ import annotations

import math

import pytest

from qatcmp.preflight import models_that_fit, resident_models
from qatcmp.records import ServerInfo

GB = 1_000_000_000
RUN = ["gemma-4bit", "gemma-6bit", "gemma-8bit"]


def status(limit, sizes: dict[str, object], loaded: tuple[str, ...] = ()) -> dict:
    return {"max_model_memory": limit, "loaded_count": len(loaded),
            "models": [{"id": m, "loaded": m in loaded, "estimated_size": size} for m, size in sizes.items()]}


SIZES = {"gemma-4bit": 15 * GB, "gemma-6bit": 21 * GB, "gemma-8bit": 28 * GB}


@pytest.mark.parametrize("limit, expected", [(27 * GB, 0), (28 * GB, 1), (48 * GB, 1), (49 * GB, 2), (64 * GB, 3)])
def test_the_run_models_that_fit_together_whichever_are_chosen(limit, expected):
    # The biggest k must fit: 28 + 21 = 49 GB for two, 64 GB for all three.
    assert models_that_fit(status(limit, SIZES), RUN) == expected
    held = resident_models(None, ServerInfo(base_url="http://x", model_status=status(limit, SIZES)), RUN)
    assert held == max(1, expected)


def test_loaded_size_wins_over_the_estimate_and_evidence_wins_over_arithmetic():
    sizes = {"gemma-4bit": {"estimated_size": 15 * GB, "actual_size": 30 * GB}}
    payload = {"max_model_memory": 40 * GB, "models": [{"id": "gemma-4bit", **sizes["gemma-4bit"]},
                                                        {"id": "gemma-6bit", "estimated_size": 15 * GB}]}
    assert models_that_fit(payload, ["gemma-4bit", "gemma-6bit"]) == 1  # 30 + 15 > 40
    # Two loaded together although the sizes say one fits: the server evidently holds two.
    both = status(30 * GB, SIZES, loaded=("gemma-4bit", "gemma-6bit"))
    assert resident_models(None, ServerInfo(base_url="http://x", model_status=both), RUN) == 2
    # servers.yaml still wins over both.
    assert resident_models(1, ServerInfo(base_url="http://x", model_status=status(64 * GB, SIZES)), RUN) == 1


@pytest.mark.parametrize("payload", [
    status(None, SIZES),  # oMLX with the limit disabled
    status(True, SIZES), status("64GB", SIZES), status(-1, SIZES), status(math.inf, SIZES), status(math.nan, SIZES),
    status(64 * GB, {**SIZES, "gemma-6bit": None}),  # a size not reported: no guess
    status(64 * GB, {**SIZES, "gemma-6bit": True}), status(64 * GB, {**SIZES, "gemma-6bit": "21GB"}),
    {"max_model_memory": 64 * GB, "models": "junk"}, {"max_model_memory": 64 * GB}, ["not", "a", "dict"], None,
])
def test_anything_short_of_a_limit_and_every_size_says_nothing(payload):
    assert models_that_fit(payload, RUN) is None
    assert resident_models(None, ServerInfo(base_url="http://x", model_status=payload if isinstance(payload, dict) else None),
                           RUN) == 1


def test_the_same_weights_named_twice_count_once():
    assert models_that_fit(status(30 * GB, SIZES), ["gemma-8bit", "gemma-8bit"]) == 1
    assert resident_models(None, ServerInfo(base_url="http://x", model_status=status(30 * GB, SIZES)),
                           ["gemma-8bit", "gemma-8bit"]) == 1


@pytest.mark.parametrize("limit_gb, overlap", [(64, True), (40, False)])
def test_reported_memory_alone_lets_the_next_variant_start_early(tmp_path, limit_gb, overlap):
    # A real local HTTP server reporting oMLX's model status (nothing loaded yet, no
    # max_loaded_models in servers.yaml): m1 and m2 are 30 GB each.
    from misbehaving_server import MisbehavingServer
    from overlap_run import second_variant_starts_early

    payload = status(limit_gb * GB, {"m1": 30 * GB, "m2": 30 * GB})
    with MisbehavingServer(models=["m1", "m2"], delay=0.15, model_status=payload) as server:
        assert second_variant_starts_early(tmp_path, server.base_url) is overlap
