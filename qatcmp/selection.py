"""Which questions a run asks: loaded and sampled from the datasets for a new run, or read
back from the run folder when resuming."""

from __future__ import annotations

from qatcmp.benchmarks import module_for
from qatcmp.errors import ConfigError
from qatcmp.records import BenchmarkSelection
from qatcmp.rundir import RunDir
from qatcmp.runner import BenchmarkPlan


def plan_benchmarks(counts: dict[str, int], sources: dict[str, str | None], seed: int) -> list[BenchmarkPlan]:
    """Load each benchmark with a positive count and take its seeded sample."""
    plans: list[BenchmarkPlan] = []
    for name, n in counts.items():
        if n <= 0:
            continue
        module = module_for(name)
        items, loaded = module.load(sources.get(name))
        if n > len(items):
            raise ConfigError(
                f"--{name.replace('_', '-')} {n}: the dataset ({loaded.dataset}) has only {len(items)} "
                f"questions; give at most {len(items)}"
            )
        chosen = module.sample(items, n, seed)
        selection = BenchmarkSelection(
            name=name,
            dataset=loaded.dataset,
            revision=loaded.revision,
            split=loaded.split,
            total_available=len(items),
            item_ids=[item.item_id for item in chosen],
            prompt_template=module.PROMPT_TEMPLATE,
        )
        plans.append(BenchmarkPlan(selection, chosen))
    if not plans:
        raise ConfigError("nothing to run: give --mmlu-pro N and/or --humaneval N (see `qatcmp plan` for how many)")
    return plans


def plans_from_run(run: RunDir) -> tuple[list[BenchmarkPlan], int, int]:
    """The questions, seed and samples of an existing run (to resume it as it was)."""
    manifest = run.read_manifest()
    # Checked against the manifest: every question present, none edited.
    items = {(item.benchmark, item.item_id): item for item in run.read_items(manifest)}
    plans = []
    for selection in manifest.spec.benchmarks:
        chosen = [items[(selection.name, item_id)] for item_id in selection.item_ids]
        plans.append(BenchmarkPlan(selection, chosen))
    return plans, manifest.spec.seed, manifest.spec.samples
