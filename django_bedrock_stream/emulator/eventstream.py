"""Encoder (and a small decoder) for ``application/vnd.amazon.eventstream``.

Message layout (all integers big-endian)::

    uint32 total_length      whole message, prelude and trailing CRC included
    uint32 headers_length
    uint32 prelude_crc       CRC32 of the 8 bytes above
    headers                  repeated: uint8 name_len, name, uint8 type, value
    payload
    uint32 message_crc       CRC32 of everything before it

This module is on the emulator's hot path: the header block of every event type is encoded once
and cached, and a message is framed with two ``zlib.crc32`` calls and one concatenation.
No Django imports here (the emulator runs standalone).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import struct
import uuid as _uuid
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "HeaderValue",
    "decode_message",
    "encode_chunk",
    "encode_event",
    "encode_exception",
    "encode_headers",
    "encode_message",
    "frame",
    "split_messages",
]

_crc32 = zlib.crc32
_pack_prelude = struct.Struct(">II").pack
_pack_u32 = struct.Struct(">I").pack
_unpack_prelude = struct.Struct(">III").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from

# Header value types of the AWS event-stream format.
TYPE_BOOL_TRUE = 0
TYPE_BOOL_FALSE = 1
TYPE_BYTE = 2
TYPE_SHORT = 3
TYPE_INTEGER = 4
TYPE_LONG = 5
TYPE_BYTE_ARRAY = 6
TYPE_STRING = 7
TYPE_TIMESTAMP = 8
TYPE_UUID = 9

HeaderValue = str | bytes | bool | int | _dt.datetime | _uuid.UUID


class Int8(int):
    """Force an int header to be encoded as a byte (type 2)."""


class Int16(int):
    """Force an int header to be encoded as a short (type 3)."""


class Int64(int):
    """Force an int header to be encoded as a long (type 5)."""


def _encode_header(name: str, value: Any) -> bytes:
    n = name.encode("utf-8")
    if len(n) > 255:
        raise ValueError(f"header name too long: {name!r}")
    head = bytes((len(n),)) + n
    if isinstance(value, bool):
        return head + bytes((TYPE_BOOL_TRUE if value else TYPE_BOOL_FALSE,))
    if isinstance(value, Int8):
        return head + struct.pack(">Bb", TYPE_BYTE, value)
    if isinstance(value, Int16):
        return head + struct.pack(">Bh", TYPE_SHORT, value)
    if isinstance(value, Int64):
        return head + struct.pack(">Bq", TYPE_LONG, value)
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return head + struct.pack(">Bi", TYPE_INTEGER, value)
        return head + struct.pack(">Bq", TYPE_LONG, value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        v = bytes(value)
        return head + struct.pack(">BH", TYPE_BYTE_ARRAY, len(v)) + v
    if isinstance(value, str):
        v = value.encode("utf-8")
        if len(v) > 0xFFFF:
            raise ValueError(f"header value too long for {name!r}")
        return head + struct.pack(">BH", TYPE_STRING, len(v)) + v
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        millis = int(value.timestamp() * 1000)
        return head + struct.pack(">Bq", TYPE_TIMESTAMP, millis)
    if isinstance(value, _uuid.UUID):
        return head + bytes((TYPE_UUID,)) + value.bytes
    raise TypeError(f"unsupported header value type for {name!r}: {type(value).__name__}")


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """Encode a header mapping (order preserved). ``str`` values become type 7 (string)."""
    return b"".join(_encode_header(k, v) for k, v in headers.items())


def frame(header_bytes: bytes, payload: bytes) -> bytes:
    """Frame already-encoded header bytes and a payload into one message."""
    hlen = len(header_bytes)
    prelude = _pack_prelude(16 + hlen + len(payload), hlen)
    head = prelude + _pack_u32(_crc32(prelude)) + header_bytes
    return head + payload + _pack_u32(_crc32(payload, _crc32(head)))


def encode_message(headers: Mapping[str, HeaderValue] | bytes, payload: bytes = b"") -> bytes:
    """Encode one message. ``headers`` is a mapping, or header bytes from :func:`encode_headers`."""
    hb = headers if isinstance(headers, (bytes, bytearray)) else encode_headers(headers)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return frame(bytes(hb), bytes(payload))


_EVENT_HEADERS: dict[str, bytes] = {}
_EXC_HEADERS: dict[str, bytes] = {}


def _event_headers(event_type: str) -> bytes:
    hb = _EVENT_HEADERS.get(event_type)
    if hb is None:
        hb = encode_headers(
            {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
        )
        _EVENT_HEADERS[event_type] = hb
    return hb


def _exception_headers(exception_type: str) -> bytes:
    hb = _EXC_HEADERS.get(exception_type)
    if hb is None:
        hb = encode_headers(
            {
                ":exception-type": exception_type,
                ":content-type": "application/json",
                ":message-type": "exception",
            }
        )
        _EXC_HEADERS[exception_type] = hb
    return hb


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_event(event_type: str, payload: bytes | str | Mapping[str, Any]) -> bytes:
    """An ``event`` message (``:event-type``, ``:content-type: application/json``, ``:message-type: event``).

    ``payload`` is raw bytes/str, or a mapping that is JSON-encoded compactly.
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    elif not isinstance(payload, (bytes, bytearray)):
        payload = _json_bytes(payload)
    return frame(_event_headers(event_type), bytes(payload))


