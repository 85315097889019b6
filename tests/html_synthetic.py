"""A synthetic run folder for the report.html tests and bench/bench_html.py: real questions
(qatcmp's builtin MMLU-Pro and HumanEval files), made-up answers with thinking-model lengths,
and score records written directly (no server, no sandbox) — every file a real run has."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from qatcmp import __version__
from qatcmp.benchmarks import module_for
from qatcmp.records import (
    BenchmarkSelection,
    HumanEvalItem,
    MmluProItem,
    RunManifest,
    RunSpec,
    ScoreRecord,
    TranscriptRecord,
    Usage,
)
from qatcmp.rundir import RunDir, write_jsonl_atomic

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
_WORDS: list[str] = []


def words() -> list[str]:
    """The vocabulary of the builtin MMLU-Pro questions: words drawn at random from it compress
    about as badly as real answers (a little worse: no grammar), so sizes are not flattered."""
    if not _WORDS:
        items, _ = module_for("mmlu_pro").load("builtin")
        _WORDS.extend(w for item in items for w in item.question.split())
    return _WORDS


def prose(rng: random.Random, chars: int) -> str:
    vocabulary = words()
    out, size = [], 0
    while size < chars:
        word = rng.choice(vocabulary)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


def _items(name: str, n: int, seed: int) -> list:
    module = module_for(name)
    items, _ = module.load("builtin")
    if n <= len(items):
        return module.sample(items, n, seed)
    # More questions than the builtin file has: repeat them under new ids.
    out = []
    for index in range(n):
        item = items[index % len(items)]
        out.append(item.model_copy(update={"item_id": f"{item.item_id}#{index // len(items)}"} if index >= len(items) else {}))
    return out


def make_run(
    path: Path,
    *,
    models: tuple[str, ...] = ("4bit", "6bit", "qat8"),
    mmlu_pro: int = 40,
    humaneval: int = 10,
    samples: int = 1,
    seed: int = 0,
    reasoning_median: int = 4000,
    accuracy: dict[str, float] | None = None,
) -> RunDir:
    """Write manifest, items, transcripts and scores; return the run folder."""
    rng = random.Random(seed)
    accuracy = accuracy or {m: 0.55 + 0.08 * i for i, m in enumerate(models)}
    run = RunDir(path)
    chosen = {"mmlu_pro": _items("mmlu_pro", mmlu_pro, seed), "humaneval": _items("humaneval", humaneval, seed)}
    chosen = {k: v for k, v in chosen.items() if v}
    selections = [
        BenchmarkSelection(name=name, dataset="builtin:synthetic", total_available=len(items),
                           item_ids=[i.item_id for i in items], prompt_template="synthetic")
        for name, items in chosen.items()
    ]
    run.write_manifest(RunManifest(
        qatcmp_version=__version__, created_at=NOW, updated_at=NOW, config={},
        spec=RunSpec(benchmarks=selections, seed=seed, samples=samples, models={m: {"synthetic": True} for m in models}),
    ))
    run.write_items([i for items in chosen.values() for i in items])
    scores: list[ScoreRecord] = []
    for model in models:
        for name, items in chosen.items():
            transcripts = []
            for item in items:
                # A per-question difficulty shared by the models makes their outcomes correlated.
                easy = random.Random(f"{seed}/{item.item_id}").random()
                for sample in range(samples):
                    record, score = _answer(rng, model, item, sample, easy < accuracy[model], reasoning_median)
                    transcripts.append(record)
                    scores.append(score)
            write_jsonl_atomic(run.transcript_file(model, name), transcripts)
    write_jsonl_atomic(run.scores, scores)
    return run


def _answer(rng: random.Random, model: str, item, sample: int, right: bool, median: int):
    reasoning = prose(rng, int(min(60000, rng.lognormvariate(0, 0.8) * median)))
    truncated = rng.random() < 0.02
    tokens = len(reasoning) // 4 + 200
    base = dict(model=model, benchmark=item.benchmark, item_id=item.item_id, sample=sample)
    if isinstance(item, MmluProItem):
        letter = item.answer if right else "ABCDEFGHIJ"[(ord(item.answer) - 64) % len(item.options)]
        content = prose(rng, rng.randint(200, 1200)) + f"\n\nThe answer is ({letter})."
        score_fields = dict(category=item.category, correct=right and not truncated, status="answered",
                            extracted=letter, extraction_rule="answer_is", detail=f"{letter} vs {item.answer}")
    else:
        assert isinstance(item, HumanEvalItem)
        code = (item.canonical_solution or "    return None\n") if right else "    return []\n"
        content = "Here is the function:\n\n```python\n" + code + "```\n" + prose(rng, rng.randint(100, 500))
        score_fields = dict(correct=right and not truncated, status="passed" if right else "failed",
                            extracted=item.prompt + code, extraction_rule="fenced_body",
                            detail="" if right else "AssertionError: candidate([1, 2]) == [2, 1] failed", run_s=0.05)
    started = NOW + timedelta(seconds=rng.randint(0, 10_000))
    latency = tokens / rng.uniform(30, 60)
    record = TranscriptRecord(
        **base, messages=[{"role": "user", "content": "…"}], request={"max_tokens": 32768},
        content=content, reasoning=reasoning, reasoning_source="reasoning_content",
        finish_reason="length" if truncated else "stop",
        usage=Usage(prompt_tokens=300, completion_tokens=tokens, total_tokens=tokens + 300),
        latency_s=latency, started_at=started, finished_at=started + timedelta(seconds=latency),
    )
    score = ScoreRecord(**{**ScoreRecord.fields_from(record), **score_fields})
    return record, score


def add_adaptive_state(run: RunDir, *, block: int = 10, margin: float = 0.1) -> None:
    """Make a synthetic run an adaptive one: adaptive.json as the run would have written it,
    from the real replay (walk_benchmark) over the run's own scores."""
    from qatcmp.adaptive import ADAPTIVE_FILE, AdaptiveSettings, build_state, walk_benchmark
    from qatcmp.rundir import write_json_atomic

    spec = run.read_manifest().spec
    models = list(spec.models)
    correct = {(s.model, s.benchmark, s.item_id, s.sample): s.correct for s in run.read_scores()}
    settings = AdaptiveSettings(block=block, margin=margin)
    walks = [walk_benchmark(sel.name, sel.item_ids, correct, models=models, samples=spec.samples, settings=settings)
             for sel in spec.benchmarks]
    state = build_state(walks, settings=settings, models=models, samples=spec.samples)
    write_json_atomic(run.path / ADAPTIVE_FILE, state.model_dump(mode="json"))
