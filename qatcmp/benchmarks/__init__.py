"""The benchmarks. Each module loads its dataset, samples questions, builds the prompt and
scores an answer; this package maps benchmark names to those modules."""

from __future__ import annotations

from types import ModuleType

from qatcmp.benchmarks import humaneval, mmlu_pro

MODULES: dict[str, ModuleType] = {"mmlu_pro": mmlu_pro, "humaneval": humaneval}


def module_for(name: str) -> ModuleType:
    return MODULES[name]
