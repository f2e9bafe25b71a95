"""When each stream of a burst starts and ends: why the library's N = 300 wall differs from the baseline's.

``python benchmarks/timeline.py --n 300 --runs 3``: one uvicorn worker (PostgreSQL, persistence and budgets
on, as figure 5), N streams of 50 chunks 50 ms apart started at once, the hand-written view and the
library's alternately. Both views are served through :func:`timed` (``/timed/hand/``, ``/timed/library/``),
which notes, in the worker, when the request reached the view, when the view returned its response (the
upstream call answered: the stream can start) and when the response's body ended (the row saved). The
script prints, per view, the medians over the runs of each timeline's percentiles, in milliseconds since
the burst's first request reached a view. Nothing here changes either view.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

#: (view, reached the view, response returned, body ended), in the worker's ``time.monotonic()``.
TIMES: list[tuple[str, float, float, float]] = []


def timed(name: str, view: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``view`` (async, or a class-based view that answers in async under ASGI), its times noted."""

    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        reached = time.monotonic()
        response = view(request, *args, **kwargs)
        if isinstance(response, Awaitable):
            response = await response
        returned = time.monotonic()
        if not getattr(response, "is_async", False):
            TIMES.append((name, reached, returned, time.monotonic()))
            return response
        body = response.streaming_content

        async def noted() -> AsyncIterator[bytes]:
            async for chunk in body:
                yield chunk
            TIMES.append((name, reached, returned, time.monotonic()))

        response.streaming_content = noted()
        return response

    return markcoroutinefunction(wrapper)


async def times_view(request: HttpRequest) -> HttpResponse:
    """``GET /timed/log/``: the times noted since the last call (and forgets them)."""
    out = list(TIMES)
    TIMES.clear()
    return JsonResponse({"times": out})


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {name: values[min(len(values) - 1, int(len(values) * p))] * 1000
            for name, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("max", 1.0))}


def summarise(rows: list[list[float]]) -> dict[str, dict[str, float]]:
    first = min(row[1] for row in rows)
    return {
        "reached the view": percentiles([row[1] - first for row in rows]),
        "stream can start (view returned)": percentiles([row[2] - first for row in rows]),
        "  reached -> returned": percentiles([row[2] - row[1] for row in rows]),
        "body ended (row saved)": percentiles([row[3] - first for row in rows]),
        "  returned -> ended": percentiles([row[3] - row[2] for row in rows]),
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    paths = {"handwritten": "/timed/hand/", "library": "/timed/library/"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    with run.start_emulator() as emu, run.Database("postgres") as db, \
            run.start_uvicorn(emu, persist=True, budgets=True, db=db) as uv:
        log = f"http://127.0.0.1:{uv.port}/timed/log/"
        for _ in range(args.runs):
            for name, path in paths.items():
                urllib.request.urlopen(log).read()
                out = run.loadgen(uv.port, "proxy", args.n, 50, 50, users=run.Database.USERS, path=path)
                rows = [row for row in json.load(urllib.request.urlopen(log))["times"] if row[0] == name]
                summary = summarise(rows)
                summary["wall"] = {"s": out["wall_s"]}
                runs[name].append(summary)
                print(name, f"wall {out['wall_s']:.2f} s, {len(rows)} timelines, {out['errors']} errors", flush=True)
    print(f"\nN = {args.n}, {args.runs} runs each: medians over the runs, ms since the burst's first request")
    for name, summaries in runs.items():
        print(f"\n{name} (wall {median(s['wall']['s'] for s in summaries):.2f} s)")
        for row in summaries[0]:
            if row == "wall":
                continue
            cells = "  ".join(f"{p} {median(s[row][p] for s in summaries):6.0f}" for p in summaries[0][row])
            print(f"  {row:34} {cells}")


if __name__ == "__main__":
    main()
