from django.contrib import admin

from .models import Completion


@admin.register(Completion)
class CompletionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "model_id", "status", "user", "input_tokens", "output_tokens", "stop_reason")
    list_filter = ("status", "model_id", "family", "created_at")
    search_fields = ("text", "model_id", "error")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Completion._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
