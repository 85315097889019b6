"""Growing a run: more questions of the same benchmarks, same everything else.

The question sample is nested (a larger N is the smaller one plus more questions), so a
finished run of 300 questions plus 300 more is the same experiment as a run of 600: the old
answers stay valid and only the new questions are asked. Anything else that changes (seed,
samples, variants, prompts, a benchmark added or dropped, fewer questions) is still refused.
"""

from __future__ import annotations

from typing import Any

from qatcmp.errors import DataError
from qatcmp.records import RunManifest, RunSpec, utcnow
from qatcmp.rundir import RunDir, item_hashes


def is_extension(old: RunSpec, new: RunSpec) -> bool:
    """True when `new` asks everything `old` asked, and more questions of some benchmark."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    if {k: v for k, v in a.items() if k != "benchmarks"} != {k: v for k, v in b.items() if k != "benchmarks"}:
        return False
    if [s["name"] for s in a["benchmarks"]] != [s["name"] for s in b["benchmarks"]]:
        return False
    grown = False
    for before, after in zip(a["benchmarks"], b["benchmarks"]):
        if {k: v for k, v in before.items() if k != "item_ids"} != {k: v for k, v in after.items() if k != "item_ids"}:
            return False
        old_ids, new_ids = before["item_ids"], after["item_ids"]
        if new_ids[: len(old_ids)] != old_ids:
            return False
        grown = grown or len(new_ids) > len(old_ids)
    return grown


def extend_run(run: RunDir, manifest: RunManifest, spec: RunSpec, plans: list[Any]) -> RunManifest:
    """Record the larger sample in the run folder (items first, then the manifest: a crash in
    between leaves extra items that the old manifest does not ask, which is harmless). The
    questions already asked must be unchanged on disk and in the dataset loaded now."""
    run.read_items(manifest)  # every question there and unchanged, or a one-line refusal
    items = [item for plan in plans for item in plan.items]
    hashes = item_hashes(items)
    for benchmark, old in manifest.item_hashes.items():
        changed = [item_id for item_id, digest in old.items() if hashes.get(benchmark, {}).get(item_id) != digest]
        if changed:
            raise DataError(
                f"{run.path}: {len(changed)} {benchmark} questions of the run differ in the dataset now "
                f"(first: {changed[0]}); a run can only be extended from the same dataset"
            )
    before = {s.name: len(s.item_ids) for s in manifest.spec.benchmarks}
    run.write_items(items)
    manifest.item_hashes = hashes
    history = list(getattr(manifest, "extensions", None) or [])
    history.append({"at": utcnow().isoformat(), "questions_before": before,
                    "questions_after": {s.name: len(s.item_ids) for s in spec.benchmarks}})
    manifest.spec = spec
    manifest.updated_at = utcnow()
    manifest.extensions = history  # type: ignore[attr-defined]  (records keep extra fields)
    run.write_manifest(manifest)
    return manifest
