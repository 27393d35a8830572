"""Cluster benchmark: durasync nodes sharing one Redis vs the embedded store, one run.

Starts its own ``redis-server`` (AOF, ``appendfsync always``: an acknowledged append is fsync'd,
as with the embedded store) on a free loopback port, two ``durasync serve --redis`` nodes
and one ``durasync serve --data`` node (embedded store), then measures:

(a) appends/s, N concurrent writers (each on its own stream, one 200-byte JSON message per
    POST, closed loop: each waits for its ack) through:
    - the embedded store on one node,
    - Redis through one node,
    - Redis through two nodes (writers split between them);
    and prints the ratio Redis (1 node) / embedded (target >= 0.7x), and the CPU time per
    append of the durasync nodes (both Redis nodes in both Redis setups: the idle one still
    receives every Pub/Sub message) and of Redis: a figure that a busy machine moves much
    less than appends/s.
(b) cross-node live delivery latency: writers append through node A at a paced rate
    (default 5,000 and 1,000 appends/s in total, to one stream), while an SSE reader and a long-poll
    reader on node B tail that stream. Latency = time the reader parsed the message - time
    the writer created it (both ``time.time()`` on this machine), so it includes the append's
    own round trip to Redis. Target p99 < 10 ms. At every rate the same measurement also
    runs with the reader on node A itself and on the embedded store (one node): what this
    machine gives without the cross-node hop and without Redis.

Load comes from bench/streams.py's raw asyncio HTTP/1.1 client, in worker processes
(``--procs``), so neither httpx nor one Python process is the bottleneck. Everything runs on
one machine: client, nodes and Redis share its cores, so the figures are a lower bound of
what separate machines give. Never part of the test suite's pass/fail.

Usage::

    .venv/bin/python bench/cluster.py            # ~1.5 minutes (--reps 3: ~3.5)
    .venv/bin/python bench/cluster.py --quick    # smoke run, a few seconds per phase
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT / "tests")]

from _peers import ServerProc, _spawn, cpu_seconds, durasync_command, start_ours  # noqa: E402
from redisproc import RedisServer  # noqa: E402
from streams import (  # noqa: E402  (bench/streams.py: the shared load generator)
    JSON_HEADERS,
    Conn,
    _pct,
    _proc_appends,
    _proc_tail,
    _split,
    create_stream,
    message,
)


def _start_redis_node(redis_url: str) -> ServerProc:
    cmd = [*durasync_command(), "serve", "--host", "127.0.0.1", "--port", "0"]
    return _spawn("durasync-redis", [*cmd, "--redis", redis_url], cwd=ROOT, timeout=30.0)


# --------------------------------------------------------------------------
# (a) throughput
# --------------------------------------------------------------------------


async def _create_all(base: str, paths: list[str]) -> None:
    conn = Conn(base)
    for path in paths:
        await create_stream(conn, path)
    await conn.close()


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (Linux /proc; NaN elsewhere)."""
    try:
        return sum(cpu_seconds(pid) for pid in pids)
    except OSError:
        return math.nan


