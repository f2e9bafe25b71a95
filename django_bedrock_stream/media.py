"""Images and documents sent to a model: what their bytes are, checked by content.

A client's word about a file (``mediaType``, a data URL's type, a file name) is only a claim: the
bytes are read (magic bytes, a ZIP's folders, UTF-8 text) and a file whose content is not what it
claims is refused before anything reaches Bedrock. :class:`Attachment` is a checked file; its
:meth:`~Attachment.metadata` (name, media type, size, sha256, never the bytes) is what gets stored.

The formats are Bedrock's (the Converse API's ``ImageFormat`` and ``DocumentFormat``), and so are the
default limits (``Message`` in the Bedrock API reference): up to 20 images of at most 3.75 MB and
8000 x 8000 px, up to 5 documents of at most 4.5 MB.

No Django imports here: the built-in emulator uses the same checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DOCUMENT_FORMATS",
    "IMAGE_FORMATS",
    "MEDIA_TYPES",
    "Attachment",
    "FileRefused",
    "decode_base64",
    "describe",
    "document_matches",
    "image_format",
    "image_size",
    "read_file",
]

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
DOCUMENT_FORMATS = ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md")
#: Bedrock's limits, the defaults of the ``MAX_IMAGES`` … ``MAX_DOCUMENT_BYTES`` settings.
MAX_IMAGES = 20
MAX_IMAGE_BYTES = 3_932_160  # 3.75 MB
MAX_IMAGE_PIXELS = 8000
MAX_DOCUMENTS = 5
MAX_DOCUMENT_BYTES = 4_718_592  # 4.5 MB

#: The media types accepted, and the Bedrock format each one claims.
MEDIA_TYPES: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
}
#: The canonical media type of each format.
FORMAT_MEDIA_TYPES: dict[str, str] = {}
for _media_type, _fmt in MEDIA_TYPES.items():
    FORMAT_MEDIA_TYPES.setdefault(_fmt, _media_type)
TEXT_FORMATS = ("csv", "html", "txt", "md")


# -- what the bytes are ---------------------------------------------------------------------------


def image_format(data: bytes) -> str | None:
    """``png``, ``jpeg``, ``gif`` or ``webp`` from the magic bytes, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the image header, or ``None`` when the header is not readable."""
    kind = image_format(data)
    try:
        if kind == "png":
            return struct.unpack(">II", data[16:24])
        if kind == "gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "jpeg":
            return _jpeg_size(data)
        if kind == "webp":
            return _webp_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Word 97 / Excel 97 compound file
_ZIP = b"PK\x03\x04"


#: An Office file has a few dozen entries; an archive with far more is not one (and costs CPU to list).
MAX_ZIP_ENTRIES = 2000
_EOCD = b"PK\x05\x06"


def _zip_entry_count(data: bytes) -> int | None:
    """The entry count from the end-of-central-directory record (read without parsing the archive)."""
    at = data.rfind(_EOCD, max(0, len(data) - 65_557))  # the record, then at most a 64 KiB comment
    if at < 0 or at + 22 > len(data):
        return None
    return int.from_bytes(data[at + 10 : at + 12], "little")


def _zip_folders(data: bytes) -> set[str]:
    """The top-level folders of a ZIP archive (an Office Open XML file has ``word/`` or ``xl/``); none for
    anything that is not a small, readable archive (a crafted one must be a 400, never a 500)."""
    count = _zip_entry_count(data)
    if count is None or count > MAX_ZIP_ENTRIES:
        return set()
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except Exception:  # noqa: BLE001 - zipfile raises BadZipFile, ValueError, EOFError, NotImplementedError…
        return set()
    return {name.split("/", 1)[0] + "/" for name in names if "/" in name}


def _is_text(data: bytes) -> bool:
    if b"\x00" in data or image_format(data) or data.startswith((b"%PDF-", _ZIP, _OLE2)):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def document_matches(fmt: str, data: bytes) -> bool:
    """Whether ``data`` can be a document of format ``fmt`` (by its magic bytes / its text)."""
    if fmt == "pdf":
        return data.startswith(b"%PDF-")
    if fmt in ("docx", "xlsx"):
        return data.startswith(_ZIP) and ("word/" if fmt == "docx" else "xl/") in _zip_folders(data)
    if fmt in ("doc", "xls"):
        return data.startswith(_OLE2)
    return _is_text(data)  # csv, html, txt, md


def describe(data: bytes) -> str:
    """What the bytes look like, for an error message: ``a PNG image``, ``a PDF``, ``text``…"""
    image = image_format(data)
    if image:
        return f"a {image.upper()} image"
    if data.startswith(b"%PDF-"):
        return "a PDF"
    if data.startswith(_ZIP):
        folders = _zip_folders(data)
        return "a Word document" if "word/" in folders else "an Excel workbook" if "xl/" in folders else "a ZIP archive"
    if data.startswith(_OLE2):
        return "an Office 97 file"
    return "text" if _is_text(data) else "binary data of an unknown kind"


# -- a checked file -----------------------------------------------------------------------------------


class FileRefused(ValueError):
    """A file that cannot be sent. ``code``: ``unsupported_media`` (a type Bedrock does not take, or
    content that is not what it claims), ``file_too_large`` or ``invalid_file`` (not base64, empty)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Attachment:
    """A file checked by content: ``kind`` (``image`` or ``document``), Bedrock ``format``, its
    ``media_type``, the client's file ``name`` (may be ``None``) and the decoded ``data``.

    Build one with :func:`read_file` (from a request) or :meth:`from_bytes` (server-side files, e.g.
    in a ``get_messages`` override)."""

    kind: str
    format: str
    media_type: str
    data: bytes = field(repr=False)
    name: str | None = None
    sha256: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def base64(self) -> str:
        """The data as base64 text, for the JSON bodies of invoke families."""
        return base64.b64encode(self.data).decode("ascii")

    def metadata(self) -> dict[str, Any]:
        """What is stored about the file (``Completion.parts["attachments"]``): never its bytes."""
        return {"name": self.name, "media_type": self.media_type, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        media_type: str,
        name: str | None = None,
        *,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_document_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> Attachment:
        """Check ``data`` against its claimed ``media_type``; raise :class:`FileRefused`."""
        fmt = _format_of(media_type)
        kind = "image" if fmt in IMAGE_FORMATS else "document"
        limit = max_image_bytes if kind == "image" else max_document_bytes
        _check_size(len(data), limit, kind)
        _check_content(data, fmt, media_type)
        return cls(kind, fmt, FORMAT_MEDIA_TYPES[fmt], data, name)


def claimed_media_type(source: str, media_type: str | None) -> str:
    """The type a file part claims: its data URL's, else its ``mediaType``. One rule for reading a
    file (:func:`read_file`) and for counting files before any is read (:func:`claimed_kind`), so a
    file cannot be counted as a document and then read as an image."""
    if source.startswith("data:"):
        return source[5:].partition(",")[0].split(";", 1)[0] or media_type or ""
    return media_type or ""


def claimed_kind(source: Any, media_type: Any) -> str:
    """``"image"`` or ``"document"``: what :func:`read_file` will read a file part as, told from its
    claim alone (``MAX_IMAGES`` and ``MAX_DOCUMENTS`` are checked before anything is decoded); a type
    Bedrock does not take counts as a document, and is refused when the part is read."""
    if not isinstance(media_type, str):
        media_type = None
    claimed = claimed_media_type(source if isinstance(source, str) else "", media_type)
    essence = claimed.split(";", 1)[0].strip().lower()
    return "image" if MEDIA_TYPES.get(essence) in IMAGE_FORMATS else "document"


def _format_of(media_type: str) -> str:
    essence = media_type.split(";", 1)[0].strip().lower()
    fmt = MEDIA_TYPES.get(essence)
    if fmt is None:
        accepted = ", ".join(sorted({t for t in MEDIA_TYPES if t not in ("image/jpg", "text/x-markdown")}))
        raise FileRefused(f"Files of type {essence or '(none)'!r} are not supported; send one of: {accepted}.",
                          "unsupported_media")
    return fmt


def _check_size(size: int, limit: int, kind: str) -> None:
    if size > limit:
        raise FileRefused(f"The {kind} is {size} bytes; the limit is {limit} bytes.", "file_too_large")
    if size == 0:
        raise FileRefused(f"The {kind} is empty.", "invalid_file")


def _check_content(data: bytes, fmt: str, media_type: str) -> None:
    if fmt in IMAGE_FORMATS:
        if image_format(data) != fmt:
            raise FileRefused(f"The file says it is {media_type} but its content is {describe(data)}.",
                              "unsupported_media")
        size = image_size(data)
        if size is not None and max(size) > MAX_IMAGE_PIXELS:
            raise FileRefused(
                f"The image is {size[0]} x {size[1]} pixels; Bedrock takes at most {MAX_IMAGE_PIXELS} a side.",
                "unsupported_media",
            )
    elif not document_matches(fmt, data):
        raise FileRefused(f"The file says it is {media_type} but its content is {describe(data)}.",
                          "unsupported_media")


def decode_base64(text: str) -> bytes | None:
    """Strict base64 (no whitespace, correct padding) decoded at C speed, or ``None``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def read_file(
    url: str,
    media_type: str | None,
    name: str | None,
    *,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Attachment:
    """An AI SDK ``file`` part's content: ``url`` is a data URL (``data:<type>;base64,<data>``, as
    ``useChat`` sends) or plain base64 with ``media_type``. The type must be one Bedrock takes, the
    size within the limit (checked before decoding), and the bytes what the type says.

    Raises :class:`FileRefused`. Remote URLs are refused: the server never fetches what a client names.
    """
    claimed = claimed_media_type(url, media_type)
    if url.startswith("data:"):
        header, comma, payload = url[5:].partition(",")
        params = header.split(";")
        if not comma or "base64" not in (p.strip().lower() for p in params[1:]):
            raise FileRefused("A data URL must be base64: data:<media type>;base64,<data>.", "invalid_file")
        if media_type and params[0] and _format_of(media_type) != _format_of(params[0]):
            raise FileRefused(
                f"The part's mediaType ({media_type}) and its data URL's ({params[0]}) disagree.", "unsupported_media"
            )
    elif "://" in url[:16]:
        raise FileRefused("Files must be sent as data URLs or base64; URLs are not fetched.", "unsupported_media")
    else:
        payload = url
    fmt = _format_of(claimed)
    kind = "image" if fmt in IMAGE_FORMATS else "document"
    limit = max_image_bytes if kind == "image" else max_document_bytes
    _check_size(len(payload) // 4 * 3 - payload[-2:].count("="), limit, kind)  # before decoding anything
    data = decode_base64(payload)
    if data is None:
        raise FileRefused("The file's data is not valid base64.", "invalid_file")
    _check_size(len(data), limit, kind)
    _check_content(data, fmt, claimed)
    return Attachment(kind, fmt, FORMAT_MEDIA_TYPES[fmt], data, name)
