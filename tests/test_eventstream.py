"""The emulator's eventstream encoder, checked against botocore's decoder."""

import datetime
import json
import uuid
import zlib

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from django_bedrock_stream.emulator import (
    encode_event,
    encode_exception,
    encode_message,
)
from django_bedrock_stream.emulator.eventstream import (
    Int8,
    Int16,
    Int64,
    corrupt_crc,
    decode_message,
    encode_chunk,
    split_messages,
)


def _decode_all(data: bytes):
    buf = EventStreamBuffer()
    buf.add_data(data)
    return list(buf)


def test_round_trip_through_botocore():
    msg = encode_message({":event-type": "chunk", ":message-type": "event"}, b'{"a":1}')
    [decoded] = _decode_all(msg)
    assert decoded.headers == {":event-type": "chunk", ":message-type": "event"}
    assert decoded.payload == b'{"a":1}'
    assert decoded.prelude.total_length == len(msg)
    assert decoded.prelude.headers_length == len(msg) - 16 - len(b'{"a":1}')


def test_prelude_and_message_crc_layout():
    msg = encode_message({"x": "y"}, b"payload")
    total, hlen, pcrc = int.from_bytes(msg[0:4], "big"), int.from_bytes(msg[4:8], "big"), int.from_bytes(msg[8:12], "big")
    assert total == len(msg)
    assert hlen == 1 + 1 + 1 + 2 + 1  # name_len, "x", type, value_len, "y"
    assert pcrc == zlib.crc32(msg[:8])
    assert int.from_bytes(msg[-4:], "big") == zlib.crc32(msg[:-4])
    assert msg[12 + hlen : -4] == b"payload"


def test_header_types_round_trip():
    ts = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {
        "t": True,
        "f": False,
        "b": Int8(-5),
        "s": Int16(1234),
        "i": 123456,
        "l": Int64(2**40),
        "big": 2**40,
        "bytes": b"\x00\x01\x02",
        "str": "héllo",
        "ts": ts,
        "uuid": u,
    }
    msg = encode_message(headers, b"")
    [decoded] = _decode_all(msg)
    h = decoded.headers
    assert h["t"] is True and h["f"] is False
    assert h["b"] == -5 and h["s"] == 1234 and h["i"] == 123456
    assert h["l"] == 2**40 and h["big"] == 2**40
    assert h["bytes"] == b"\x00\x01\x02"
    assert h["str"] == "héllo"
    assert h["ts"] == int(ts.timestamp() * 1000)  # botocore returns epoch millis
    assert h["uuid"] == u.bytes
    # and our own decoder agrees
    mine, payload = decode_message(msg)
    assert mine["str"] == "héllo" and mine["i"] == 123456 and payload == b""


def test_encode_event_headers_and_json_payload():
    [m] = _decode_all(encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}))
    assert m.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(m.payload) == {"contentBlockIndex": 0, "delta": {"text": "hi"}}


def test_encode_exception():
    [m] = _decode_all(encode_exception("throttlingException", "slow down"))
    assert m.headers[":message-type"] == "exception"
    assert m.headers[":exception-type"] == "throttlingException"
    assert json.loads(m.payload) == {"message": "slow down"}


def test_encode_chunk_base64_and_padding():
    import base64

    [m] = _decode_all(encode_chunk(b'{"completion":"x"}', b"abcdef"))
    body = json.loads(m.payload)
    assert base64.b64decode(body["bytes"]) == b'{"completion":"x"}'
    assert body["p"] == "abcdef"


def test_many_messages_and_split():
    msgs = [encode_event("chunk", {"i": i}) for i in range(100)]
    data = b"".join(msgs)
    assert list(split_messages(data)) == msgs
    decoded = _decode_all(data)
    assert [json.loads(m.payload)["i"] for m in decoded] == list(range(100))


def test_corrupt_crc_is_rejected_by_botocore():
    bad = corrupt_crc(encode_event("chunk", {"a": 1}))
    with pytest.raises(ChecksumMismatch):
        _decode_all(bad)
    with pytest.raises(ValueError):
        decode_message(bad)


def test_encoder_is_fast():
    import time

    payload = b'{"bytes":"eyJ0ZXh0IjoiaGkifQ==","p":"abcdefghij"}'
    t = time.perf_counter()
    for _ in range(20000):
        encode_event("chunk", payload)
    assert time.perf_counter() - t < 1.0  # typically ~30 ms
