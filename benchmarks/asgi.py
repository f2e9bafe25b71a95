import collections
import gc
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

from benchmarks.floors import asgi_floor  # noqa: E402

django_application = get_asgi_application()


#: Collections and seconds spent in them, per generation: ``GET /gc/`` (``run.py`` reads it around a point).
GC_STATS = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}
_gc_started = [0.0]


def _gc_callback(phase: str, info: dict) -> None:  # type: ignore[type-arg]
    if phase == "start":
        _gc_started[0] = time.thread_time()
    else:
        GC_STATS["collections"][info["generation"]] += 1
        GC_STATS["seconds"][info["generation"]] += time.thread_time() - _gc_started[0]


gc.callbacks.append(_gc_callback)


async def application(scope, receive, send):  # type: ignore[no-untyped-def]
    """Django, but ``/floor/asgi/`` is the bare ASGI floor (``benchmarks/floors.py``) and ``/gc/`` the
    garbage collector's figures."""
    if scope["type"] == "http" and scope["path"] == "/floor/asgi/":
        return await asgi_floor(scope, receive, send)
    if scope["type"] == "http" and scope["path"] in ("/gc/", "/gc/types/"):
        stats: dict = dict(GC_STATS, objects=len(gc.get_objects()), frozen=gc.get_freeze_count())  # type: ignore[type-arg]
        if scope["path"] == "/gc/types/":
            counts = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
            stats["types"] = dict(counts.most_common(80))
        body = json.dumps(stats).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return None
    return await django_application(scope, receive, send)

# BENCH_GC=freeze: move everything loaded at startup (Django, DRF, botocore's service models…) out of
# the garbage collector's reach, so its full collections only walk objects created since.
if os.environ.get("BENCH_GC") in ("freeze", "tune"):
    gc.freeze()
if os.environ.get("BENCH_GC") == "tune":
    gc.set_threshold(50_000, 20, 20)
