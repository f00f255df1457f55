"""`make bench`: run the benchmarks on one local stack, print their tables, and write every
figure to bench/results/latest.json and a dated copy (plus the connect latency plot,
bench/results/<stamp>-connect.png and latest-connect.png).

    python tests/bench/run.py                          # all: connect, reconnect, memory, reconcile
    python tests/bench/run.py --only reconcile
    python tests/bench/run.py --only connect,reconnect,memory

`connect`, `reconnect` and `memory` are measured together (bench_connect.py: the same
cycles give all three); `reconcile` is bench_reconcile.py, and gives `memory`'s
`operator_rss_mb_at_1000`. The stack is the one named by VOICEFLEET_STACK_ENV=<env file>, or
a private one started and stopped here (benchlib.local_stack). Each benchmark's own
variables: tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import RESULTS, local_stack, log, machine_info, write_results

BENCHMARKS = ("connect", "reconnect", "memory", "reconcile")
# connect runs first: reconcile's own operator pauses the stack's operator (kopf peering)
# while it runs, and the connect benchmark needs the stack's operator and its real workers.
MODULES = {"connect": "bench_connect", "reconnect": "bench_connect", "memory": "bench_connect"}


def selected(only: str) -> list[str]:
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {BENCHMARKS}")
    modules: list[str] = []
    for name in BENCHMARKS:  # the order above, whatever the order asked
        module = MODULES.get(name, f"bench_{name}")
        if name in names and module not in modules:
            modules.append(module)
    return modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    args = parser.parse_args(argv)
    modules = [__import__(name) for name in selected(args.only)]
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    work = Path(tempfile.mkdtemp(prefix="voicefleet-bench-"))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    try:
        with local_stack() as env:
            for module in modules:
                log(f"-- {module.__name__}")
                figures = module.run(env, work)
                if "kubernetes" in figures:
                    results["machine"]["kubernetes"] = figures.pop("kubernetes")
                results.update(figures)
                # After each benchmark: a later one that fails does not take these figures along.
                link_operator_rss(results)
                write_results(results, stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "connect" in results:
        add_plot(results, stamp)
    dated = write_results(results, stamp)
    print()
    for module in modules:
        print(module.tables(results) if hasattr(module, "tables") else "")
        print()
    log(f"wrote {RESULTS / 'latest.json'} and {dated}")
    return 0


def add_plot(results: dict[str, Any], stamp: str) -> None:
    """The connect latency plot next to the results; a plot that fails is only reported."""
    import bench_connect

    try:
        png = bench_connect.plot(results, RESULTS / f"{stamp}-connect.png")
    except Exception as exc:
        log(f"plot failed: {exc!r}")
        return
    if png is not None:
        shutil.copyfile(png, RESULTS / "latest-connect.png")
        results["connect"]["plot"] = str(png.relative_to(RESULTS.parents[1]))


def link_operator_rss(results: dict[str, Any]) -> None:
    """memory.operator_rss_mb_at_1000 comes from the reconcile benchmark (N = 1000)."""
    rec = results.get("reconcile")
    memory = results.setdefault("memory", {})
    if rec is None:
        memory["operator_rss_mb_at_1000"] = None
        memory["operator_rss_reason"] = "the reconcile benchmark did not run (--only)"
    elif rec["sessions"] == 1000:
        memory["operator_rss_mb_at_1000"] = rec["operator_rss_mb"]
    else:
        memory["operator_rss_mb_at_1000"] = None
        memory["operator_rss_reason"] = (
            f"reconcile ran with {rec['sessions']} sessions: {rec['operator_rss_mb']} MB"
        )


if __name__ == "__main__":
    sys.exit(main())
