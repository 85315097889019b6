"""How long a comparison takes under qatcmp's scheduler, against a lower bound and against
the variant-by-variant order - a pure simulation, no network.

The simulated server batches continuously: every request in flight advances at a per-request
rate that falls with the number in flight (aggregate throughput grows, then saturates);
a request's work is its prompt (at the prefill rate) plus its answer (at the decode rate).
Answer lengths are heavy-tailed like thinking answers (a few hundred to 32k tokens), and a
question's length is shared by the variants (hard questions are long for every quantization)
with per-variant noise. Loading a model costs ``--switch`` seconds; a server that holds one
model at a time loads only when idle, one that holds two loads while the other's answers finish.

The schedulers are the runner's own classes, driven through the ``Scheduler`` protocol from a
discrete-event loop: ``ModelByModelScheduler`` (today: a whole variant is one batch, the next
is asked for when it has finished) and ``ReplicaScheduler`` (pull a request per free slot).

The runner's scheduler times the requests in flight (a request running long is a long answer);
here it reads the simulation's clock, and each record carries the simulated latency.
``longest/bound``: the longest answer's time in a full server, as a share of the bound - when
it is large, a variant that can only start late (after another on the same one-model server)
ends with that answer alone, whatever the order.

    python bench/bench_schedule.py            # the table
    python bench/bench_schedule.py --quick    # fewer questions
    python bench/bench_schedule.py --blocks 25  # an adaptive run (blocks, no early stop)
    python bench/bench_schedule.py --quick --seeds 20 --servers 3  # one row, more seeds
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qatcmp.records import TranscriptRecord, Usage, utcnow  # noqa: E402
from qatcmp.replicas import BlockScheduler, ReplicaScheduler  # noqa: E402
from qatcmp.scheduler import ModelByModelScheduler, Step, WorkUnit  # noqa: E402


@dataclass(frozen=True)
class ServerModel:
    slots: int = 8
    decode_tps: float = 30.0  # one request alone
    prefill_tps: float = 600.0
    slowdown: float = 0.12  # per-request rate = alone / (1 + slowdown * (n - 1))
    switch_s: float = 25.0
    resident: int = 1

    def rate(self, n: int) -> float:
        """Decode-token equivalents per second for each of n requests in flight."""
        return self.decode_tps / (1.0 + self.slowdown * (max(n, 1) - 1))

    def work(self, prompt: int, answer: int) -> float:
        return answer + prompt * self.decode_tps / self.prefill_tps


@dataclass
class _Server:
    name: str
    loaded: list[str] = field(default_factory=list)  # most recent last
    loading: tuple[str, float] | None = None  # (model, ready at)
    waiting: list[WorkUnit] = field(default_factory=list)  # handed out, not started
    running: dict[tuple, tuple[WorkUnit, float, float]] = field(default_factory=dict)  # key -> (unit, work left, started)
    batch_mode: bool = False
    exhausted: bool = False
    switches: int = 0


MAX_TOKENS = 32768  # the requests' max_tokens: no answer is longer


def make_workload(variants: int, questions: int, seed: int) -> dict[tuple[str, str], tuple[int, int]]:
    rng = random.Random(seed)
    lengths = {}
    for q in range(questions):
        base = rng.lognormvariate(math.log(1800), 1.0)  # heavy tail: median 1.8k, p99 ~18k
        prompt = int(rng.uniform(100, 1500))
        for v in range(variants):
            answer = int(min(MAX_TOKENS, max(200, base * rng.lognormvariate(0, 0.3))))
            lengths[(f"v{v}", f"q{q}")] = (prompt, answer)
    return lengths


def _record(unit: WorkUnit, answer: int, latency: float) -> TranscriptRecord:
    # What the runner records too: the answer's length and how long it took.
    now = utcnow()
    return TranscriptRecord(model=unit.model, benchmark=unit.benchmark, item_id=unit.item_id, sample=unit.sample,
                            server=unit.server, messages=[{"role": "user", "content": "q"}], request={},
                            content="a", usage=Usage(completion_tokens=answer), latency_s=latency,
                            started_at=now, finished_at=now)


class SimClock:
    """The simulation's time, for the scheduler (it times requests still in flight)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(scheduler, lengths, model: ServerModel, clock: SimClock | None = None) -> tuple[float, int]:
    """Run the scheduler to the end; return (makespan s, model loads)."""
    batch_mode = not getattr(scheduler, "pulls", False)
    servers = {name: _Server(name, batch_mode=batch_mode) for name in scheduler.servers()}
    clock = clock or SimClock()
    now = clock.now = 0.0
    answered = 0
    while True:
        for server in servers.values():
            _refill(server, scheduler, model, now)
        active = [s for s in servers.values() if s.running or s.loading or s.waiting]
        if not active:
            break
        # Next event: a load finishing or a request finishing, whichever is first.
        dt = math.inf
        for s in active:
            if s.loading:
                dt = min(dt, s.loading[1] - now)
            if s.running:
                rate = model.rate(len(s.running))
                dt = min(dt, min(left for _, left, _ in s.running.values()) / rate)
        if dt is math.inf:
            raise RuntimeError("simulation stalled")
        now += max(dt, 0.0)
        clock.now = now
        for s in active:
            if s.loading and s.loading[1] <= now + 1e-9:
                s.loaded.append(s.loading[0])
                s.loading = None
            if s.running:
                rate = model.rate(len(s.running))
                for key, (unit, left, started) in list(s.running.items()):
                    left -= rate * dt
                    if left <= 1e-6:
                        del s.running[key]
                        answered += 1
                        scheduler.record(unit, _record(unit, lengths[(unit.model, unit.item_id)][1], now - started))
                    else:
                        s.running[key] = (unit, left, started)
    if answered != len(lengths):  # a scheduler that stops early would look fast
        raise RuntimeError(f"simulation ended with {len(lengths) - answered} of {len(lengths)} requests unanswered")
    return now, sum(s.switches for s in servers.values())


