"""The RPC tutorial's Python programs (examples/rpc), run as subprocesses: the classic callback queue
and direct reply-to (DIRECT_REPLY_TO=1), several clients at once against one server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ThreadBroker, wait_for

RPC = Path(__file__).resolve().parents[2] / "examples" / "rpc"


@pytest.mark.parametrize("direct", [False, True], ids=["callback-queue", "direct-reply-to"])
def test_rpc_tutorial(broker: ThreadBroker, direct: bool) -> None:
    env = {**os.environ, "AMQP_URL": broker.url}
    if direct:
        env["DIRECT_REPLY_TO"] = "1"
    server = subprocess.Popen([sys.executable, "-u", str(RPC / "rpc_server.py")], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: broker.call(lambda: (q := broker.app.broker.vhosts["/"].queues.get("rpc_queue")) is not None
                                     and len(q.consumers) == 1), timeout=15)  # fmt: skip
        clients = [
            subprocess.Popen([sys.executable, str(RPC / "rpc_client.py"), str(n)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
            for n in (10, 15, 20)
        ]
        outputs = [c.communicate(timeout=60)[0] for c in clients]
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert [c.returncode for c in clients] == [0, 0, 0], outputs
    for out, expected in zip(outputs, ("fib(10)", "fib(15)", "fib(20)"), strict=True):
        assert f" [x] Requesting {expected}" in out
    assert [out.strip().splitlines()[-1] for out in outputs] == [" [.] Got 55", " [.] Got 610", " [.] Got 6765"]
    if direct:  # no reply queue was ever declared
        assert broker.call(lambda: sorted(broker.app.broker.vhosts["/"].queues)) == ["rpc_queue"]
