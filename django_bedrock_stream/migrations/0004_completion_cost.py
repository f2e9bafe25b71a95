from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_bedrock_stream', '0003_completion_parts_and_cache_usage'),
    ]

    operations = [
        migrations.AddField(
            model_name='completion',
            name='cost',
            field=models.DecimalField(blank=True, decimal_places=10, max_digits=20, null=True),
        ),
    ]
