import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("django_bedrock_stream", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="SessionCompletion",
            fields=[
                (
                    "completion",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="example_session",
                        serialize=False,
                        to="django_bedrock_stream.completion",
                    ),
                ),
                ("session_key", models.CharField(db_index=True, max_length=40)),
            ],
        ),
    ]
