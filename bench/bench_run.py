"""How close does `qatcmp run` get to the server's own limit?

Starts the demo backend (mlx-lm's real server over the tiny models), then sends the same
MMLU-Pro requests twice: once with a bare httpx loop at the same concurrency (the server's
limit as far as a client can see it), once through qatcmp's runner (retries, streaming parser,
fsynced transcript records, progress). Prints both rates and their ratio.

    .venv/bin/python bench/bench_run.py [--n 60] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx

from qatcmp.benchmarks import mmlu_pro
from qatcmp.commands.demo import demo_config
from qatcmp.config import parse_config
from qatcmp.demo.server import MlxLmServer
from qatcmp.demo.tinymodel import build_demo_models
from qatcmp.progress import RunProgress
from qatcmp.request import build_request, request_template
from qatcmp.runner import Runner
from qatcmp.selection import plan_benchmarks


async def bare_client(base_url: str, bodies: list[dict], concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url + "/", timeout=120) as http:
        async def one(body: dict) -> None:
            async with limit:
                async with http.stream("POST", "chat/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qatcmp-bench-run-"))
    models = build_demo_models(work / "models", ["4bit"])
    with MlxLmServer(models, workdir=work / "server") as server:
        config = parse_config(demo_config(server.base_url, server.model_ids).replace("max_concurrency: 4", f"max_concurrency: {args.concurrency}"))
        plans = plan_benchmarks({"mmlu_pro": args.n}, {"mmlu_pro": "builtin"}, seed=0)
        template = request_template(config, config.models[0], 0)
        bodies = [build_request(template, mmlu_pro.build_messages(item), "mmlu_pro", item.item_id, 0) for item in plans[0].items]
        asyncio.run(bare_client(server.base_url, bodies[:4], args.concurrency))  # warm-up
        # Alternate the two clients, so neither always meets a warmer server.
        bare = qat = 0.0
        for round_ in range(2):
            bare += asyncio.run(bare_client(server.base_url, bodies, args.concurrency))
            runner = Runner(config, config.models, plans, run_dir=work / f"run{round_}", seed=0, samples=1,
                            progress=RunProgress(live=False, stream=open(os.devnull, "w")))
            started = time.perf_counter()
            summary = asyncio.run(runner.execute())
            qat += time.perf_counter() - started
            assert summary.sent == args.n and summary.errors == 0
        args.n *= 2
    print(f"requests: {args.n} MMLU-Pro prompts, concurrency {args.concurrency}, mlx-lm server, tiny 4-bit model")
    print(f"  bare httpx (server limit): {args.n / bare:6.2f} req/s  ({bare:.1f} s)")
    print(f"  qatcmp run               : {args.n / qat:6.2f} req/s  ({qat:.1f} s, incl. manifest, server introspection, fsync per record)")
    print(f"  ratio qatcmp / limit     : {bare / qat:6.2f}")


if __name__ == "__main__":
    main()
