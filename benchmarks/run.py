"""``python benchmarks/run.py [--quick] [--only default|overhead|latency|concurrency|ttfb|floors] [--n …]``

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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import raise_nofile  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LIB_PATH, HAND_PATH = "/bedrock/llama2/", "/hand/llama2/"


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

    def pids(self) -> list[int]:
        """The process and its descendants (uvicorn's workers)."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo.extend(int(c) for c in (task / "children").read_text().split())
                except OSError:
                    pass
        return found

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the process and its workers so far (all their threads)."""
        user = system = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user, system = user + int(fields[11]) / CLK_TCK, system + int(fields[12]) / CLK_TCK
        return user, system

    def rss_mb(self) -> float:
        """Resident memory of the process, or of its largest worker when it has workers."""
        pids = self.pids()
        total = 0.0
        for pid in pids[1:] or pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total = max(total, int(line.split()[1]) / 1024)
            except OSError:
                continue
        return total

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


class Database:
    """A database of the benchmark's own: a PostgreSQL database (created, migrated, dropped) or a SQLite
    file (WAL, busy timeout: benchmarks/settings.py), with the benchmark users ``bench0`` … ``bench<USERS-1>``."""

    USERS = 1000

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"bench_{os.getpid()}"
        self.path = Path(tempfile.gettempdir()) / f"bench-{os.getpid()}-{kind}.sqlite3"
        if kind == "postgres":
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"', f'CREATE DATABASE "{self.name}"')
        else:
            self.drop_files()
        env = self.env(base_env())
        try:
            subprocess.run([PY, "-m", "django", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
            subprocess.run([PY, "-c", (
                "import django; django.setup()\n"
                "from django.contrib.auth.models import User\n"
                "from benchmarks.middleware import FIRST_ID\n"
                f"User.objects.bulk_create([User(id=FIRST_ID + i, username=f'bench{{i}}') for i in range({self.USERS})])"
            )], env=env, cwd=ROOT, check=True)
        except BaseException:
            self.drop()  # not entered yet: nothing else would remove it
            raise

    @staticmethod
    def _admin(*statements: str) -> None:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]

    def env(self, env: dict[str, str]) -> dict[str, str]:
        env = dict(env, BENCH_DB=self.kind)
        if self.kind == "postgres":
            env["BENCH_PG_NAME"] = self.name
        else:
            env["BENCH_SQLITE"] = str(self.path)
        return env

    def completed_rows(self) -> int:
        """Completion rows with status ``completed`` (read straight from the database)."""
        sql = "SELECT count(*) FROM django_bedrock_stream_completion WHERE status = 'completed'"
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={self.name}") as conn:
                row = conn.execute(sql).fetchone()
        else:
            import sqlite3

            with closing(sqlite3.connect(self.path, timeout=30)) as conn:
                row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def drop_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def drop(self) -> None:
        if self.kind == "postgres":
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            self.drop_files()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.drop()


def proxy_env(emulator: Proc, transport: str = "auto", persist: bool = False, threads: int = 64,
              db: Database | None = None, budgets: bool = False) -> dict[str, str]:
    env = base_env()
    env.update(
        BENCH_EMULATOR_URL=f"http://127.0.0.1:{emulator.port}", BENCH_TRANSPORT=transport,
        BENCH_THREADS=str(threads), BENCH_PERSIST="1" if persist else "0", BENCH_BUDGETS="1" if budgets else "0",
    )
    if db is not None:
        env = db.env(env)
    elif persist:
        db_path = Path(tempfile.gettempdir()) / f"bench-{os.getpid()}.sqlite3"
        db_path.unlink(missing_ok=True)
        env["BENCH_SQLITE"] = str(db_path)
        subprocess.run([PY, "-m", "django", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    return env


def uvicorn_flags() -> list[str]:
    loop = "uvloop" if has("uvloop") else "asyncio"
    http = "httptools" if has("httptools") else "h11"
    return ["--loop", loop, "--http", http]


def start_uvicorn(emulator: Proc, workers: int = 1, profile: Path | None = None, **kw: Any) -> Proc:
    """uvicorn on the benchmark settings; ``profile``: run it under ``py-spy record`` (raw output there)."""
    port = free_port()
    args = [PY, "-m", "uvicorn", "benchmarks.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            *uvicorn_flags(), "--no-access-log", "--log-level", "warning", "--backlog", "4096"]
    if workers > 1:
        args += ["--workers", str(workers)]
    if profile is not None:
        args = [str(Path(PY).parent / "py-spy"), "record", "--format", "raw", "--rate", "200", "--gil",
                "-o", str(profile), "--", *args]
    proc = Proc("uvicorn", args, proxy_env(emulator, **kw), port)
    warm(proc, users=Database.USERS if kw.get("db") is not None else 0)
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


def warm(proc: Proc, users: int = 0) -> None:
    for _ in range(2):
        loadgen(proc.port, "proxy", 20, 5, 0, users=users)
    if users:  # every user's budget row exists (as on a site in use), and the hand-written view is warm
        loadgen(proc.port, "proxy", users, 5, 0, users=users, concurrency=100)
        loadgen(proc.port, "proxy", 40, 5, 0, path=HAND_PATH)


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


def concurrency_point(uv: Proc, n: int, tokens: int, delay_ms: float, base: dict[str, Any],
                      **extra: Any) -> dict[str, Any]:
    sampler = RssSampler(uv)
    sampler.start()
    user0, sys0 = uv.cpu_times()
    r = loadgen(uv.port, "proxy", n, tokens, delay_ms, **extra)
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


def db_point(uv: Proc, db: Database, path: str, n: int, base: dict[str, Any]) -> dict[str, Any]:
    """One concurrency point (50 chunks 50 ms apart) on ``path``, with the rows it stored checked."""
    before = db.completed_rows()
    row = concurrency_point(uv, n, 50, 50, base, path=path, users=Database.USERS)
    expected, added, deadline = n - row["errors"], 0, time.monotonic() + 10
    while time.monotonic() < deadline:  # the last final UPDATEs may land just after the last byte
        added = db.completed_rows() - before
        if added >= expected:
            break
        time.sleep(0.2)
    row.update(rows_added=added, rows_lost=expected - added, cpu_ms_per_stream=row["cpu_us_per_chunk"] * 50 / 1000)
    return row


#: Figures kept from each run of a point; the point's value is the median of each over its runs.
POINT_KEYS = ("wall_s", "added_p50_ms", "added_p99_ms", "cpu_ms_per_stream", "cpu_us_per_chunk", "rss_mb",
              "base_wall_s")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: median([r[k] for r in runs]) for k in POINT_KEYS}
    out.update(n=runs[0]["n"], runs=len(runs), errors=sum(r["errors"] for r in runs),
               rows_lost=sum(r["rows_lost"] for r in runs), ttfb_p99_ms=median([r["ttfb_ms"]["99"] for r in runs]),
               wall_range=[min(r["wall_s"] for r in runs), max(r["wall_s"] for r in runs)],
               error_samples=sorted({e for r in runs for e in r["error_samples"]})[:5])
    return out


def alternately(uv: Proc, db: Database, n: int, base: dict[str, Any], reps: int) -> dict[str, dict[str, Any]]:
    """``reps`` runs of N streams through each view, the hand-written one first, alternately (so both
    meet the same state of the process and the machine); each view's summary."""
    runs: dict[str, list[dict[str, Any]]] = {"handwritten": [], "library": []}
    for _ in range(reps):
        for label, path in (("handwritten", HAND_PATH), ("library", LIB_PATH)):
            runs[label].append(db_point(uv, db, path, n, base))
    return {label: summarise(rows) for label, rows in runs.items()}


def fig_default(emu: Proc, quick: bool, reps: int, profile_dir: Path | None = None) -> dict[str, Any]:
    """Figure 5: the default configuration (PERSIST on, budgets on) on PostgreSQL and on SQLite, the
    library's view beside the hand-written baseline in the same uvicorn process, the N-curve, two
    workers, and the queries and hops of one completion."""
    ns = [100, 300] if quick else [300, 1000]
    curve = [] if quick else [100, 500]
    res: dict[str, Any] = {"ns": ns, "curve": sorted(ns + curve), "reps": reps}
    for kind in ("postgres", "sqlite"):
        print(f"figure 5: {kind} ...", flush=True)
        with Database(kind) as db:
            with start_uvicorn(emu, persist=True, budgets=True, db=db) as uv:
                points: dict[str, dict[int, dict[str, Any]]] = {"library": {}, "handwritten": {}}
                for n in (sorted(ns + curve) if kind == "postgres" else ns):
                    base = loadgen(emu.port, "direct", n, 50, 50)
                    # every point of the N-curve gets reps runs too: the knee is read off them
                    for label, point in alternately(uv, db, n, base, reps).items():
                        points[label][n] = point
                    print(f"  N={n}: library {points['library'][n]['wall_s']:.2f} s, "
                          f"hand-written {points['handwritten'][n]['wall_s']:.2f} s", flush=True)
                res[kind] = points
                if kind == "postgres":
                    res["single"] = single_stream(emu, uv, 5000 if quick else 20000, 1 if quick else 3)
            if kind == "postgres":
                env = proxy_env(emu, persist=True, budgets=True, db=db)
                out = subprocess.run([PY, str(ROOT / "benchmarks" / "count.py")], env=env, cwd=ROOT,
                                     capture_output=True, text=True, timeout=120)
                if out.returncode == 0:
                    res["count"] = json.loads(out.stdout.strip().splitlines()[-1])
                else:
                    print(f"  count failed: {out.stderr[-1500:]}", file=sys.stderr)
                top = 500 if quick else 1000
                print(f"figure 5: {top} streams, 2 uvicorn workers ...", flush=True)
                base = loadgen(emu.port, "direct", top, 50, 50)
                with start_uvicorn(emu, workers=2, persist=True, budgets=True, db=db) as uv2:
                    pair = alternately(uv2, db, top, base, reps)  # the baseline under the same load
                    res["two_workers"], res["two_workers_handwritten"] = pair["library"], pair["handwritten"]
    return res


FLOORS = (("bare ASGI app under uvicorn", "/floor/asgi/"), ("async Django view, no upstream", "/floor/django/"),
          ("hand-written view (aiobotocore + 1 INSERT)", HAND_PATH), ("library view (PERSIST + BUDGETS)", LIB_PATH))


def gc_stats(proc: Proc) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/gc/", timeout=60) as response:
        return json.loads(response.read())


def fig_floors(emu: Proc, n: int, reps: int) -> dict[str, Any]:
    """What a 50-chunk stream costs at each layer, in one uvicorn worker (PostgreSQL, default setup):
    the bare ASGI floor, Django's floor (``benchmarks/floors.py``), the hand-written view and the
    library's, alternately; CPU per stream, and the garbage collector's own CPU per stream (the
    collector's thread time, ``GET /gc/``)."""
    print(f"floors: N={n} ...", flush=True)
    out: dict[str, Any] = {"n": n, "reps": reps, "paths": {}}
    with Database("postgres") as db, start_uvicorn(emu, persist=True, budgets=True, db=db) as uv:
        base = loadgen(emu.port, "direct", n, 50, 50)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in FLOORS}
        for _ in range(reps):
            for label, path in FLOORS:
                before = gc_stats(uv)
                row = concurrency_point(uv, n, 50, 50, base, path=path, users=Database.USERS)
                after = gc_stats(uv)
                gc_s = sum(after["seconds"]) - sum(before["seconds"])
                runs[label].append({**row, "cpu_ms_per_stream": row["cpu_us_per_chunk"] * 50 / 1000,
                                    "gc_ms_per_stream": gc_s / n * 1000,
                                    "full_collections": after["collections"][2] - before["collections"][2]})
        for label, rows in runs.items():
            out["paths"][label] = {key: median([r[key] for r in rows]) for key in
                                   ("cpu_ms_per_stream", "gc_ms_per_stream", "wall_s", "added_p99_ms",
                                    "full_collections")}
            out["paths"][label]["errors"] = sum(r["errors"] for r in rows)
            print(f"  {label}: {out['paths'][label]['cpu_ms_per_stream']:.2f} ms CPU per stream", flush=True)
    return out