def _refill(server: _Server, scheduler, model: ServerModel, now: float) -> None:
    while True:
        _start_waiting(server, model, now)
        if server.exhausted or len(server.running) + len(server.waiting) >= model.slots:
            return
        if server.batch_mode and (server.running or server.waiting):
            return  # today's runner: the next batch once the whole batch has finished
        batch = scheduler.next_batch(server.name)
        if batch is None:
            server.exhausted = True
            return
        if not batch:
            return
        server.waiting.extend(batch)


def _start_waiting(server: _Server, model: ServerModel, now: float) -> None:
    while server.waiting and len(server.running) < model.slots and server.loading is None:
        unit = server.waiting[0]
        if unit.model not in server.loaded:
            in_use = {u.model for u, _, _ in server.running.values()}
            if len(server.loaded) >= model.resident:
                evictable = [m for m in server.loaded if m not in in_use]
                if not evictable:
                    return  # wait for the loaded models' answers to finish
                server.loaded.remove(evictable[0])
            server.loading = (unit.model, now + model.switch_s)
            server.switches += 1
            return
        server.waiting.pop(0)
        prompt, answer = LENGTHS[(unit.model, unit.item_id)]
        server.running[unit.key] = (unit, model.work(prompt, answer), now)


LENGTHS: dict = {}


def lower_bound(lengths, variants: int, n_servers: int, model: ServerModel) -> float:
    """A makespan no schedule can beat: the largest of

    - total work / total capacity plus the loads that cannot be avoided;
    - the longest single request running alone after one load;
    - on one-model servers, the tail bound of ``_one_model_tail_bound`` (two variants' longest
      answers that must share a server, one after the other)."""
    total = sum(model.work(p, a) for p, a in lengths.values())
    capacity = n_servers * model.slots * model.rate(model.slots)
    loads = max(variants, n_servers) if model.resident == 1 else n_servers  # blocking loads
    by_capacity = total / capacity + loads * model.switch_s / n_servers
    longest = model.switch_s + max(model.work(p, a) for p, a in lengths.values()) / model.rate(1)
    bound = max(by_capacity, longest)
    if model.resident == 1:
        bound = max(bound, _one_model_tail_bound(lengths, n_servers, model, total))
    return bound