def encode_exception(exception_type: str, message: str | bytes | Mapping[str, Any] = "") -> bytes:
    """An ``exception`` message with ``:exception-type`` (e.g. ``modelStreamErrorException``).

    ``message`` is the error text (payload ``{"message": ...}``), or bytes / a mapping used as the payload.
    """
    if isinstance(message, str):
        payload = _json_bytes({"message": message})
    elif isinstance(message, (bytes, bytearray)):
        payload = bytes(message)
    else:
        payload = _json_bytes(message)
    return frame(_exception_headers(exception_type), payload)


_CHUNK_HEADERS = _event_headers("chunk")
_b64 = base64.b64encode


def encode_chunk(model_json: bytes, padding: bytes = b"") -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event: ``{"bytes": b64(model_json), "p": padding}``."""
    if padding:
        payload = b'{"bytes":"' + _b64(model_json) + b'","p":"' + padding + b'"}'
    else:
        payload = b'{"bytes":"' + _b64(model_json) + b'"}'
    return frame(_CHUNK_HEADERS, payload)


# ----------------------------------------------------------------------------------------------
# Decoding helpers (replay splitting, tests). botocore's EventStreamBuffer is the reference decoder.


def split_messages(data: bytes) -> Iterator[bytes]:
    """Yield each whole message of ``data`` using the prelude lengths (no CRC checks).

    A trailing partial message is yielded as is.
    """
    mv = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 12:
            yield bytes(mv[pos:])
            return
        (total,) = _unpack_u32(mv, pos)
        if total < 16:
            yield bytes(mv[pos:])
            return
        yield bytes(mv[pos : pos + total])
        pos += total


def decode_message(msg: bytes) -> tuple[dict[str, Any], bytes]:
    """Decode one message into ``(headers, payload)``; raises ``ValueError`` on a bad CRC or length."""
    if len(msg) < 16:
        raise ValueError("message shorter than 16 bytes")
    total, hlen, pcrc = _unpack_prelude(msg, 0)
    if total != len(msg):
        raise ValueError(f"length mismatch: prelude says {total}, got {len(msg)}")
    if _crc32(msg[:8]) != pcrc:
        raise ValueError("prelude CRC mismatch")
    if _crc32(msg[:-4]) != _unpack_u32(msg, total - 4)[0]:
        raise ValueError("message CRC mismatch")
    headers: dict[str, Any] = {}
    pos, hend = 12, 12 + hlen
    while pos < hend:
        nlen = msg[pos]
        name = msg[pos + 1 : pos + 1 + nlen].decode("utf-8")
        pos += 1 + nlen
        t = msg[pos]
        pos += 1
        if t == TYPE_BOOL_TRUE:
            value: Any = True
        elif t == TYPE_BOOL_FALSE:
            value = False
        elif t == TYPE_BYTE:
            value = struct.unpack_from(">b", msg, pos)[0]
            pos += 1
        elif t == TYPE_SHORT:
            value = struct.unpack_from(">h", msg, pos)[0]
            pos += 2
        elif t == TYPE_INTEGER:
            value = struct.unpack_from(">i", msg, pos)[0]
            pos += 4
        elif t in (TYPE_LONG, TYPE_TIMESTAMP):
            value = struct.unpack_from(">q", msg, pos)[0]
            pos += 8
        elif t in (TYPE_BYTE_ARRAY, TYPE_STRING):
            (vlen,) = struct.unpack_from(">H", msg, pos)
            raw = msg[pos + 2 : pos + 2 + vlen]
            value = raw.decode("utf-8") if t == TYPE_STRING else bytes(raw)
            pos += 2 + vlen
        elif t == TYPE_UUID:
            value = _uuid.UUID(bytes=bytes(msg[pos : pos + 16]))
            pos += 16
        else:
            raise ValueError(f"unknown header type {t}")
        headers[name] = value
    return headers, bytes(msg[hend : total - 4])


def corrupt_crc(msg: bytes) -> bytes:
    """Return ``msg`` with one bit of its trailing message CRC flipped."""
    return msg[:-1] + bytes((msg[-1] ^ 0x01,))