def single_stream(emu: Proc, uv: Proc, tokens: int, runs: int) -> dict[str, Any]:
    """Seconds for one ``tokens``-chunk stream at full speed (median of ``runs``): the library's view
    (PERSIST + BUDGETS, PostgreSQL) and the hand-written one over HTTP, a bare boto3 loop and
    langchain-aws ``ChatBedrock.stream`` in-process (``clients.py``), against the same emulator."""
    res: dict[str, Any] = {"tokens": tokens, "runs": runs}
    for label, path in (("library", LIB_PATH), ("handwritten", HAND_PATH)):
        times = []
        for _ in range(runs):
            r = loadgen(uv.port, "proxy", 1, tokens, 0, timeout=300, path=path, users=Database.USERS)
            if r["errors"] == 0:
                times.append(r["duration_s"]["50"])
        res[label] = median(times) if times else None
    for kind in ("raw", "langchain"):
        if kind == "langchain" and not has("langchain_aws"):
            res[kind] = None
            continue
        out = subprocess.run([PY, str(ROOT / "benchmarks" / "clients.py"), kind, f"http://127.0.0.1:{emu.port}",
                              str(tokens), str(runs)], env=base_env(), capture_output=True, text=True, timeout=600)
        ok = out.returncode == 0
        res[kind] = median(json.loads(out.stdout.strip().splitlines()[-1])["times"]) if ok else None
        if not ok:
            print(f"  {kind} client failed: {out.stderr[-800:]}", file=sys.stderr)
    return res


