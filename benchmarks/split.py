"""Where the library's extra CPU over the hand-written view goes: the event loop's thread or the others.

``python benchmarks/split.py --n 300 --runs 5``: one uvicorn worker (PostgreSQL, persistence and budgets
on, as figure 5), N streams of 50 chunks 50 ms apart, the hand-written view and the library's
alternately, ``runs`` times each. For each run it reads the worker's CPU from ``/proc`` before and after:
the whole process (``/proc/<pid>/stat``, which keeps the CPU of threads that have ended: Django's
per-request threads and the ``sync_to_async`` hops) and the event loop's thread alone
(``/proc/<pid>/task/<pid>/stat``), and prints each run and the medians, with the wall time and the
99th percentile of the time to first byte. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """``utime + stime`` of a ``/proc`` stat file (fields 14 and 15, after the command's parentheses)."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {"handwritten": [], "library": []}
    paths = {"handwritten": run.HAND_PATH, "library": run.LIB_PATH}
    with run.start_emulator() as emu, run.Database("postgres") as db, \
            run.start_uvicorn(emu, persist=True, budgets=True, db=db) as uv:
        pid = uv.pid
        for _ in range(args.runs):
            for name, path in paths.items():
                process, loop = cpu_seconds(f"/proc/{pid}/stat"), cpu_seconds(f"/proc/{pid}/task/{pid}/stat")
                out = run.loadgen(uv.port, "proxy", args.n, 50, 50, users=run.Database.USERS, path=path)
                process = (cpu_seconds(f"/proc/{pid}/stat") - process) * 1000 / args.n
                loop = (cpu_seconds(f"/proc/{pid}/task/{pid}/stat") - loop) * 1000 / args.n
                row = {"cpu_ms": round(process, 2), "loop_thread_ms": round(loop, 2),
                       "other_threads_ms": round(process - loop, 2), "wall_s": round(out["wall_s"], 2),
                       "ttfb_p99_ms": round(out["ttfb_ms"]["99"]), "errors": out["errors"]}
                rows[name].append(row)
                print(name, json.dumps(row), flush=True)
    print(f"\nN = {args.n}, {args.runs} runs each, medians (CPU per stream):")
    for name, runs in rows.items():
        summary = {key: median(r[key] for r in runs) for key in runs[0]}
        print(f"  {name:12} " + "  ".join(f"{key} {value:g}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
