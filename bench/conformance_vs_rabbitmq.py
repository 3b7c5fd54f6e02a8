"""Run Leveret's wire-behaviour tests against a real RabbitMQ, to show they encode RabbitMQ's behaviour.

    python bench/conformance_vs_rabbitmq.py              # the default selection, against RabbitMQ
    python bench/conformance_vs_rabbitmq.py tests/e2e/test_priority.py -k requeue

The tests in the selection talk to the broker only over AMQP (pika), through the ``connect`` /
``conn`` / ``ch`` fixtures of tests/e2e/conftest.py. This script starts a private RabbitMQ node
(bench/brokers.py: own ports, own data dir, stopped by PID), points those fixtures at it with
LEVERET_E2E_AMQP_PORT, empties it before every test (LEVERET_E2E_RESET: a ``rabbitmqctl eval`` that
deletes every queue and every exchange but the default ones), names a rabbitmqctl for the node in
LEVERET_E2E_RABBITMQCTL (tests that set policies use it), and runs pytest. A test that passes
here and against Leveret (the normal suite) states something both brokers do.

Exit status: pytest's (0: every selected test passed against RabbitMQ), 2 if RabbitMQ is not installed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from brokers import Epmd, RabbitMQBroker, find_rabbitmq_server  # noqa: E402

DEFAULT_SELECTION = [
    "tests/e2e/test_priority.py",
    "tests/e2e/test_alternate_exchange.py",
    "tests/e2e/test_transactions.py",
    "tests/e2e/test_quorum.py",
    "tests/e2e/test_single_active_consumer.py",
    "tests/e2e/test_vhosts.py::test_the_unknown_vhost_text_is_rabbitmqs",
    "tests/e2e/test_sender_selected.py",
    "tests/e2e/test_basic.py::test_user_id_must_be_the_authenticated_user",
    "tests/e2e/test_queues.py::test_redeclare_with_different_durable_is_406_with_rabbitmq_text",
    "tests/e2e/test_queues.py::test_delete_if_empty",
    "tests/e2e/test_consumer_priorities.py",
    "tests/e2e/test_direct_reply_to.py",
    "tests/e2e/test_update_secret.py::test_update_secret_is_answered_and_the_connection_goes_on",
    "tests/e2e/test_policies.py",
]

# Deletes every queue, and every exchange but the default and amq.* ones (rabbit_amqqueue and
# rabbit_exchange of RabbitMQ 3.10).
EMPTY_NODE = (
    '[rabbit_amqqueue:delete(Q, false, false, <<"conformance">>) || Q <- rabbit_amqqueue:list()],'
    ' [rabbit_exchange:delete(N, false, <<"conformance">>)'
    "  || N <- [element(2, X) || X <- rabbit_exchange:list()],"
    "     element(4, N) =/= <<>>,"
    '     binary:part(element(4, N), 0, min(4, byte_size(element(4, N)))) =/= <<"amq.">>],'
    " ok."
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pytest_args", nargs="*", help=f"tests and pytest options (default: {' '.join(DEFAULT_SELECTION)})")
    ap.add_argument("--rabbitmq-server", help="path of the rabbitmq-server script (default: found on PATH)")
    args, extra = ap.parse_known_args()  # pytest's own options pass through
    args.pytest_args += extra
    script = find_rabbitmq_server(args.rabbitmq_server)
    if script is None:
        print("rabbitmq-server is not installed (apt-get install rabbitmq-server)", file=sys.stderr)
        return 2
    ctl = script.parent / "rabbitmqctl"
    with tempfile.TemporaryDirectory(prefix="leveret-conformance-") as tmp:
        work = Path(tmp)
        (work / "epmd").mkdir()
        (work / "rabbitmq").mkdir()
        epmd = Epmd(work / "epmd")
        epmd.start()
        node = RabbitMQBroker(work / "rabbitmq", script, epmd)
        try:
            node.start()
            print(f"RabbitMQ {node.version} on 127.0.0.1:{node.port} (pid {node.pid})", flush=True)
            reset = work / "empty-node.sh"
            exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in node.env().items())
            reset.write_text(
                f"#!/bin/sh\n{exports}exec {shlex.quote(str(ctl))} -q -n {shlex.quote(node.nodename)}"
                f" eval {shlex.quote(EMPTY_NODE)}\n"
            )
            reset.chmod(0o755)
            # rabbitmqctl for this node (tests that set policies: tests/e2e/test_policies.py)
            nodectl = work / "rabbitmqctl.sh"
            nodectl.write_text(
                f'#!/bin/sh\n{exports}exec {shlex.quote(str(ctl))} -n {shlex.quote(node.nodename)} "$@"\n'
            )
            nodectl.chmod(0o755)
            env = dict(
                os.environ, LEVERET_E2E_AMQP_PORT=str(node.port), LEVERET_E2E_RESET=str(reset),
                LEVERET_E2E_RABBITMQCTL=str(nodectl),
            )  # fmt: skip
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *(args.pytest_args or DEFAULT_SELECTION)]
            return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        finally:
            node.stop()
            epmd.stop()


if __name__ == "__main__":
    sys.exit(main())
