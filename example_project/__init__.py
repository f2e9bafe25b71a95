"""The example site for django-bedrock-stream: a chat page, a history page and the admin."""
