"""Message properties shown by ``POST /api/queues/{vhost}/{name}/get`` when pamqp cannot decode them
(issue 11, item 7): everything that can be read is shown, the rest sensibly, never ``{}``."""

from __future__ import annotations

import struct

from leveret.management.live import decode_properties


def _shortstr(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _table(entries: bytes) -> bytes:
    return struct.pack(">I", len(entries)) + entries


def test_text_that_is_not_utf8_is_shown_with_replacement_characters() -> None:
    flags = (1 << 15) | (1 << 12) | (1 << 3)  # content_type, delivery_mode, app_id
    raw = struct.pack(">H", flags) + _shortstr(b"text/\xffplain") + b"\x02" + _shortstr(b"app\xfe")
    assert decode_properties(raw) == {"content_type": "text/\ufffdplain", "delivery_mode": 2, "app_id": "app\ufffd"}


def test_a_header_that_cannot_be_read_keeps_the_ones_before_it_and_the_properties_after() -> None:
    flags = (1 << 13) | (1 << 11) | (1 << 9)  # headers, priority, reply_to
    entries = _shortstr(b"good") + b"I" + struct.pack(">i", 7) + _shortstr(b"k\xff") + b"t\x01"
    entries += _shortstr(b"odd") + b"Q" + b"zzzz"
    raw = struct.pack(">H", flags) + _table(entries) + b"\x05" + _shortstr(b"replies")
    assert decode_properties(raw) == {
        "headers": {"good": 7, "k\ufffd": True, "odd": "<undecodable: 5 bytes>"},
        "priority": 5,
        "reply_to": "replies",
    }


def test_properties_cut_short_say_so() -> None:
    raw = struct.pack(">H", 1 << 15) + b"\x09ab\xff"
    assert decode_properties(raw) == {"undecodable": "the properties end early"}


def test_well_formed_properties_decode_as_before() -> None:
    flags = (1 << 15) | (1 << 13)
    raw = struct.pack(">H", flags) + _shortstr(b"application/json") + _table(_shortstr(b"n") + b"I" + b"\x00\x00\x00\x01")
    assert decode_properties(raw) == {"content_type": "application/json", "headers": {"n": 1}}
