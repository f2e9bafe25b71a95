"""``python benchmarks/run.py [--quick] [--only overhead|latency|concurrency|ttfb] [--n 100,250,500,1000]``

Starts the Bedrock emulator, the proxy under uvicorn (one worker) and under gunicorn (gthread), each in
its own process, drives them with the load generator (``loadgen.py``, its own process), prints a table
with the goal next to each figure and saves a PNG chart and the raw JSON to ``benchmarks/results/``.
See ``docs/benchmarks.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import raise_nofile  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout}s: {proc.args}")


class Proc:
    """A child process we started; stopped (by its own pid) when the benchmark ends."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_port(port, self.proc)
        except Exception:
            self.stop()
            print(Path(self.log.name).read_text()[-3000:], file=sys.stderr)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pid(self) -> int:
        """gunicorn: the (single) worker's pid; others: the process itself."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        return int(children[0]) if children else self.pid

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RssSampler(threading.Thread):
    def __init__(self, proc: Proc) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self._halt = proc, proc.rss_mb(), threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.rss_mb())
            except OSError:
                return

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak


# -- servers ---------------------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="benchmark", AWS_SECRET_ACCESS_KEY="benchmark", AWS_DEFAULT_REGION="us-east-1",
        PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="benchmarks.settings",
    )
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"):
        env.pop(k, None)
    return env


def start_emulator() -> Proc:
    port = free_port()
    return Proc("emulator", [PY, "-m", "django_bedrock_stream.emulator", "--port", str(port)], base_env(), port)


def proxy_env(emulator: Proc, transport: str = "auto", persist: bool = False, threads: int = 64) -> dict[str, str]:
    env = base_env()
    env.update(
        BENCH_EMULATOR_URL=f"http://127.0.0.1:{emulator.port}", BENCH_TRANSPORT=transport,
        BENCH_THREADS=str(threads), BENCH_PERSIST="1" if persist else "0",
    )
    if persist:
        db = Path(tempfile.gettempdir()) / f"bench-{os.getpid()}.sqlite3"
        db.unlink(missing_ok=True)
        env["BENCH_SQLITE"] = str(db)
        subprocess.run([PY, "-m", "django", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    return env


def uvicorn_flags() -> list[str]:
    loop = "uvloop" if has("uvloop") else "asyncio"
    http = "httptools" if has("httptools") else "h11"
    return ["--loop", loop, "--http", http]


def start_uvicorn(emulator: Proc, **kw: Any) -> Proc:
    port = free_port()
    args = [PY, "-m", "uvicorn", "benchmarks.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            *uvicorn_flags(), "--no-access-log", "--log-level", "warning", "--backlog", "4096"]
    proc = Proc("uvicorn", args, proxy_env(emulator, **kw), port)
    warm(proc)
    return proc


def start_gunicorn(emulator: Proc) -> Proc:
    port = free_port()
    args = [PY, "-m", "gunicorn", "-k", "gthread", "--threads", "32", "-w", "1", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", "--backlog", "4096", "benchmarks.wsgi:application"]
    proc = Proc("gunicorn", args, proxy_env(emulator), port)
    warm(proc)
    return proc


# -- load generator --------------------------------------------------------------------------------


def loadgen(port: int, mode: str, n: int, tokens: int, delay_ms: float, **extra: Any) -> dict[str, Any]:
    spec = {"mode": mode, "host": "127.0.0.1", "port": port, "n": n, "tokens": tokens, "delay_ms": delay_ms, **extra}
    out = subprocess.run([PY, str(ROOT / "benchmarks" / "loadgen.py"), json.dumps(spec)], env=base_env(),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def warm(proc: Proc) -> None:
    for _ in range(2):
        loadgen(proc.port, "proxy", 20, 5, 0)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- figures ---------------------------------------------------------------------------------------


def fig_overhead(emu: Proc, uv: Proc, gu: Proc | None, runs: int, tokens: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{emu.port}"
    res: dict[str, Any] = {"tokens": tokens, "runs": runs}
    for kind in ("raw", "ours", "langchain"):
        if kind == "langchain" and not has("langchain_aws"):
            res[kind] = None
            continue
        out = subprocess.run([PY, str(ROOT / "benchmarks" / "clients.py"), kind, url, str(tokens), str(runs)],
                             env=base_env(), capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            print(f"  {kind} client failed: {out.stderr[-1500:]}", file=sys.stderr)
            res[kind] = None
            continue
        data = json.loads(out.stdout.strip().splitlines()[-1])
        assert all(c == tokens for c in data["counts"]), data["counts"]
        res[kind] = median(data["times"])
    for name, proc in (("uvicorn", uv), ("gunicorn", gu), ("direct", emu)):
        if proc is None:
            res[name] = None
            continue
        times = []
        for _ in range(runs):
            r = loadgen(proc.port, "direct" if name == "direct" else "proxy", 1, tokens, 0, timeout=300)
            assert r["errors"] == 0, r["error_samples"]
            times.append(r["duration_s"]["50"])
        res[name] = median(times)
    return res


def fig_latency(emu: Proc, uv: Proc, gu: Proc | None, quick: bool) -> dict[str, Any]:
    n, tokens = (6, 25) if quick else (12, 50)
    res = {"n": n, "tokens": tokens, "delay_ms": 20}
    for name, proc, mode in (("direct", emu, "direct"), ("uvicorn", uv, "proxy"), ("gunicorn", gu, "proxy")):
        if proc is not None:  # three at a time, so request setup never overlaps a paced token
            res[name] = loadgen(proc.port, mode, n, tokens, 20, concurrency=3)
    return res


def fig_concurrency(emu: Proc, uv: Proc, ns: list[int], tokens: int = 50, delay_ms: float = 50) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        base = loadgen(emu.port, "direct", n, tokens, delay_ms)
        rows.append(concurrency_point(uv, n, tokens, delay_ms, base))
    return rows


def concurrency_point(uv: Proc, n: int, tokens: int, delay_ms: float, base: dict[str, Any]) -> dict[str, Any]:
    sampler = RssSampler(uv)
    sampler.start()
    user0, sys0 = uv.cpu_times()
    r = loadgen(uv.port, "proxy", n, tokens, delay_ms)
    user1, sys1 = uv.cpu_times()
    cpu = (user1 - user0) + (sys1 - sys0)
    peak = sampler.stop()
    chunks = max(1, n * tokens)
    return {
        "n": n, "wall_s": r["wall_s"], "errors": r["errors"], "error_samples": r["error_samples"],
        "lateness_ms": r["lateness_ms"], "base_lateness_ms": base["lateness_ms"],
        "added_p50_ms": r["lateness_ms"]["50"] - base["lateness_ms"]["50"],
        "added_p99_ms": r["lateness_ms"]["99"] - base["lateness_ms"]["99"],
        "ttfb_ms": r["ttfb_ms"], "base_ttfb_ms": base["ttfb_ms"], "base_wall_s": base["wall_s"],
        "rss_mb": peak, "cpu_us_per_chunk": cpu / chunks * 1e6, "reads": r["reads"],
        "cpu_sys_us_per_chunk": (sys1 - sys0) / chunks * 1e6,
    }


def fig_ttfb(emu: Proc, uv: Proc, gu: Proc | None, quick: bool) -> dict[str, Any]:
    n = 30 if quick else 100
    res: dict[str, Any] = {"n": n}
    for name, proc, mode in (("direct", emu, "direct"), ("uvicorn", uv, "proxy"), ("gunicorn", gu, "proxy")):
        if proc is not None:
            res[name] = loadgen(proc.port, mode, n, 3, 0, concurrency=1)["ttfb_ms"]
    return res


# -- report ----------------------------------------------------------------------------------------


def fmt(v: Any, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def report(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    o = results.get("overhead")
    if o:
        t = o["tokens"]
        for key, label in (("direct", "emulator alone (raw socket read)"), ("raw", "(a) raw boto3 loop"),
                           ("ours", "(b) llama2_stream over boto3"), ("uvicorn", "(c) view under uvicorn"),
                           ("gunicorn", "(d) view under gunicorn gthread"), ("langchain", "(e) langchain-aws ChatBedrock.stream")):
            v = o.get(key)
            rows.append((f"1 {label}", f"{fmt(v, ' s', 3)}  ({fmt(v and v / t * 1e6, ' µs/chunk', 1)})", "", ""))
        if o.get("raw") and o.get("uvicorn"):
            r = o["uvicorn"] / o["raw"]
            rows.append(("1 ratio (c)/(a)", fmt(r), "≤ 1.30", verdict(r <= 1.3)))
        if o.get("gunicorn") and o.get("raw"):
            rows.append(("1 ratio (d)/(a)", fmt(o["gunicorn"] / o["raw"]), "(info)", "-"))
        if o.get("langchain") and o.get("uvicorn"):
            r = o["langchain"] / o["uvicorn"]
            rows.append(("1 ratio (e)/(c)", fmt(r), "≥ 2", verdict(r >= 2)))
    lat = results.get("latency")
    if lat:
        d = lat["direct"]["lateness_ms"]
        for name in ("uvicorn", "gunicorn"):
            if name in lat:
                p = lat[name]["lateness_ms"]
                added50, added99 = p["50"] - d["50"], p["99"] - d["99"]
                rows.append((f"2 added per-token delay, {name} (p50 / p99)", f"{added50:.2f} / {added99:.2f} ms",
                             "p99 ≤ 5 ms", verdict(added99 <= 5 and lat[name]["errors"] == 0)))
    for row in results.get("concurrency", []):
        n = row["n"]
        goal = n == 1000
        rows.append((f"3 N={n} wall", f"{row['wall_s']:.2f} s (emulator direct {row['base_wall_s']:.2f} s)",
                     "≤ 3.0 s" if goal else "", verdict(row["wall_s"] <= 3.0) if goal else ""))
        rows.append((f"3 N={n} added inter-chunk delay p50 / p99",
                     f"{row['added_p50_ms']:.1f} / {row['added_p99_ms']:.1f} ms",
                     "p99 ≤ 50 ms" if goal else "", verdict(row["added_p99_ms"] <= 50) if goal else ""))
        rows.append((f"3 N={n} time to first chunk p50 / p99", f"{row['ttfb_ms']['50']:.0f} / {row['ttfb_ms']['99']:.0f} ms", "", ""))
        rows.append((f"3 N={n} errors", str(row["errors"]), "0" if goal else "", verdict(row["errors"] == 0) if goal else ""))
        rows.append((f"3 N={n} peak RSS", f"{row['rss_mb']:.0f} MB", "≤ 500 MB" if goal else "",
                     verdict(row["rss_mb"] <= 500) if goal else ""))
        rows.append((f"3 N={n} proxy CPU per chunk", f"{row['cpu_us_per_chunk']:.1f} µs (kernel {row['cpu_sys_us_per_chunk']:.1f})", "≤ 40 µs" if goal else "",
                     verdict(row["cpu_us_per_chunk"] <= 40) if goal else ""))
    for label, row in results.get("variants", {}).items():
        rows.append((f"3 N={row['n']} {label}", f"wall {row['wall_s']:.2f} s, added p99 {row['added_p99_ms']:.1f} ms, "
                     f"TTFB p99 {row['ttfb_ms']['99']:.0f} ms, {row['errors']} errors, {row['rss_mb']:.0f} MB, "
                     f"{row['cpu_us_per_chunk']:.1f} µs/chunk", "", ""))
    tt = results.get("ttfb")
    if tt:
        d = tt["direct"]["50"]
        for name in ("uvicorn", "gunicorn"):
            if name in tt:
                added = tt[name]["50"] - d
                rows.append((f"4 TTFB added by the view, {name} (p50)", f"{added:.2f} ms (emulator {d:.2f} ms)",
                             "≤ 5 ms", verdict(added <= 5)))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [("figure", "value", "goal", "")]) for i in range(4)]
    lines = []
    for r in [("figure", "value", "goal", "")] + rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    text = "\n".join(lines)
    print(text)
    return text


def chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    o = results.get("overhead")
    ax = axes[0][0]
    if o:
        keys = [k for k in ("direct", "raw", "ours", "uvicorn", "gunicorn", "langchain") if o.get(k)]
        ax.bar(keys, [o[k] / o["tokens"] * 1e6 for k in keys], color="tab:blue")
        ax.set_title(f"1. per-chunk time, {o['tokens']:,}-chunk stream (µs)")
    conc = results.get("concurrency") or []
    if conc:
        ns = [r["n"] for r in conc]
        ax = axes[0][1]
        ax.plot(ns, [r["wall_s"] for r in conc], "o-", label="wall (s)")
        ax.axhline(3.0, ls="--", c="grey")
        ax.set_title("3. wall time vs N (goal 3.0 s at N=1000)")
        ax.set_xlabel("concurrent streams")
        ax = axes[1][0]
        ax.plot(ns, [r["added_p99_ms"] for r in conc], "o-", label="added inter-chunk p99 (ms)")
        ax.plot(ns, [r["ttfb_ms"]["99"] for r in conc], "s-", label="time to first chunk p99 (ms)")
        ax.axhline(50, ls="--", c="grey")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("3. delays vs N")
        ax = axes[1][1]
        ax.plot(ns, [r["cpu_us_per_chunk"] for r in conc], "o-", label="proxy CPU µs/chunk")
        ax.plot(ns, [r["rss_mb"] for r in conc], "s-", label="peak RSS MB")
        ax.axhline(40, ls="--", c="grey")
        ax.legend()
        ax.set_title("3. proxy cost vs N")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--only", choices=["overhead", "latency", "concurrency", "ttfb"], action="append")
    parser.add_argument("--n", default=None, help="concurrency levels, comma-separated (default 100,250,500,1000)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions for figure 1 (default 3, quick 1)")
    parser.add_argument("--no-variants", action="store_true", help="skip the thread-transport and PERSIST runs")
    args = parser.parse_args(argv)
    only = set(args.only or ["overhead", "latency", "concurrency", "ttfb"])
    ns = [int(x) for x in (args.n or ("100,500" if args.quick else "100,250,500,1000")).split(",")]
    runs = args.runs or (1 if args.quick else 3)
    tokens = 5000 if args.quick else 20000
    raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "uvicorn": " ".join(uvicorn_flags()), "gc": os.environ.get("BENCH_GC", "default")},
        "command": " ".join([Path(PY).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    with ExitStack() as stack:
        emu = stack.enter_context(start_emulator())
        uv = stack.enter_context(start_uvicorn(emu))
        need_wsgi = bool(only & {"overhead", "latency", "ttfb"}) and has("gunicorn")
        gu = stack.enter_context(start_gunicorn(emu)) if need_wsgi else None
        if "overhead" in only:
            print("figure 1: per-chunk overhead ...", flush=True)
            results["overhead"] = fig_overhead(emu, uv, gu, runs, tokens)
        if "latency" in only:
            print("figure 2: no-buffering latency ...", flush=True)
            results["latency"] = fig_latency(emu, uv, gu, args.quick)
        if "ttfb" in only:
            print("figure 4: time to first byte ...", flush=True)
            results["ttfb"] = fig_ttfb(emu, uv, gu, args.quick)
        if gu is not None:
            gu.stop()
        if "concurrency" in only:
            print(f"figure 3: concurrency N={ns} ...", flush=True)
            results["concurrency"] = fig_concurrency(emu, uv, ns)
            top = max(ns)
            if not args.no_variants and not args.quick:
                variants: dict[str, Any] = {}
                base = loadgen(emu.port, "direct", top, 50, 50)
                uv.stop()
                for label, kw in (("ASYNC_TRANSPORT=thread (pool 1100)", {"transport": "thread", "threads": 1100}),
                                  ("PERSIST on (SQLite file)", {"persist": True})):
                    print(f"  variant: {label} ...", flush=True)
                    with start_uvicorn(emu, **kw) as other:
                        variants[label] = concurrency_point(other, top, 50, 50, base)
                results["variants"] = variants
    results["elapsed_s"] = time.monotonic() - started
    print()
    rows = report(results)
    results["table"] = print_table(rows)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    chart(results, RESULTS / f"chart-{stamp}.png")
    print(f"elapsed {results['elapsed_s']:.0f} s; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
