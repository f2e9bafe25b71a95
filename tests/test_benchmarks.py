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
