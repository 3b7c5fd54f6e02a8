"""The broker's RSS under the half-sent publish attack (issue 11, item 2), printed as a table.

    python bench/half_sent_publish_rss.py                      # 1 and 4 attacking connections
    python bench/half_sent_publish_rss.py --connections 1 2 --seconds 20

Each run starts ``leveret server --storage memory --memory-high-watermark 300000000`` as a subprocess
(the code on PYTHONPATH: run it from a checkout with ``PYTHONPATH=src``), then N connections each open
60 channels and send, on each, basic.publish + a content header announcing 16 MiB + 16 MiB - 1 bytes of
body, never the last byte (tests/e2e/half_sent.py). Printed per run: RSS before, the peak during the
attack, at its end (clients still connected), 2 s after they closed, the bytes the clients got to
send, and how long they sent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.half_sent import attack  # noqa: E402
from tests.helpers import ProcessBroker  # noqa: E402

WATERMARK = 300_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--channels", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=15.0, help="bound on each attack")
    ap.add_argument("--watermark", type=int, default=WATERMARK)
    args = ap.parse_args()
    mb = 1e6
    print(f"watermark {args.watermark / mb:.0f} MB, {args.channels} channels x 16 MiB announced per connection")
    print(f"{'conns':>5} {'before MB':>10} {'peak MB':>8} {'end MB':>7} {'closed MB':>10} {'sent MB':>8} {'s':>5}")
    for n in args.connections:
        with tempfile.TemporaryDirectory() as d:
            extra = ["--storage", "memory", "--http-port", "off", "--memory-high-watermark", str(args.watermark)]
            b = ProcessBroker(Path(d), extra=extra).start()
            try:
                assert b.proc is not None
                r = attack(b.port, b.proc.pid, connections=n, channels=args.channels, seconds=args.seconds)
            finally:
                b.kill()
        print(
            f"{n:>5} {r.baseline / mb:>10.0f} {r.peak / mb:>8.0f} {r.end / mb:>7.0f} {r.after_close / mb:>10.0f} "
            f"{r.sent / mb:>8.0f} {r.seconds:>5.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
