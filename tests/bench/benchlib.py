"""What every benchmark of `make bench` shares: the stack it runs on, the machine it ran on,
percentiles, /proc readings, tables, and the result files.

`local_stack()` yields the env of the stack to measure: the running one named by
VOICEFLEET_STACK_ENV=<env file>, or a private one started here (`voicefleet up --detach` in
$VOICEFLEET_HOME/bench-stacks/stack-*) and stopped at the end; its folder is removed after a
success and kept (logs) after a failure. `write_results` writes bench/results/latest.json
and a dated copy bench/results/<UTC timestamp>.json. Benchmarks report; nothing here
asserts a timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(REPO / "operator"),
    str(REPO / "worker"),
    str(REPO / "tests" / "integration"),
    str(REPO / "tests" / "integration" / "operator"),
    str(REPO / "tests" / "integration" / "worker"),
]

from voicefleet_stack.stack import read_env_file, voicefleet_home  # noqa: E402

RESULTS = REPO / "bench" / "results"


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# -- numbers ---------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def latency_figures(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p99, max and count of a sample of durations in seconds, as milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(values[-1]),
    }


def growth(values: Sequence[float], window: int = 10) -> float | None:
    """Median of the last `window` values minus the median of the first `window`."""
    if len(values) < 2:
        return None
    window = max(1, min(window, len(values) // 2))
    return round(statistics.median(values[-window:]) - statistics.median(values[:window]), 2)


# -- processes ---------------------------------------------------------------------------------
def read_rss(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (peak) and RssAnon of a process, in MiB.

    VmRSS includes the pages of shared libraries and models mapped from files (RssFile), whose
    count follows the page cache (a freshly installed virtualenv maps more of them); RssAnon,
    the process's own heap and anonymous memory, is what a leak grows."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            fields[key] = int(value.split()[0]) / 1024  # kB → MiB
    return {
        "rss_mb": round(fields["VmRSS"], 1),
        "rss_peak_mb": round(fields["VmHWM"], 1),
        "rss_anon_mb": round(fields["RssAnon"], 1),
    }


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the machine -------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
    }


# -- output ------------------------------------------------------------------------------------
def format_table(title: str, rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first row is the header."""
    columns = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return f"{title}\n" + "\n".join(line.rstrip() for line in lines)


def fmt(value: Any, digits: int = 0) -> str:
    """A figure for a table cell: '-' when missing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def write_results(results: dict[str, Any], stamp: str | None = None) -> Path:
    """bench/results/latest.json and the dated copy (of `stamp`, default now); returns the
    dated path. Written again with the same stamp, the dated copy is replaced."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2) + "\n"
    dated = RESULTS / f"{stamp}.json"
    dated.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return dated


# -- the stack ---------------------------------------------------------------------------------
def voicefleet(stack_dir: Path, *args: str, timeout: float) -> int:
    env = dict(os.environ, VOICEFLEET_STACK_DIR=str(stack_dir))
    return subprocess.run(
        [sys.executable, "-m", "voicefleet_stack", *args], env=env, timeout=timeout, check=False
    ).returncode


@contextlib.contextmanager
def local_stack() -> Iterator[dict[str, str]]:
    """The env of the stack to measure: VOICEFLEET_STACK_ENV's, or a private one."""
    given = os.environ.get("VOICEFLEET_STACK_ENV")
    if given:
        log(f"using the running stack of {given}")
        yield read_env_file(Path(given))
        return
    root = voicefleet_home() / "bench-stacks"
    root.mkdir(parents=True, exist_ok=True)
    stack_dir = Path(tempfile.mkdtemp(prefix="stack-", dir=root))
    ok = False
    try:
        log(f"starting a private stack in {stack_dir}")
        if voicefleet(stack_dir, "up", "--detach", timeout=900) != 0:
            raise SystemExit(f"`voicefleet up --detach` failed; logs in {stack_dir}/logs")
        yield read_env_file(stack_dir / "env")
        ok = True
    finally:
        log("stopping the private stack")
        voicefleet(stack_dir, "down", timeout=180)
        if ok:
            shutil.rmtree(stack_dir, ignore_errors=True)
        else:
            log(f"kept {stack_dir} (logs) for a look")


def stack_dir_of(env: dict[str, str]) -> Path:
    """The stack's folder (the kubeconfig lives in it; logs/ too)."""
    return Path(env["KUBECONFIG"]).parent


def stack_pids(env: dict[str, str]) -> dict[str, int]:
    """The stack's servers that run on this machine, by name (from its pids.json)."""
    path = stack_dir_of(env) / "pids.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {
        str(e["name"]): int(e["pid"])
        for e in entries
        if e.get("pid") and Path(f"/proc/{e['pid']}").exists()
    }
