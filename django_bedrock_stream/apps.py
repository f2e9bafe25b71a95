from django.apps import AppConfig


class BedrockStreamConfig(AppConfig):
    name = "django_bedrock_stream"
    label = "django_bedrock_stream"
    verbose_name = "Bedrock streams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers

        receivers.connect()
        checks.register()
