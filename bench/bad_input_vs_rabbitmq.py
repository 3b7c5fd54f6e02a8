"""Replay the bad-input cases of tests/e2e/bad_input.py against any AMQP broker and print its replies.

    python bench/bad_input_vs_rabbitmq.py --port 5672     # e.g. a RabbitMQ started with bench/brokers.py

Each line: case name, then the close the broker sent (code, text, class.method) or what happened
instead, and whether it matches what Leveret answers (as asserted in tests/e2e/test_bad_input.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.bad_input import CASES  # noqa: E402
from tests.e2e.raw import RawClient  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    same = 0
    for case in CASES:
        try:
            with RawClient(a.port, timeout=5) as c:
                c.handshake()
                c.open_channel(1)
                case.send(c)
                _, f = c.recv(timeout=5)
                got = f"{f.reply_code} {f.reply_text!r} {f.class_id}.{f.method_id}" if hasattr(f, "reply_code") else repr(f)
                match = (getattr(f, "reply_code", None), getattr(f, "reply_text", None)) == (case.code, case.text)
        except (EOFError, ConnectionResetError, TimeoutError) as exc:
            got, match = type(exc).__name__, False
        same += match
        print(f"{'=' if match else '≠'} {case.name:45s} {got}", flush=True)
    print(f"{same}/{len(CASES)} replies identical to Leveret's")


if __name__ == "__main__":
    main()