def appends(
    pool: Any,
    bases: list[str],
    writers: int,
    duration: float,
    procs: int,
    cpu_of: dict[str, list[int]] | None = None,
) -> dict[str, float]:
    """N closed-loop writers on their own streams, spread round-robin over ``bases``.

    ``cpu_of`` names process groups (e.g. ``{"node": [pid], "redis": [pid]}``) whose CPU
    time per append is reported as ``<name>_cpu_us``: a figure that a busy machine moves
    much less than appends/s (time spent waiting for a core does not count).
    """
    tag = uuid.uuid4().hex[:8]
    paths = [f"/v1/stream/bench-cluster-{tag}-{i}" for i in range(writers)]
    by_base: dict[str, list[str]] = {b: paths[i :: len(bases)] for i, b in enumerate(bases)}
    for base, mine in by_base.items():
        asyncio.run(_create_all(base, mine))
    start_at = time.time() + 0.5
    end_at = start_at + duration
    jobs = []
    per_base_procs = max(1, procs // len(bases))
    for base, mine in by_base.items():
        for chunk in _split(mine, per_base_procs):
            jobs.append((base, chunk, start_at, end_at))
    groups = cpu_of or {}
    before = {name: _cpu_seconds(pids) for name, pids in groups.items()}
    parts = pool.map(_proc_appends, jobs)
    used = {name: _cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    n = sum(p["n"] for p in parts)
    lat = [x for p in parts for x in p["lat"]]
    out = {
        "appends_per_s": n / duration,
        "errors": sum(p["errors"] for p in parts),
        "p50_ms": _pct(lat, 0.5) * 1000,
        "p99_ms": _pct(lat, 0.99) * 1000,
    }
    for name, seconds in used.items():
        # Includes the phase's stream creation and idle time: a small overestimate.
        out[f"{name}_cpu_us"] = seconds / n * 1e6 if n else math.nan
    return out


# --------------------------------------------------------------------------
# (b) cross-node live delivery
# --------------------------------------------------------------------------


async def _paced_writer(
    base: str, path: str, first_at: float, every: float, end_at: float
) -> dict[str, int]:
    """Append one timestamped message every ``every`` s from ``first_at`` (no catch-up bursts)."""
    conn = Conn(base)
    await conn._ensure()
    sent = errors = 0
    due = first_at
    while True:
        now = time.time()
        if due > now:
            await asyncio.sleep(due - now)
        if time.time() >= end_at:
            break
        status, _, _ = await conn.request("POST", path, message(sent), JSON_HEADERS)
        if 200 <= status < 300:
            sent += 1
        else:
            errors += 1
        # Late (slow ack): the next one goes now, not in a burst to make up for it.
        due = max(due + every, time.time())
    await conn.close()
    return {"sent": sent, "errors": errors}


def _proc_paced(args: tuple[str, str, int, float, float, float]) -> dict[str, int]:
    base, path, tasks, rate, start_at, end_at = args
    every = tasks / rate

    async def run() -> list[dict[str, int]]:
        return await asyncio.gather(
            *(
                _paced_writer(base, path, start_at + i * every / tasks, every, end_at)
                for i in range(tasks)
            )
        )

    parts = asyncio.run(run())
    return {"sent": sum(p["sent"] for p in parts), "errors": sum(p["errors"] for p in parts)}


def cross_node_latency(
    pool: Any, a: str, b: str, rate: float, duration: float, writer_procs: int, tasks: int
) -> dict[str, float]:
    path = f"/v1/stream/bench-cluster-live-{uuid.uuid4().hex[:8]}"

    async def create() -> str:
        conn = Conn(a)
        status, hdrs, body = await conn.request("PUT", path, b"", JSON_HEADERS)
        await conn.close()
        if status != 201:
            raise RuntimeError(f"PUT {path}: {status} {body[:200]!r}")
        return str(hdrs["stream-next-offset"])

    offset = asyncio.run(create())
    start_at = time.time() + 1.0  # readers connected and waiting before the first append
    end_at = start_at + duration
    tail = pool.apply_async(_proc_tail, ((b, path, offset, 1, 1, end_at + 1.0),))
    per_proc = rate / writer_procs
    writers = pool.map(
        _proc_paced,
        [(a, path, tasks, per_proc, start_at, end_at) for _ in range(writer_procs)],
    )
    readers = tail.get(timeout=duration + 30)
    sent = sum(w["sent"] for w in writers)
    out: dict[str, float] = {
        "target_rate": rate,
        "achieved_rate": sent / duration,
        "errors": sum(w["errors"] for w in writers) + readers["n_errors"],
    }
    for kind in ("sse", "lp"):
        lat = readers[kind]
        out[f"{kind}_n"] = len(lat)
        out[f"{kind}_p50_ms"] = _pct(lat, 0.5) * 1000
        out[f"{kind}_p99_ms"] = _pct(lat, 0.99) * 1000
    if readers["errors"]:
        print("reader errors:", readers["errors"], file=sys.stderr)
    return out


# --------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    out: dict[str, float] = {}
    for k in keys:
        values = sorted(r[k] for r in runs)
        out[k] = values[len(values) // 2]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="durasync-bench-cluster-") as tmp:
        redis = RedisServer(Path(tmp), appendfsync=args.appendfsync)
        nodes: list[ServerProc] = []
        try:
            nodes.append(start_ours(data_dir=Path(tmp) / "embedded", long_poll_timeout=30.0))
            nodes.append(_start_redis_node(redis.url))
            nodes.append(_start_redis_node(redis.url))
            embedded, a, b = (n.url for n in nodes)
            assert redis.proc is not None
            emb_pid, a_pid, b_pid = (n.proc.pid for n in nodes)
            with mp.get_context("fork").Pool(max(args.procs, args.writer_procs + 1)) as pool:
                rows: dict[str, list[dict[str, float]]] = {
                    "embedded, 1 node": [],
                    "redis, 1 node": [],
                    "redis, 2 nodes": [],
                }
                for rep in range(args.reps):
                    # Interleaved per repetition so drift in machine load hits all alike.
                    for name, bases, cpu_of in (
                        ("embedded, 1 node", [embedded], {"node": [emb_pid]}),
                        ("redis, 1 node", [a], {"node": [a_pid, b_pid], "redis": [redis.proc.pid]}),
                        (
                            "redis, 2 nodes",
                            [a, b],
                            {"node": [a_pid, b_pid], "redis": [redis.proc.pid]},
                        ),
                    ):
                        r = appends(pool, bases, args.writers, args.duration, args.procs, cpu_of)
                        rows[name].append(r)
                        print(
                            f"  rep {rep + 1} {name:17} {r['appends_per_s']:9,.0f} appends/s",
                            file=sys.stderr,
                        )
                results["appends"] = {k: _median(v) for k, v in rows.items()}
                results["cross_node"] = []
                for rate in args.rate:
                    lat_runs = []
                    for rep in range(args.reps):
                        r = cross_node_latency(
                            pool, a, b, rate, args.latency_duration, args.writer_procs, args.tasks
                        )
                        lat_runs.append(r)
                        print(
                            f"  rep {rep + 1} cross-node at {rate:,.0f}/s: "
                            f"{r['achieved_rate']:,.0f}/s, SSE p99 {r['sse_p99_ms']:.2f} ms, "
                            f"long-poll p99 {r['lp_p99_ms']:.2f} ms",
                            file=sys.stderr,
                        )
                    results["cross_node"].append({"route": "A -> B", **_median(lat_runs)})
                    # Baselines at the same rate: the reader on the writer's own node (Redis),
                    # and the embedded store on one node (what one machine gives at all).
                    for route, (w, r_) in (
                        ("A -> A", (a, a)),
                        ("embedded", (embedded, embedded)),
                    ):
                        runs = [
                            cross_node_latency(
                                pool,
                                w,
                                r_,
                                rate,
                                args.latency_duration,
                                args.writer_procs,
                                args.tasks,
                            )
                            for _ in range(args.reps)
                        ]
                        results["cross_node"].append({"route": route, **_median(runs)})
        finally:
            for node in nodes:
                node.stop()
            redis.stop()
    return results


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"durasync cluster benchmark  {time.strftime('%Y-%m-%d %H:%M')}  "
        f"python {platform.python_version()}  redis appendfsync {args.appendfsync}  "
        f"medians of {args.reps} run(s)"
    )
    print()
    print(
        f"(a) appends/s: {args.writers} writers, own streams, 200-byte JSON, closed loop, "
        f"{args.duration:g} s"
    )
    print(
        f"  {'store':20} {'appends/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'node CPU':>9} {'Redis CPU':>9}   (CPU: us per append)"
    )
    rows = results["appends"]
    for name, r in rows.items():
        redis_cpu = f"{r['redis_cpu_us']:9.0f}" if "redis_cpu_us" in r else f"{'-':>9}"
        print(
            f"  {name:20} {r['appends_per_s']:10,.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['errors']:7.0f} {r['node_cpu_us']:9.0f} {redis_cpu}"
        )
    emb = rows["embedded, 1 node"]["appends_per_s"]
    for name in ("redis, 1 node", "redis, 2 nodes"):
        ratio = rows[name]["appends_per_s"] / emb if emb else float("nan")
        verdict = "ok" if ratio >= 0.7 else "BELOW TARGET"
        print(f"  ratio {name} / embedded: {ratio:.2f}x  (target >= 0.7x: {verdict})")
    print()
    print(
        f"(b) live delivery: paced appends via node A, one SSE and one long-poll reader on "
        f"node B (A -> B); baselines: reader on A itself, and the embedded store on one node; "
        f"{args.latency_duration:g} s each"
    )
    print(
        f"  {'route':9} {'target/s':>9} {'achieved/s':>10} {'SSE p50':>8} {'SSE p99':>8} "
        f"{'LP p50':>8} {'LP p99':>8} {'errors':>7}   (ms)"
    )
    for c in results["cross_node"]:
        print(
            f"  {c['route']:9} {c['target_rate']:9,.0f} {c['achieved_rate']:10,.0f} "
            f"{c['sse_p50_ms']:8.2f} {c['sse_p99_ms']:8.2f} {c['lp_p50_ms']:8.2f} "
            f"{c['lp_p99_ms']:8.2f} {c['errors']:7.0f}"
        )
    first = results["cross_node"][0]
    worst = max(first["sse_p99_ms"], first["lp_p99_ms"])
    reached = first["achieved_rate"] >= 0.95 * first["target_rate"]
    print(
        f"  at {first['target_rate']:,.0f}/s: worst p99 {worst:.2f} ms "
        f"(target < 10 ms: {'ok' if worst < 10 and reached else 'NOT MET'}"
        f"{'' if reached else '; the rate itself was not reached'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="durasync cluster benchmark: Redis (1 and 2 nodes) vs embedded, "
        "cross-node live delivery latency"
    )
    parser.add_argument("--writers", type=int, default=16, help="concurrent writers in (a)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per (a) phase")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes in (a)")
    parser.add_argument(
        "--rate",
        type=lambda text: [float(x) for x in text.split(",") if x],
        default=[5000.0, 1000.0],
        help="appends/s in (b), comma-separated (default 5000,1000: the target, and a rate "
        "a shared 2-core machine sustains)",
    )
    parser.add_argument("--latency-duration", type=float, default=5.0, help="seconds of (b)")
    parser.add_argument("--writer-procs", type=int, default=2, help="writer processes in (b)")
    parser.add_argument("--tasks", type=int, default=16, help="writer connections per process (b)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions (medians reported)")
    parser.add_argument(
        "--appendfsync",
        default="always",
        choices=["always", "everysec", "no"],
        help="Redis AOF fsync policy (always: the durable setting; others for diagnosis only)",
    )
    parser.add_argument("--quick", action="store_true", help="2 s phases (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = args.latency_duration = 2.0
    results = run(args)
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
