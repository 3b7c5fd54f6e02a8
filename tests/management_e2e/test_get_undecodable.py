"""``POST /api/queues/{vhost}/{name}/get`` on a message whose properties pamqp cannot decode (issue
11, item 7: it showed ``"properties": {}``). The message is published with hand-made frames."""

from __future__ import annotations

import struct

from pamqp import commands as C
from pamqp import frame as pframe

from tests.e2e.raw import RawClient

from .conftest import Live


def test_get_shows_what_it_can_decode(live: Live) -> None:
    conn = live.connect()
    conn.channel().queue_declare("odd-props")
    conn.close()
    with RawClient(live.broker.port) as c:
        c.handshake()
        c.open_channel(1)
        body = b"hello"
        flags = (1 << 15) | (1 << 12) | (1 << 3)  # content_type (not UTF-8), delivery_mode, app_id
        props = struct.pack(">H", flags) + b"\x0btext/\xffplain" + b"\x01" + b"\x03app"
        header = struct.pack(">HHQ", 60, 0, len(body)) + props
        c.send_raw(
            pframe.marshal(C.Basic.Publish(exchange="", routing_key="odd-props"), 1)
            + struct.pack(">BHI", 2, 1, len(header)) + header + b"\xce"
            + struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce"
        )  # fmt: skip
        c.send(1, C.Basic.Qos(prefetch_count=1))
        c.expect(C.Basic.QosOk)  # the publish before it was taken
    status, got, _ = live.request("POST", "/api/queues/%2F/odd-props/get", {"count": 1, "ackmode": "ack_requeue_true",
                                                                               "encoding": "auto"})  # fmt: skip
    assert status == 200 and len(got) == 1, got
    assert got[0]["payload"] == "hello"
    assert got[0]["properties"] == {"content_type": "text/\ufffdplain", "delivery_mode": 1, "app_id": "app"}
