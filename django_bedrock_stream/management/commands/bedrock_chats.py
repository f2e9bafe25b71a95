"""``manage.py bedrock_chats``: a user's chats, listed or exported as JSON.

    manage.py bedrock_chats alice                    # one line per chat: id, updated, messages, title
    manage.py bedrock_chats alice --export > a.json  # every chat with its messages (AI SDK UIMessages)
    manage.py bedrock_chats alice --export --chat ID # one chat
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count

from ...models import Chat


class Command(BaseCommand):
    help = "List a user's chats, or export them (with their messages) as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the owner's username")
        parser.add_argument("--export", action="store_true", help="JSON: the chats with their messages")
        parser.add_argument("--chat", help="only this chat id")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["username"])
        except model.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        chats = Chat.objects.filter(owner=user).annotate(message_count=Count("messages"))
        if options["chat"]:
            chats = chats.filter(pk=options["chat"])
        if options["export"]:
            exported = [
                {
                    "id": chat.id,
                    "title": chat.title,
                    "created_at": chat.created_at.isoformat(),
                    "updated_at": chat.updated_at.isoformat(),
                    "messages": [
                        {**message.as_ui_message(), "status": message.status,
                         "completion": message.completion_id, "created_at": message.created_at.isoformat()}
                        for message in chat.messages.all()
                    ],
                }
                for chat in chats.prefetch_related("messages")
            ]
            self.stdout.write(json.dumps(exported, indent=2, ensure_ascii=False))
            return
        for chat in chats:
            line = f"{chat.id}  {chat.updated_at:%Y-%m-%d %H:%M}  {chat.message_count} messages  {chat.title}"
            self.stdout.write(line)
