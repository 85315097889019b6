"""What does a too-high max_concurrency cost against a server that admits only a few
requests at once?

Starts the project's misbehaving test server in capacity mode: it answers at most
``--capacity`` requests at once (each taking ``--delay`` seconds of "generation" while it
streams), and refuses every other one the way oMLX 0.5.3 does with a full queue (HTTP 200, a
keepalive and a role chunk, then a "Scheduler waiting queue full" error event). Then runs the
same MMLU-Pro questions through qatcmp's runner at max_concurrency 1, at the server's limit,
and at 40, and prints wall time, retries, refusals and error records.
Target: at 40 nothing is lost and the wall time is at most 1.3x the best setting's.

    .venv/bin/python bench/bench_overload.py [--n 48] [--capacity 4] [--delay 0.4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from misbehaving_server import MisbehavingServer  # noqa: E402

from qatcmp.config import parse_config  # noqa: E402
from qatcmp.progress import RunProgress  # noqa: E402
from qatcmp.runner import Runner  # noqa: E402
from qatcmp.selection import plan_benchmarks  # noqa: E402

CONFIG = """
servers:
  - name: capped
    base_url: {url}
    max_concurrency: {concurrency}
    stream: {stream}
    timeouts: {{connect: 5, read: 60, total: 120}}
defaults:
  sampling: {{temperature: 0.0, max_tokens: 64}}
models:
  - name: m
    server: capped
    model: test-model
"""


def run_at(concurrency: int, n: int, capacity: int, delay: float, stream: bool, work: Path) -> dict:
    with MisbehavingServer(capacity=capacity, delay=delay) as server:
        config = parse_config(CONFIG.format(url=server.base_url, concurrency=concurrency, stream=str(stream).lower()))
        plans = plan_benchmarks({"mmlu_pro": n}, {"mmlu_pro": "builtin"}, seed=0)
        with open(os.devnull, "w") as devnull:
            runner = Runner(config, config.models, plans, run_dir=work / f"run-{concurrency}-{stream}", seed=0, samples=1,
                            progress=RunProgress(live=False, stream=devnull))
            started = time.perf_counter()
            summary = asyncio.run(runner.execute())
            wall = time.perf_counter() - started
        refused = sum(r["behaviour"] == "queue_full" for r in server.chat_requests())
    return {"concurrency": concurrency, "wall": wall, "answers": summary.answers, "errors": summary.errors,
            "retries": summary.retries, "refused": refused, "peak": server.peak_in_flight}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.4, help="seconds each admitted request takes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qatcmp-bench-overload-"))
    print(f"{args.n} MMLU-Pro requests; server admits {args.capacity} at once, {args.delay:g} s each, "
          "refuses the rest like oMLX's full queue")
    ok = True
    for stream in (True, False):
        rows = [run_at(c, args.n, args.capacity, args.delay, stream, work) for c in (1, args.capacity, 40)]
        best = min(r["wall"] for r in rows)
        print(f"\n  {'streaming' if stream else 'non-streaming'}:")
        print(f"  {'max_concurrency':>15} {'wall s':>7} {'x best':>6} {'answers':>7} {'errors':>6} {'retries':>7} {'refused':>7} {'peak':>4}")
        for r in rows:
            print(f"  {r['concurrency']:>15} {r['wall']:>7.2f} {r['wall'] / best:>6.2f} {r['answers']:>7} {r['errors']:>6} "
                  f"{r['retries']:>7} {r['refused']:>7} {r['peak']:>4}")
        at40 = rows[-1]
        verdict = at40["errors"] == 0 and at40["answers"] == args.n and at40["wall"] <= 1.3 * best
        ok = ok and verdict
        print(f"  at 40: {'PASS' if verdict else 'FAIL'} (lost {args.n - at40['answers']}, {at40['wall'] / best:.2f}x best; target 0 and <= 1.30x)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