#: What the profile summary counts: (label, substrings any of which in a sample's stack counts it).
#: Inclusive and overlapping: the database share contains the budgets' and receivers' queries.
PROFILE_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("aiobotocore call (sign, hooks, connect, send)", ("aiobotocore/client.py",)),
    ("  of which SigV4 signing", ("botocore/auth.py",)),
    ("  of which botocore event hooks", ("botocore/hooks.py",)),
    ("Django ORM + database driver", ("django/db/",)),
    ("  of which budgets (budget_for, reserve, settle)", ("django_bedrock_stream/budgets.py",)),
    ("  of which persistence receivers", ("django_bedrock_stream/receivers.py",)),
    ("event-stream read + decode (streams.py)", ("django_bedrock_stream/streams.py",)),
    ("request validation (serializers.py)", ("django_bedrock_stream/serializers.py",)),
    ("uvicorn response writes", ("send (uvicorn/",)),
    ("cyclic garbage collector", ("gc_collect", "collect_generations", "deduce_unreachable", "gc_collect_main")),
    ("asgiref sync_to_async (both sides)", ("asgiref/sync.py",)),
]


def profile_summary(raw: Path) -> dict[str, Any]:
    """Shares of py-spy samples (``--format raw --threads``) per :data:`PROFILE_PARTS`, and the share
    spent on threads other than the event loop's."""
    total = 0
    loop = 0
    counts = dict.fromkeys((label for label, _ in PROFILE_PARTS), 0)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        total += samples
        if "MainThread" in stack.split(";", 1)[0] or "process" in stack.split(";", 1)[0]:
            loop += samples
        for label, patterns in PROFILE_PARTS:
            if any(p in stack for p in patterns):
                counts[label] += samples
    share = {label: round(100 * c / total, 1) if total else 0.0 for label, c in counts.items()}
    return {"samples": total, "loop_thread_pct": round(100 * loop / total, 1) if total else 0.0, "parts_pct": share}