def _one_model_tail_bound(lengths, n_servers: int, model: ServerModel, total: float) -> float:
    """With more variants than one-model servers, some server runs the longest answers of two
    variants, one after the other; run fast enough to fit, they leave that server's other slots
    partly idle. A bound valid for any schedule:

    1. On a server that holds one model, requests of different variants never overlap: it
       loads a model only with nothing in flight, and nothing runs during the load. So if the
       longest requests (work w_v) of the variants in a set A_k run on server k, they run in
       disjoint intervals I_v, and sum |I_v| <= M - l_k * load, with l_k >= max(1, |A_k|)
       loads on server k (a server that is never used may be counted as loading once: it does
       no work, which is within C * (M - load) for any M >= load).
    2. With n requests in flight each advances at r(n) = d / (1 + s (n - 1)), so
       n = 1 + (d / r - 1) / s and the server's throughput is f = n r = d / s - (1 / s - 1) r:
       linear in r. Over I_v the longest request advances by w_v = integral of r, so the
       server does integral of f = (d / s) |I_v| - (1 / s - 1) w_v there, which falls short of
       full capacity C = f(slots) by exactly (1 / s - 1) (w_v - r(slots) |I_v|) (>= 0, as
       r >= r(slots)). Summed over A_k: a shortfall of at least
       (1 / s - 1) * max(0, sum w_v - r(slots) (M - l_k load)).
    3. All work is done by the servers outside their loads and shortfalls:
       S C M >= total + C * load * sum l_k + sum of the shortfalls, and M >= l_k load +
       sum w_v / r(1) on every server.
    Whichever server each variant's longest request runs on, M satisfies both, so the smallest
    M that satisfies them for some assignment (all S^V are tried) is a lower bound. The
    left side grows with M and the shortfalls shrink, so that M is found by bisection."""
    s, d = model.slowdown, model.decode_tps
    if not 0 < s < 1:
        return 0.0  # throughput does not grow with concurrency as assumed here
    longest: dict[str, float] = {}
    for (variant, _), (p, a) in lengths.items():
        longest[variant] = max(longest.get(variant, 0.0), model.work(p, a))
    works = list(longest.values())
    if len(works) <= n_servers:
        return 0.0  # each variant's longest may have a server of its own: nothing to add
    r_full, capacity = model.rate(model.slots), model.slots * model.rate(model.slots)
    k = 1 / s - 1

    def feasible(makespan: float, groups: list[list[float]]) -> bool:
        need = total
        for group in groups:
            loads = max(1, len(group)) * model.switch_s
            if makespan < loads + sum(group) / model.rate(1):
                return False
            need += capacity * loads + k * max(0.0, sum(group) - r_full * (makespan - loads))
        return n_servers * capacity * makespan >= need

    best = math.inf
    for assignment in itertools.product(range(n_servers), repeat=len(works)):
        groups = [[w for w, at in zip(works, assignment) if at == server] for server in range(n_servers)]
        low, high = 0.0, 1.0
        while not feasible(high, groups):
            high *= 2
        if feasible(low, groups):
            high = low
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (low, middle) if feasible(middle, groups) else (middle, high)
        best = min(best, high)
    return best


def units_for(lengths, variants: int, servers: list[str]) -> list[WorkUnit]:
    # Today's placement: each variant on one server, round robin.
    return [WorkUnit(m, servers[int(m[1:]) % len(servers)], "mmlu_pro", q, 0) for (m, q) in lengths]


def block_steps(variants: int, questions: int, block: int, servers: list[str]):
    """An adaptive run's steps with nothing decided early (every block to the budget): block k
    of every variant, in the order A B C, then C B A (what AdaptiveController plans)."""
    order = [f"v{v}" for v in range(variants)]
    starts = iter(range(0, questions, block))

    def next_step(finished):
        start = next(starts, None)
        if start is None:
            return None
        k = start // block
        units = [WorkUnit(m, servers[int(m[1:]) % len(servers)], "mmlu_pro", f"q{q}", 0)
                 for m in order for q in range(start, min(start + block, questions))]
        return Step(units=units, model_order=order if k % 2 == 0 else order[::-1])

    return next_step


