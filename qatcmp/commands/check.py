"""qatcmp check: is every configured variant reachable, listed, and thinking as asked?"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qatcmp.client import ChatClient, RequestFailed
from qatcmp.config import Config, ModelConfig, load_config
from qatcmp.preflight import capacity_warning, describe_server
from qatcmp.redact import mask
from qatcmp.replica_check import replica_differences
from qatcmp.request import build_request, request_template

CHECK_PROMPT = "What is 17 + 25? Think briefly, then answer with just the number."


@dataclass
class CheckResult:
    model: str
    server: str
    reachable: str = "-"
    listed: str = "-"
    reasoning: str = "-"
    finish: str = "-"
    latency: str = "-"
    answer: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check each variant: reachable, listed, a short thinking request",
        description="For each variant in servers.yaml: is the server reachable, is the model "
        "listed, does a short request with its settings come back, with reasoning separated "
        "when thinking is on? Exits non-zero on any problem.",
    )
    p.add_argument("--config", default="servers.yaml")
    p.add_argument("--models", help="comma-separated variant names (default: all)")
    p.add_argument("--max-tokens", type=int, default=1024, help="budget of the test request (default 1024)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = [n.strip() for n in args.models.split(",")] if args.models else None
    models = config.select(names)
    config.check_api_keys(models)
    results, warnings = asyncio.run(check_all(config, models, args.max_tokens))
    print_table(results, warnings)
    return 1 if any(r.problems for r in results) else 0


async def check_all(config: Config, models: list[ModelConfig], max_tokens: int) -> tuple[list[CheckResult], list[str]]:
    clients = {name: ChatClient(config.server(name), api_key=config.server(name).api_key())
               for name in dict.fromkeys(s for m in models for s in m.servers)}
    try:
        warnings = []
        infos = {}
        for name, client in clients.items():
            info = infos[name] = await describe_server(client)
            if (warning := capacity_warning(name, config.server(name).max_concurrency, info)) is not None:
                warnings.append(warning)
        for model in models:
            if model.replicas:
                warnings += replica_differences(model.name, model.model, {s: infos[s] for s in model.servers})
        # Variants sharing a server are checked one after another (a server may swap models);
        # a variant on several servers is checked on each.
        results = []
        for model in models:
            for server in model.servers:
                results.append(await check_model(config, model, clients[server], max_tokens, server=server))
        return results, warnings
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))


async def check_model(config: Config, model: ModelConfig, client: ChatClient, max_tokens: int,
                      server: str | None = None) -> CheckResult:
    result = CheckResult(model=model.name, server=server or model.server)
    try:
        listed = await client.list_models()
        result.reachable = "yes"
        result.listed = "yes" if model.model in listed else "no"
        if model.model not in listed:
            result.notes.append(f"'{model.model}' not in GET /models (may load on demand)")
    except RequestFailed as exc:
        if exc.kind in ("connection", "timeout"):
            result.reachable = "no"
            result.problems.append(exc.message)
            return result
        result.reachable = "yes"
        result.listed = "?"
        result.notes.append(exc.message)
    template = request_template(config, model, 0)
    template["max_tokens"] = min(max_tokens, template.get("max_tokens") or max_tokens)
    body = build_request(template, [{"role": "user", "content": CHECK_PROMPT}], "check", "0", 0)
    completion = await client.complete(body, thinking=model.thinking)
    if completion.error:
        result.problems.append(completion.error)
        return result
    result.finish = completion.finish_reason or "-"
    result.latency = f"{completion.latency_s:.1f}s" + (f" (first token {completion.ttft_s:.1f}s)" if completion.ttft_s else "")
    result.answer = (completion.content or "").strip().replace("\n", " ")[:40]
    if completion.reasoning:
        result.reasoning = f"yes ({completion.reasoning_source})"
    else:
        result.reasoning = "no"
        if model.thinking:
            result.problems.append("thinking is on but no reasoning came back: the switch may be ignored or misspelled")
    if completion.finish_reason == "length":
        result.notes.append(f"hit max_tokens={template['max_tokens']} (raise --max-tokens to see the answer)")
    return result


def print_table(results: list[CheckResult], warnings: list[str] = ()) -> None:
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=200)  # a log file: don't wrap the table
    table = Table(title="qatcmp check")
    for column in ("variant", "server", "reachable", "listed", "reasoning", "finish", "latency", "answer", "status"):
        table.add_column(column)
    for r in results:
        status = "[red]PROBLEM[/red]" if r.problems else "[green]ok[/green]"
        cells = [mask(c) for c in (r.model, r.server, r.reachable, r.listed, r.reasoning, r.finish, r.latency, r.answer)]
        table.add_row(*(escape(c) for c in cells), status)
    console.print(table)
    for r in results:
        for problem in r.problems:
            console.print(f"[red]{escape(r.model)}[/red]: {escape(mask(problem))}", highlight=False)
        for note in r.notes:
            console.print(mask(f"{r.model}: {note}"), highlight=False, markup=False)
    for warning in warnings:
        console.print(mask(f"WARNING: {warning}"), highlight=False, markup=False)
