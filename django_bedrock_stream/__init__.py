"""Stream Amazon Bedrock model output to browsers from Django, under WSGI and ASGI."""

__version__ = "0.1.0"