def run_case(variants: int, n_servers: int, questions: int, seed: int, model: ServerModel,
             block: int | None = None, early_leave: bool = True) -> tuple[float, ...]:
    global LENGTHS
    LENGTHS = lengths = make_workload(variants, questions, seed)
    servers = [f"s{i}" for i in range(n_servers)]
    order = [f"v{v}" for v in range(variants)]
    today, today_loads = simulate(ModelByModelScheduler(units_for(lengths, variants, servers), order), lengths, model)
    replicas = {m: servers for m in order}  # every variant may run on every server
    clock = SimClock()
    resident = {s: model.resident for s in servers}
    if block is None:
        scheduler = ReplicaScheduler(units_for(lengths, variants, servers), order, replicas=replicas,
                                     resident=resident, early_leave=early_leave, clock=clock)
    else:  # an adaptive run: the same engine gated in blocks
        scheduler = BlockScheduler(block_steps(variants, questions, block, servers), order, replicas=replicas,
                                   resident=resident, clock=clock)
    ours, our_loads = simulate(scheduler, lengths, model, clock)
    # How long the longest answer takes in a full server: the tail no online schedule can
    # shorten much once it starts late (it is not in the bound, which assumes perfect packing).
    longest_full = max(model.work(p, a) for p, a in lengths.values()) / model.rate(model.slots)
    return lower_bound(lengths, variants, n_servers, model), today, ours, today_loads, our_loads, longest_full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 questions, 2 seeds")
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--switch", type=float, default=25.0, help="seconds to load a model")
    parser.add_argument("--blocks", type=int, default=None, metavar="B",
                        help="qatcmp as an adaptive run: blocks of B questions, every variant to the budget")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="mean over seeds 1..N (default: 2 with --quick, else 3)")
    parser.add_argument("--servers", default="1,2,3,4", help="server counts to run, e.g. 3")
    parser.add_argument("--no-early-leave", action="store_true",
                        help="qatcmp without its tail measures (qatcmp/replica_tail.py): leaving a variant "
                             "early for one nobody has started, holding back beside a request that ends the run")
    args = parser.parse_args(argv)
    questions, seeds = (100, (1, 2)) if args.quick else (300, (1, 2, 3))
    if args.seeds is not None:
        seeds = tuple(range(1, max(1, args.seeds) + 1))
    server_counts = [int(n) for n in args.servers.split(",") if n.strip()]
    mode = f"adaptive, blocks of {args.blocks}" if args.blocks else "fixed run"
    print(f"{args.variants} variants x {questions} questions ({mode}), {args.slots} slots/server, load {args.switch:.0f} s, "
          f"answers 200..32768 tokens (lognormal, median 1.8k); mean over seeds {list(seeds)}")
    print(f"{'servers':>7} {'resident':>8} {'bound s':>9} {'today s':>9} {'qatcmp s':>9} {'today/bound':>11} "
          f"{'qatcmp/bound':>12} {'loads today/qatcmp':>18} {'longest/bound':>13}")
    for resident in (1, 2):
        for n_servers in server_counts:
            model = ServerModel(slots=args.slots, switch_s=args.switch, resident=resident)
            runs = [run_case(args.variants, n_servers, questions, seed, model, args.blocks, not args.no_early_leave)
                    for seed in seeds]
            bound, today, ours = (sum(r[i] for r in runs) / len(runs) for i in range(3))
            loads_today = sum(r[3] for r in runs) / len(runs)
            loads_ours = sum(r[4] for r in runs) / len(runs)
            longest = sum(r[5] for r in runs) / len(runs)
            print(f"{n_servers:>7} {resident:>8} {bound:>9.0f} {today:>9.0f} {ours:>9.0f} {today / bound:>11.2f} "
                  f"{ours / bound:>12.2f} {loads_today:>8.1f}/{loads_ours:<9.1f} {longest / bound:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
