"""The Set-up section: how the numbers were made, from the run's manifest and scores.meta.json.

Both files come from disk and may be old, hand-edited or written by another tool: every key
is read with a default, and a value of the wrong type is left out rather than trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qatcmp.records import RunManifest
from qatcmp.report.model import BENCHMARK_LABELS, DatasetSetup, ExcludedItem, SandboxSetup, Setup, VariantSetup

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "seed")
ISOLATIONS = ("bubblewrap", "sandbox-exec", "none")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _thinking(config_entry: Mapping[str, Any], body: Mapping[str, Any]) -> bool | None:
    if isinstance(config_entry.get("thinking"), bool):
        return config_entry["thinking"]
    switch = _dict(body.get("chat_template_kwargs")).get("enable_thinking")
    return switch if isinstance(switch, bool) else None


def variant_setup(name: str, manifest: RunManifest) -> VariantSetup:
    spec = _dict(manifest.spec.models.get(name))
    body = _dict(spec.get("body"))
    config_models = manifest.config.get("models") if isinstance(manifest.config, dict) else None
    entry = next(
        (_dict(m) for m in (config_models if isinstance(config_models, list) else []) if _dict(m).get("name") == name),
        {},
    )
    server = _str(spec.get("server")) or _str(entry.get("server"))
    info = manifest.servers.get(server) if server else None
    return VariantSetup(
        model=name,
        server=server,
        server_url=info.base_url if info else None,
        server_version=info.version if info else None,
        model_id=_str(body.get("model")) or _str(entry.get("model")),
        thinking=_thinking(entry, body),
        max_tokens=_int(body.get("max_tokens")),
        sampling={k: body[k] for k in SAMPLING_KEYS if isinstance(body.get(k), (int, float)) and not isinstance(body.get(k), bool)},
        imported_from=_str(spec.get("imported_from")),
    )


def dataset_setup(selection: Any) -> DatasetSetup:
    name = str(selection.name)
    label = BENCHMARK_LABELS.get(name, name)
    dataset = str(selection.dataset)
    revision = _str(selection.revision)
    questions = len(selection.item_ids)
    total = _int(selection.total_available)
    if dataset.startswith("builtin:"):
        kind, description = "builtin", (
            f"builtin {total}-question sample ({dataset.removeprefix('builtin:')}, shipped with qatcmp)"
            if name == "mmlu_pro" else f"builtin copy ({dataset.removeprefix('builtin:')}, {total} problems, shipped with qatcmp)"
        )
    elif dataset.startswith("import:"):
        kind, description = "import", f"imported from {dataset.removeprefix('import:')}"
    elif "/" in dataset and not dataset.startswith(("/", ".")) and not dataset.endswith((".jsonl", ".gz", ".parquet", ".json")):
        kind, description = "hub", f"Hugging Face {dataset}"
    else:
        kind, description = "local", f"local file {dataset}"
    if revision:
        description += f", revision {revision}" if kind == "hub" else f", sha256 {revision.removeprefix('sha256:')}"
    if _str(selection.split):
        description += f", split {selection.split}"
    return DatasetSetup(
        benchmark=name, label=label, dataset=dataset, kind=kind, description=description,
        revision=revision, split=_str(selection.split), questions=questions, total_available=total,
    )


def sandbox_setup(meta: Mapping[str, Any]) -> SandboxSetup | None:
    """What the sandbox did when HumanEval was scored (keys added over time: all optional)."""
    protections = meta.get("sandbox_protections")
    isolation = meta.get("sandbox_isolation")
    unsafe = meta.get("unsafe_no_isolation") is True
    if protections is None and isolation is None and not unsafe:
        return None
    return SandboxSetup(
        isolation=isolation if isolation in ISOLATIONS else None,
        unsafe_no_isolation=unsafe or isolation == "none",
        protections=[str(p) for p in protections] if isinstance(protections, list) else None,
        limits=_dict(meta.get("sandbox_limits")) or None,
    )


def excluded_items(manifest: RunManifest) -> list[ExcludedItem]:
    """Questions whose text, options or answer differ between merged sources (written by
    `qatcmp import` into the manifest); malformed entries are skipped."""
    found = []
    entries = getattr(manifest, "excluded_items", None)
    for entry in entries if isinstance(entries, (list, tuple)) else []:
        data = entry.model_dump() if hasattr(entry, "model_dump") else entry
        if isinstance(data, dict) and isinstance(data.get("benchmark"), str) and data.get("item_id") is not None:
            found.append(ExcludedItem(benchmark=data["benchmark"], item_id=str(data["item_id"]), reason=str(data.get("reason") or "")))
    return found


def build_setup(manifest: RunManifest, meta: Mapping[str, Any] | None, mode: str, *, mode_chosen: bool) -> Setup:
    meta = meta or {}
    names = list(manifest.spec.models)
    has_code = any(b.name == "humaneval" for b in manifest.spec.benchmarks)
    return Setup(
        run_source=str(manifest.source),
        run_qatcmp_version=manifest.qatcmp_version,
        command=[str(c) for c in manifest.command],
        seed=manifest.spec.seed,
        samples=manifest.spec.samples,
        variants=[variant_setup(name, manifest) for name in names],
        datasets=[dataset_setup(b) for b in manifest.spec.benchmarks],
        extraction_mode=mode if any(b.name == "mmlu_pro" for b in manifest.spec.benchmarks) else None,
        extraction_mode_source=(
            "chosen with `qatcmp score --extract`" if mode_chosen else "qatcmp's default; `qatcmp score --extract` chooses"
        ),
        sandbox=sandbox_setup(meta) if has_code else None,
        manifest_warnings=[str(w) for w in manifest.warnings],
    )
