from django.apps import AppConfig


class BedrockStreamConfig(AppConfig):
    name = "django_bedrock_stream"
    label = "django_bedrock_stream"
    verbose_name = "Bedrock streams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers, signals

        signals.stream_started.connect(receivers.create_completion, dispatch_uid="bedrock_stream_create")
        signals.stream_finished.connect(receivers.finish_completion, dispatch_uid="bedrock_stream_finish")
        checks.register()
