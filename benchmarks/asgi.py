import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()

# BENCH_GC=freeze: move everything loaded at startup (Django, DRF, botocore's service models…) out of
# the garbage collector's reach, so its full collections only walk objects created since.
if os.environ.get("BENCH_GC") in ("freeze", "tune"):
    gc.freeze()
if os.environ.get("BENCH_GC") == "tune":
    gc.set_threshold(50_000, 20, 20)
