"""Images and documents in requests, checked as Bedrock checks them.

Converse (and Amazon Nova's native invoke format) carry ``image`` blocks ``{format, source: {bytes}}``
and ``document`` blocks ``{format, name, source: {bytes}}``; the bytes arrive base64 in the JSON body
(boto3 encodes them). Anthropic's Messages API carries ``{"type": "image" | "document", "source":
{"type": "base64", "media_type", "data"}}``. Bedrock refuses, with a 400 ``ValidationException``, a
format it does not know, bytes that are not what the format says (it looks at them), and anything
beyond its documented limits (``Message`` in the Bedrock API reference): up to 20 images of at most
3.75 MB and 8000 x 8000 px, up to 5 documents of at most 4.5 MB with distinct names made of
alphanumerics, single whitespace, hyphens, parentheses and square brackets (underscores are accepted
too), and a text block beside any document. The messages are Bedrock's where they are known.

No Django imports here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

# What the bytes are, and Bedrock's limits: one definition, shared with the app's request checks.
from ..media import (
    DOCUMENT_FORMATS,
    IMAGE_FORMATS,
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENTS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_IMAGES,
    decode_base64,
    document_matches,
    image_format,
    image_size,
)

__all__ = [
    "DOCUMENT_FORMATS",
    "IMAGE_FORMATS",
    "InvalidRequest",
    "anthropic_attachments",
    "converse_attachments",
    "image_format",
    "image_size",
]

ANTHROPIC_MAX_IMAGES = 100
ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

_NAME_RE = re.compile(r"[A-Za-z0-9_\-()\[\]\s]+")
_TWO_SPACES = re.compile(r"\s\s")
_BAD_NAME = (
    "The document file name can only contain alphanumeric characters, whitespace characters, hyphens, "
    "parentheses, and square brackets. The name can't contain more than one consecutive whitespace "
    "character. Check that the file name conforms to these restrictions and retry your request."
)
_MODEL_ERRORS = "The model returned the following errors: "
_CLAUDE_GENERATION = re.compile(r"anthropic\.claude-(?:opus|sonnet|haiku)-(\d+)")


class InvalidRequest(Exception):
    """Reported to the client as a 400 ValidationException with this message."""


def _summary(kind: str, fmt: str, data: bytes, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "format": fmt, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if name is not None:
        out["name"] = name
    return out


def _b64(value: Any) -> bytes | None:
    return decode_base64(value) if isinstance(value, str) else None


# -- Converse (and Nova's native format) ----------------------------------------------------------


def _enum_error(value: Any, where: str, allowed: tuple[str, ...]) -> InvalidRequest:
    return InvalidRequest(
        f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy constraint: "
        f"Member must satisfy enum value set: [{', '.join(allowed)}]"
    )


def _converse_blocks(body: dict[str, Any]) -> Iterator[tuple[int, int, str, dict[str, Any], list[Any]]]:
    """(message index, block index, role, block, the message's blocks) for every content block,
    blocks inside tool results included."""
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            continue
        content = message["content"]
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            yield i, j, str(message.get("role")), block, content
            result = block.get("toolResult")
            if isinstance(result, dict) and isinstance(result.get("content"), list):
                for inner in result["content"]:
                    if isinstance(inner, dict):
                        yield i, j, str(message.get("role")), inner, content


def _document_size_exempt(model_id: str, fmt: str) -> bool:
    """Bedrock lifts the 4.5 MB limit for PDFs on Claude 4 and later, PDF and DOCX on Nova."""
    match = _CLAUDE_GENERATION.search(model_id)
    if fmt == "pdf" and match and int(match.group(1)) >= 4:
        return True
    return fmt in ("pdf", "docx") and "amazon.nova" in model_id


def converse_attachments(body: dict[str, Any], model_id: str) -> list[dict[str, Any]]:
    """Check the images and documents of a Converse (or Nova native) body; return one summary per
    attachment (kind, format, name, bytes, sha256). Raises :class:`InvalidRequest`."""
    found: list[dict[str, Any]] = []
    names: set[str] = set()
    images = documents = 0
    for i, j, role, block, siblings in _converse_blocks(body):
        where = f"messages.{i + 1}.member.content.{j + 1}.member"
        image, document = block.get("image"), block.get("document")
        if isinstance(image, dict):
            fmt = image.get("format")
            if fmt not in IMAGE_FORMATS:
                raise _enum_error(fmt, f"{where}.image.format", IMAGE_FORMATS)
            data = _source_bytes(image, f"{where}.image")
            if role != "user":
                raise InvalidRequest("You can only include images and documents if the role is user.")
            images += 1
            if images > MAX_IMAGES:
                raise InvalidRequest(f"{_MODEL_ERRORS}messages: too many images: image_count > {MAX_IMAGES}")
            _check_image(data, fmt, f"{_MODEL_ERRORS}messages.{i}.content.{j}.image.source.base64", MAX_IMAGE_BYTES)
            found.append(_summary("image", fmt, data))
        elif isinstance(document, dict):
            fmt = document.get("format")
            if fmt is not None and fmt not in DOCUMENT_FORMATS:
                raise _enum_error(fmt, f"{where}.document.format", DOCUMENT_FORMATS)
            name = document.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 200:
                raise InvalidRequest(
                    f"1 validation error detected: Value at '{where}.document.name' failed to satisfy constraint: "
                    "Member must have length less than or equal to 200 and greater than or equal to 1"
                )
            data = _source_bytes(document, f"{where}.document")
            if role != "user":
                raise InvalidRequest("You can only include images and documents if the role is user.")
            if not _NAME_RE.fullmatch(name) or _TWO_SPACES.search(name):
                raise InvalidRequest(_BAD_NAME)
            if name in names:
                raise InvalidRequest("Messages can't contain duplicate document names.")
            names.add(name)
            documents += 1
            if documents > MAX_DOCUMENTS:
                raise InvalidRequest(f"You can't include more than {MAX_DOCUMENTS} documents in a request.")
            if len(data) > MAX_DOCUMENT_BYTES and not _document_size_exempt(model_id, fmt or ""):
                raise InvalidRequest(
                    "The maximum document size is 4.5 MB. Reduce the size of your document and retry your request."
                )
            if fmt is not None and not document_matches(fmt, data):
                raise InvalidRequest(
                    f"{_MODEL_ERRORS}messages.{i}.content.{j}.document.source.bytes: "
                    f"The document was specified as {fmt}, but its content is not a valid {fmt} file"
                )
            if not any(isinstance(b, dict) and isinstance(b.get("text"), str) for b in siblings):
                raise InvalidRequest(
                    "A message that includes a document must also include a text content block. "
                    "Add a text block to the message and retry your request."
                )
            found.append(_summary("document", fmt or "", data, name))
    return found


def _source_bytes(block: dict[str, Any], where: str) -> bytes:
    source = block.get("source")
    raw = source.get("bytes") if isinstance(source, dict) else None
    if raw is None:
        raise InvalidRequest(
            f"1 validation error detected: Value null at '{where}.source' failed to satisfy constraint: "
            "Member must not be null"
        )
    data = _b64(raw)
    if data is None:
        raise InvalidRequest(f"Invalid base64 in '{where}.source.bytes'")
    if not data:
        raise InvalidRequest(
            f"1 validation error detected: Value at '{where}.source.bytes' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1"
        )
    return data


def _check_image(data: bytes, fmt: str, where: str, max_bytes: int) -> None:
    """Anthropic's checks (Bedrock passes the model's words on): the bytes, the size, the pixels."""
    actual = image_format(data)
    if actual is None:
        raise InvalidRequest(f"{where}: Could not process image")
    if actual != fmt:
        raise InvalidRequest(
            f"{where}: The image was specified using the image/{fmt} media type, "
            f"but the image appears to be a image/{actual} image"
        )
    if len(data) > max_bytes:
        limit = (max_bytes + 2) // 3 * 4
        raise InvalidRequest(f"{where}: image exceeds 5 MB maximum: {(len(data) + 2) // 3 * 4} bytes > {limit} bytes")
    size = image_size(data)
    if size is not None and max(size) > MAX_IMAGE_PIXELS:
        raise InvalidRequest(
            f"{where}.data: At least one of the image dimensions exceed max allowed size: {MAX_IMAGE_PIXELS} pixels"
        )


# -- Anthropic Messages (invoke) --------------------------------------------------------------------


def anthropic_attachments(body: dict[str, Any], model_id: str) -> list[dict[str, Any]]:
    """Check the image and document blocks of an Anthropic Messages body (Anthropic's own messages,
    which Bedrock returns as they are). Raises :class:`InvalidRequest`."""
    found: list[dict[str, Any]] = []
    images = 0
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in ("image", "document"):
                continue
            where = f"messages.{i}.content.{j}.{kind}.source"
            source = block.get("source")
            if not isinstance(source, dict):
                raise InvalidRequest(f"{where}: Field required")
            if kind == "document" and source.get("type") == "text":
                text = source.get("data")
                if source.get("media_type") != "text/plain" or not isinstance(text, str):
                    raise InvalidRequest(f"{where}.text.media_type: Input should be 'text/plain'")
                found.append(_summary("document", "txt", text.encode("utf-8"), block.get("title")))
                continue
            if source.get("type") != "base64":
                raise InvalidRequest(
                    f"{where}: Input tag '{source.get('type')}' found using 'type' does not match any of the "
                    "expected tags: 'base64'"
                )
            media_type = source.get("media_type")
            data = _b64(source.get("data"))
            if kind == "image":
                if media_type not in ANTHROPIC_IMAGE_TYPES:
                    raise InvalidRequest(
                        f"{where}.base64.media_type: "
                        "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                    )
                if not data:
                    raise InvalidRequest(f"{where}.base64.data: Could not process image")
                images += 1
                if images > ANTHROPIC_MAX_IMAGES:
                    raise InvalidRequest(f"messages: too many images: image_count > {ANTHROPIC_MAX_IMAGES}")
                fmt = media_type.split("/", 1)[1]
                _check_image(data, fmt, f"{where}.base64", MAX_IMAGE_BYTES)
                found.append(_summary("image", fmt, data))
            else:
                if media_type != "application/pdf":
                    raise InvalidRequest(f"{where}.base64.media_type: Input should be 'application/pdf'")
                if not data or not document_matches("pdf", data):
                    raise InvalidRequest(f"{where}.base64.data: The PDF specified was not valid.")
                found.append(_summary("document", "pdf", data, block.get("title")))
    return found