def fig_profile(emu: Proc, n: int) -> dict[str, Any]:
    """py-spy (``--gil --native --threads``) on the uvicorn worker during N streams of the library's view:
    "before" = PERSIST off, no budgets, as the old figures were measured; "after" = the default
    configuration of figure 5 (PERSIST + BUDGETS on PostgreSQL). Raw stacks in benchmarks/results/."""
    res: dict[str, Any] = {"n": n}
    spy = str(Path(PY).parent / "py-spy")
    for label in ("before", "after"):
        print(f"profile ({label}), N={n} ...", flush=True)
        raw = RESULTS / f"profile-{label}.txt"
        with ExitStack() as stack:
            db = stack.enter_context(Database("postgres")) if label == "after" else None
            kw: dict[str, Any] = {"persist": True, "budgets": True, "db": db} if db is not None else {}
            uv = stack.enter_context(start_uvicorn(emu, **kw))
            rec = subprocess.Popen([spy, "record", "--format", "raw", "--gil", "--native", "--threads", "--rate", "100",
                                    "-o", str(raw), "--pid", str(uv.pid)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            r = loadgen(uv.port, "proxy", n, 50, 50, users=Database.USERS if db is not None else 0)
            rec.send_signal(signal.SIGINT)
            try:
                rec.wait(30)
            except subprocess.TimeoutExpired:
                rec.kill()
                rec.wait()
        res[label] = {"wall_s": r["wall_s"], "errors": r["errors"], **(profile_summary(raw) if raw.exists() else {})}
    return res


def knee(points: dict[int, dict[str, Any]]) -> int | None:
    """The largest N (of those measured) up to which the added p99 stays ≤ 50 ms and the wall within
    0.5 s of the emulator's own: beyond it, new streams queue."""
    best = None
    for n in sorted(points):
        p = points[n]
        if p["added_p99_ms"] <= 50 and p["wall_s"] <= p["base_wall_s"] + 0.5 and not p["errors"]:
            best = n
        else:
            break
    return best


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
    return "-" if ok is None else ("MET" if ok else "MISSED")


def report_default(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    pg, lite = d.get("postgres"), d.get("sqlite")
    if pg:
        small = d["ns"][0]
        lib = pg["library"][small]
        rows.append((f"5 proxy CPU per 50-chunk stream, PERSIST + BUDGETS, PostgreSQL (N={small})",
                     f"{lib['cpu_ms_per_stream']:.2f} ms "
                     f"(hand-written {pg['handwritten'][small]['cpu_ms_per_stream']:.2f} ms)",
                     "≤ 2.5 ms", verdict(lib["cpu_ms_per_stream"] <= 2.5)))
    for db_label, points in (("PostgreSQL", pg), ("SQLite", lite)):
        if not points:
            continue
        for n in d["ns"]:
            lib, hand = points["library"][n], points["handwritten"][n]
            ratio = lib["wall_s"] / hand["wall_s"]
            headline = db_label == "PostgreSQL"
            rows.append((f"5 N={n} wall, library / hand-written, {db_label}",
                         f"{lib['wall_s']:.2f} s / {hand['wall_s']:.2f} s = {ratio:.2f}× "
                         f"(direct {lib['base_wall_s']:.2f} s)",
                         "≤ 1.10×" if headline else "(beside)", verdict(ratio <= 1.10) if headline else "-"))
            # "No worse": within 10 % or 5 ms of the hand-written view's p99, whichever is larger.
            worse = lib["added_p99_ms"] - hand["added_p99_ms"]
            rows.append((f"5 N={n} added inter-chunk p99, library / hand-written, {db_label}",
                         f"{lib['added_p99_ms']:.1f} / {hand['added_p99_ms']:.1f} ms",
                         "no worse" if headline else "(beside)",
                         verdict(worse <= max(5.0, 0.1 * hand["added_p99_ms"])) if headline else "-"))
            rows.append((f"5 N={n} errors / rows lost, library · hand-written, {db_label}",
                         f"{lib['errors']} / {lib['rows_lost']} · {hand['errors']} / {hand['rows_lost']}",
                         "0 / 0", verdict(lib["errors"] == 0 and lib["rows_lost"] == 0)))
            rows.append((f"5 N={n} CPU per stream, library / hand-written, {db_label}",
                         f"{lib['cpu_ms_per_stream']:.2f} / {hand['cpu_ms_per_stream']:.2f} ms", "", ""))
    if pg:
        k = knee(pg["library"])
        kh = knee(pg["handwritten"])
        rows.append(("5 knee per uvicorn worker (PostgreSQL, N-curve " + ",".join(map(str, d["curve"])) + ")",
                     f"library {k or '< ' + str(d['curve'][0])}, hand-written {kh or '< ' + str(d['curve'][0])}",
                     "(info)", "-"))
    two = d.get("two_workers")
    if two:
        n = two["n"]
        hand2 = d.get("two_workers_handwritten")  # absent from results written before it was measured

        def beside(key: str, fmt: str, unit: str) -> str:
            return f" (hand-written {format(hand2[key], fmt)} {unit})" if hand2 else ""

        rows.append((f"5 N={n}, 2 uvicorn workers: wall",
                     f"{two['wall_s']:.2f} s{beside('wall_s', '.2f', 's')} (direct {two['base_wall_s']:.2f} s)",
                     "≤ 3.5 s", verdict(two["wall_s"] <= 3.5)))
        rows.append((f"5 N={n}, 2 workers: added inter-chunk p99",
                     f"{two['added_p99_ms']:.1f} ms{beside('added_p99_ms', '.1f', 'ms')}", "≤ 50 ms",
                     verdict(two["added_p99_ms"] <= 50)))
        rows.append((f"5 N={n}, 2 workers: errors / rows lost", f"{two['errors']} / {two['rows_lost']}", "0 / 0",
                     verdict(two["errors"] == 0 and two["rows_lost"] == 0)))
        rows.append((f"5 N={n}, 2 workers: CPU per stream / RSS per worker",
                     f"{two['cpu_ms_per_stream']:.2f} ms{beside('cpu_ms_per_stream', '.2f', 'ms')} / "
                     f"{two['rss_mb']:.0f} MB", "", ""))
    c = d.get("count")
    if c:
        lib = c["library"]
        q = lib["queries"]
        inserts, updates = q.get("INSERT", 0), q.get("UPDATE", 0)
        rest = {k: v for k, v in q.items() if k not in ("INSERT", "UPDATE")}
        rows.append(("5 SQL per plain completion (library, PostgreSQL, budgets on)",
                     f"{inserts} INSERT + {updates} UPDATE" + "".join(f" + {v} {k}" for k, v in sorted(rest.items()))
                     + (f" ({', '.join(lib['statements'])})" if lib.get("statements") else ""),
                     "1 INSERT + 1 UPDATE", verdict(inserts <= 1 and updates <= 1 and not rest)))
        rows.append(("5 thread hops per plain completion under ASGI (library)",
                     f"{lib['view_hops']} in the view + {lib['django_handler_hops']} in Django's handler",
                     "≤ 2", verdict(lib["view_hops"] <= 2)))
        hand = c["handwritten"]
        statements = ", ".join(f"{v} {k}" for k, v in hand["queries"].items())
        rows.append(("5 hand-written: SQL / hops", f"{hand['query_count']} ({statements}) / "
                     f"{hand['view_hops']} + {hand['django_handler_hops']}", "", ""))
    return rows


def report(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = report_floors(results["floors"]) if results.get("floors") else []
    return rows + report_figures(results)


def report_floors(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, p in d["paths"].items():
        rows.append((f"floors N={d['n']}: {label}", f"{p['cpu_ms_per_stream']:.2f} ms CPU/stream (GC "
                     f"{p['gc_ms_per_stream']:.2f}), wall {p['wall_s']:.2f} s, {p['errors']} errors",
                     "≤ 2.5 ms" if label.startswith("library") else "", ""))
    return rows


def report_figures(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
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
    if results.get("default"):
        rows.extend(report_default(results["default"]))
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


def chart_default(results: dict[str, Any], path: Path) -> None:
    """The docs chart (docs/benchmarks.png): the library beside the hand-written view and langchain-aws,
    and the N-curve, from figure 5."""
    d = results.get("default")
    if not d or not d.get("postgres"):
        return
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no chart", file=sys.stderr)
        return
    colors = {"library": "tab:blue", "handwritten": "tab:orange", "langchain": "tab:green", "raw": "tab:grey"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0][0]
    single = d.get("single") or {}
    keys = [k for k in ("raw", "library", "handwritten", "langchain") if single.get(k)]
    names = {"raw": "bare boto3\nloop", "library": "library view\n(uvicorn)",
             "handwritten": "hand-written\nview (uvicorn)", "langchain": "langchain-aws\nChatBedrock.stream"}
    bars = ax.bar([names[k] for k in keys], [single[k] for k in keys], color=[colors[k] for k in keys])
    ax.bar_label(bars, fmt="%.2f s", fontsize=8)
    ax.set_ylim(0, max((single[k] for k in keys), default=1) * 1.15)
    ax.set_title(f"one {single.get('tokens', 0):,}-chunk stream at full speed (s)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    pg = d["postgres"]
    ns = sorted(int(n) for n in pg["library"])
    ax = axes[0][1]
    for label in ("library", "handwritten"):
        ax.plot(ns, [pg[label][n]["wall_s"] for n in ns], "o-", color=colors[label],
                label=label.replace("handwritten", "hand-written"))
    ax.plot(ns, [pg["library"][n]["base_wall_s"] for n in ns], "--", color="tab:grey", label="emulator direct")
    two = d.get("two_workers")
    if two:
        ax.plot([two["n"]], [two["wall_s"]], "D", color="tab:purple", label="library, 2 workers")
        hand2 = d.get("two_workers_handwritten")
        if hand2:
            ax.plot([hand2["n"]], [hand2["wall_s"]], "D", mfc="none", color="tab:purple",
                    label="hand-written, 2 workers")
        ax.axhline(3.5, ls=":", c="tab:purple", lw=1)
    ax.set_title("wall vs concurrent 2.5-s streams, 1 worker, PostgreSQL", fontsize=10)
    ax.set_xlabel("concurrent streams (N)")
    ax.set_ylabel("s")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    for label in ("library", "handwritten"):
        ax.plot(ns, [max(0.1, pg[label][n]["added_p99_ms"]) for n in ns], "o-", color=colors[label],
                label=label.replace("handwritten", "hand-written"))
    ax.axhline(50, ls=":", c="grey", lw=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title("added inter-chunk delay p99 (ms), PostgreSQL; goal 50", fontsize=10)
    ax.set_xlabel("concurrent streams (N)")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    groups = [(db, n) for db in ("postgres", "sqlite") if d.get(db) for n in d["ns"]]
    xs = range(len(groups))
    width = 0.38
    for offset, label in ((-width / 2, "library"), (width / 2, "handwritten")):
        ax.bar([x + offset for x in xs], [d[db][label][n]["cpu_ms_per_stream"] for db, n in groups], width,
               color=colors[label], label=label.replace("handwritten", "hand-written"))
    ax.axhline(2.5, ls=":", c="grey", lw=1)
    ax.set_xticks(list(xs), [f"{'PG' if db == 'postgres' else 'SQLite'}\nN={n}" for db, n in groups], fontsize=8)
    ax.set_title("proxy CPU per 50-chunk stream (ms), goal 2.5", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("django-bedrock-stream, PERSIST + BUDGETS on (the default) vs a hand-written view — "
                 f"{results['date'][:10]}, {results['machine']['cpus']} CPUs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    print(f"chart: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--only", choices=["default", "overhead", "latency", "concurrency", "ttfb", "floors"],
                        action="append")
    parser.add_argument("--reps", type=int, default=None, help="runs per figure-5 point (default 3, quick 1)")
    parser.add_argument("--n", default=None, help="concurrency levels, comma-separated (default 100,250,500,1000)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions for figure 1 (default 3, quick 1)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the library's uvicorn worker at N=1000 (quick: 300), before/after")
    parser.add_argument("--chart-from", metavar="JSON", help="only redraw docs/benchmarks.png from a results file")
    parser.add_argument("--no-variants", action="store_true", help="skip the thread-transport and PERSIST runs")
    args = parser.parse_args(argv)
    if args.chart_from:
        saved = json.loads(Path(args.chart_from).read_text())
        for kind in ("postgres", "sqlite"):  # JSON made the N keys strings
            for label, points in (saved.get("default", {}).get(kind) or {}).items():
                saved["default"][kind][label] = {int(n): p for n, p in points.items()}
        chart_default(saved, ROOT / "docs" / "benchmarks.png")
        return 0
    only = set(args.only or ["default", "overhead", "latency", "concurrency", "ttfb"])
    ns = [int(x) for x in (args.n or ("100,500" if args.quick else "100,250,500,1000")).split(",")]
    runs = args.runs or (1 if args.quick else 3)
    tokens = 5000 if args.quick else 20000
    raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "uvicorn": " ".join(uvicorn_flags()), "gc": os.environ.get("BENCH_GC", "default"),
                    "loadavg_at_start": os.getloadavg()},
        "command": " ".join([Path(PY).name, "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    with ExitStack() as stack:
        emu = stack.enter_context(start_emulator())
        if "default" in only:
            results["default"] = fig_default(emu, args.quick, args.reps or (1 if args.quick else 3))
        if args.profile:
            results["profile"] = fig_profile(emu, 300 if args.quick else 1000)
        if "floors" in only:
            results["floors"] = fig_floors(emu, 300 if args.quick else 1000, args.reps or (1 if args.quick else 3))
        if not only - {"default", "floors"}:
            return finish(results, started)
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
    return finish(results, started)


def finish(results: dict[str, Any], started: float) -> int:
    results["elapsed_s"] = time.monotonic() - started
    print()
    rows = report(results)
    results["table"] = print_table(rows)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"results-{stamp}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    if results.get("overhead") or results.get("concurrency"):
        chart(results, RESULTS / f"chart-{stamp}.png")
    quick = "--quick" in results["command"].split()
    chart_default(results, RESULTS / f"default-{stamp}.png" if quick else ROOT / "docs" / "benchmarks.png")
    print(f"elapsed {results['elapsed_s']:.0f} s; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
