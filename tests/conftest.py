pytest_plugins = ["django_bedrock_stream.testing"]
