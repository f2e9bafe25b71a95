"""The ASGI application the reliability tests serve with a real uvicorn (settings: ``tests.settings``)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

application = get_asgi_application()
