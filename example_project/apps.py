from django.apps import AppConfig


class ExampleConfig(AppConfig):
    name = "example_project"
    verbose_name = "Example site"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_bedrock_stream.signals import stream_started

        from . import views

        # Connected after django_bedrock_stream's own receiver (INSTALLED_APPS order), so the
        # Completion row is already saved when we remember its id.
        stream_started.connect(views.remember_completion, dispatch_uid="example_remember_completion")
