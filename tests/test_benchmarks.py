"""Smoke version of ``benchmarks/run.py``: real processes, 50 short streams, correctness only (no timings)."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks import run as bench

pytestmark = pytest.mark.skipif(not bench.has("uvicorn"), reason="uvicorn not installed")


def test_fifty_streams_through_uvicorn_arrive_complete() -> None:
    with bench.start_emulator() as emu, bench.start_uvicorn(emu) as uv:
        direct = bench.loadgen(emu.port, "direct", 50, 10, 5)
        point = bench.concurrency_point(uv, 50, 10, 5, direct)
        proxied = bench.loadgen(uv.port, "proxy", 50, 10, 0, verify=True)  # text checked word for word
    assert direct["errors"] == 0, direct["error_samples"]
    assert point["errors"] == 0, point["error_samples"]
    assert proxied["errors"] == 0 and proxied["chunks"] == 500, proxied["error_samples"]
    rows = bench.report({"concurrency": [point]})
    assert any("N=50 errors" in r[0] and r[1] == "0" for r in rows)
    bench.print_table(rows)


def test_in_process_clients_read_every_chunk() -> None:
    with bench.start_emulator() as emu:
        for kind in ("raw", "ours"):
            out = subprocess.run(
                [bench.PY, str(bench.ROOT / "benchmarks" / "clients.py"), kind, f"http://127.0.0.1:{emu.port}", "300", "1"],
                env=bench.base_env(), capture_output=True, text=True, timeout=60, check=True,
            )
            assert json.loads(out.stdout.strip().splitlines()[-1])["counts"] == [300]


def test_figure_5_harness_on_sqlite_counts_rows_queries_and_hops() -> None:
    """The default-configuration harness (PERSIST + BUDGETS, the hand-written baseline, rows checked,
    queries and hops counted) on a small SQLite run: correct, not timed."""
    with bench.start_emulator() as emu, bench.Database("sqlite") as db:
        with bench.start_uvicorn(emu, persist=True, budgets=True, db=db) as uv:
            base = bench.loadgen(emu.port, "direct", 20, 10, 5)
            for path in (bench.LIB_PATH, bench.HAND_PATH):
                point = bench.db_point(uv, db, path, 20, base)
                assert (point["errors"], point["rows_lost"], point["rows_added"]) == (0, 0, 20), point["error_samples"]
        env = bench.proxy_env(emu, persist=True, budgets=True, db=db)
        out = subprocess.run([bench.PY, str(bench.ROOT / "benchmarks" / "count.py")], env=env, cwd=bench.ROOT,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    counted = json.loads(out.stdout.strip().splitlines()[-1])
    assert counted["handwritten"]["queries"] == {"INSERT": 1} and counted["handwritten"]["view_hops"] == 1
    library = counted["library"]
    assert library["queries"]["INSERT"] == 1 and library["queries"]["UPDATE"] >= 2  # the final UPDATE, the settle
    assert library["view_hops"] >= 2 and library["django_handler_hops"] == 2, library["hops"]
    rows = bench.report({"default": {"ns": [], "curve": [], "count": counted}})
    assert any(r[0].startswith("5 SQL per plain completion") for r in rows)


def test_the_two_worker_goal_is_reported_beside_the_hand_written_views_figure() -> None:
    point = {"n": 1000, "wall_s": 9.1, "base_wall_s": 2.6, "added_p99_ms": 443.0, "errors": 0, "rows_lost": 0,
             "cpu_ms_per_stream": 9.3, "rss_mb": 180.0}
    hand = {**point, "wall_s": 8.4, "added_p99_ms": 390.5, "cpu_ms_per_stream": 8.8}
    rows = {r[0]: r for r in bench.report({"default": {"ns": [], "curve": [], "two_workers": point,
                                                        "two_workers_handwritten": hand}})}
    wall = rows["5 N=1000, 2 uvicorn workers: wall"]
    assert wall[1] == "9.10 s (hand-written 8.40 s) (direct 2.60 s)" and wall[2:] == ("≤ 3.5 s", "MISSED")
    assert rows["5 N=1000, 2 workers: added inter-chunk p99"][1] == "443.0 ms (hand-written 390.5 ms)"
    # results written before the baseline was measured in two workers still report
    older = {r[0]: r for r in bench.report({"default": {"ns": [], "curve": [], "two_workers": point}})}
    assert older["5 N=1000, 2 uvicorn workers: wall"][1] == "9.10 s (direct 2.60 s)"


def run_on_postgresql(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<script>`` (which makes its own PostgreSQL database), or a skip without PostgreSQL."""
    from tests.postgres import postgresql_unreachable

    reason = postgresql_unreachable()
    if reason:
        pytest.skip(f"benchmarks/{script} needs PostgreSQL: {reason}")
    out = subprocess.run([bench.PY, str(bench.ROOT / "benchmarks" / script), *args],
                         env=bench.base_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_split_reads_the_loop_threads_cpu_apart_from_the_processes() -> None:
    """``benchmarks/split.py`` on a tiny PostgreSQL run: both views stream without errors and the event
    loop's thread is a part of the process's CPU, never more (correct, not timed)."""
    out = run_on_postgresql("split.py", "--n", "10", "--runs", "1")
    lines = out.stdout.splitlines()
    rows = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith(("handwritten {", "library {"))]
    assert len(rows) == 2, out.stdout
    for row in rows:
        assert row["errors"] == 0
        assert 0 < row["loop_thread_ms"] <= row["cpu_ms"]
    assert "medians" in out.stdout


def test_timeline_notes_every_stream_of_both_views() -> None:
    """``benchmarks/timeline.py`` on a tiny PostgreSQL run: a timeline for every stream of each view,
    none lost to the other view's log, no errors."""
    out = run_on_postgresql("timeline.py", "--n", "12", "--runs", "1")
    for name in ("handwritten", "library"):
        assert any(line.startswith(f"{name} wall ") and line.endswith("12 timelines, 0 errors")
                   for line in out.stdout.splitlines()), out.stdout
    assert "reached -> returned" in out.stdout and "returned -> ended" in out.stdout


def test_timeline_summary_reads_each_phase_from_the_bursts_first_request() -> None:
    from benchmarks.timeline import summarise

    # (view, reached, returned, ended): the burst's first request reached a view at t = 100 s.
    rows = [["library", 100.0 + i / 1000, 100.5 + i / 100, 103.0 + i / 100] for i in range(10)]
    summary = summarise(rows)
    assert summary["reached the view"]["p10"] == pytest.approx(1.0)  # ms
    assert summary["reached the view"]["max"] == pytest.approx(9.0)
    assert summary["stream can start (view returned)"]["p50"] == pytest.approx(550.0)
    assert summary["  reached -> returned"]["p10"] == pytest.approx(509.0)
    assert summary["body ended (row saved)"]["max"] == pytest.approx(3090.0)
    assert summary["  returned -> ended"]["p90"] == pytest.approx(2500.0)
