from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_bedrock_stream", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="completion",
            name="usage_estimated",
            field=models.BooleanField(default=False),
        ),
    ]
